"""The GPU check (python -m emclip.benchmarks.gpu_check) as a CPU smoke run with tiny settings."""

import csv

from emclip.benchmarks import gpu_check


def test_gpu_check_runs_on_cpu(tmp_path):
    from emclip.data import write_synthetic

    write_synthetic(tmp_path / "data", "fundus", per_domain=4, image_size=96, progress=False)
    out = tmp_path / "out"
    gpu_check.main(["--device", "cpu", "--backbone", "cpu-vit", "--sizes", "64", "--train-batch", "2",
                    "--em-bases", "8", "--min-run-time", "0.01", "--data-root", str(tmp_path / "data" / "fundus"),
                    "--domain", "SynthA", "--epochs", "2", "--train-size", "64", "--output-dir", str(out),
                    "--work-dir", str(tmp_path / "work"), "--set", "network_def#em_bases=8", "num_workers=0"])
    (speed,) = list(csv.DictReader(open(out / "gpu_check_speed.csv")))
    assert speed["size"] == "64" and speed["amp"] == "False"
    for part in ("infer", "train"):
        ratio = float(speed[f"{part}_ratio"])
        assert ratio == round(float(speed[f"emclip_{part}_ms"]) / float(speed[f"encoder_{part}_ms"]), 3)
        assert speed[f"emclip_{part}_peak_mib"] == ""  # GPU memory: CUDA only
    epochs = list(csv.DictReader(open(out / "gpu_check_training.csv")))
    assert [int(row["epoch"]) for row in epochs] == [1, 2]
    # SynthA's training split (val_fraction 0.1 of 4 subjects keeps 1 for validation) at batch 2
    assert all(int(row["images"]) > 0 and float(row["images_per_s"]) > 0 for row in epochs)
    assert all(0 <= float(row["val_dice_mean"]) <= 1 for row in epochs)
    assert (tmp_path / "work" / "models" / "fundus" / "model.pt").is_file()
