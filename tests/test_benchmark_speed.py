import csv

import pytest
import torch

from emclip.benchmarks import speed


def _ratio_of(row, emclip, encoder):
    return pytest.approx(row[emclip] / row[encoder], abs=1e-3, rel=1e-3)


@pytest.fixture
def one_thread():
    # Two threads on cores shared with other jobs wait on each other at every op: slow and erratic.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_speed_benchmark_rows_csvs_and_plots(tmp_path, one_thread):
    results = speed.main(
        ["--backbones", "cpu-resnet", "--sizes", "64", "--min-run-time", "0", "--train-batch", "8"]
        + ["--train-batch-for", "cpu-resnet=2", "--memory-batch", "2", "--memory-steps", "2"]
        + ["--em-bases", "4", "8", "--em-grids", "4", "--skip", "--no-unet", "--output-dir", str(tmp_path)]
    )

    for part, batch in (("latency", 1), ("train", 2)):
        (row,) = results[part]
        assert (row["backbone"], row["size"], row["batch"]) == ("cpu-resnet", 64, batch)
        for layout in speed.LAYOUTS:
            assert row[f"emclip_{layout}_ms"] > 0 and row[f"encoder_{layout}_ms"] > 0
            assert row[f"ratio_{layout}"] == _ratio_of(row, f"emclip_{layout}_ms", f"encoder_{layout}_ms")
        for which in ("emclip", "encoder"):
            assert row[f"{which}_ms"] == min(row[f"{which}_{layout}_ms"] for layout in speed.LAYOUTS)
            assert row[f"{which}_ms"] == row[f"{which}_{row[f'{which}_layout']}_ms"]
        assert row["ratio"] == _ratio_of(row, "emclip_ms", "encoder_ms")
        assert row["samples"] >= 1 and row["threads"] == 1 and row["load_1m"] >= 0

    em = results["em"]
    assert sorted((row["K"], row["grid"]) for row in em) == [(4, 2), (4, 4), (8, 2), (8, 4)]
    for row in em:
        assert row["em_ms"] > 0 and row["tokens"] == row["grid"] ** 2 and row["size"] == row["grid"] * 32
        if row["grid"] == 2:  # 64 px: the benchmarked size, so the full forwards are there
            assert row["emclip_ms"] > 0 and row["emclip_no_em_ms"] > 0
            assert row["share"] == _ratio_of(row, "em_ms", "emclip_ms")
        else:
            assert "share" not in row

    (memory,) = results["memory"]
    assert memory["emclip_peak_mib"] > memory["baseline_mib"] > 0 and memory["encoder_peak_mib"] > 0
    assert memory["ratio"] == _ratio_of(memory, "emclip_peak_mib", "encoder_peak_mib")

    (onnx,) = results["onnx"]
    assert onnx["eager_ms"] == min(onnx[f"eager_{layout}_ms"] for layout in speed.LAYOUTS) > 0
    assert onnx["onnxruntime_ms"] > 0 and onnx["ratio"] == _ratio_of(onnx, "onnxruntime_ms", "eager_ms")
    assert 0 <= onnx["max_abs_diff"] <= 1e-4

    for part, rows in results.items():
        with open(tmp_path / f"speed_{part}.csv", newline="") as f:
            written = list(csv.DictReader(f))
        assert len(written) == len(rows) and {"threads", "load_1m"} <= set(written[0])
    for part in ("latency", "train", "em"):
        assert (tmp_path / f"speed_{part}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_skipped_runs_leave_a_row_with_the_reason():
    (row,) = speed.run_memory(["cpu-resnet"], [64], batch=2, steps=1, skip=["memory:cpu-resnet:64"])
    assert row["note"] == "skipped memory:cpu-resnet:64: listed in --skip"
    assert "emclip_peak_mib" not in row


def test_median_seconds_leaves_out_the_slow_first_calls(monkeypatch):
    calls = iter([1.0, 0.5, 0.1, 0.1, 0.3, 0.1])
    monkeypatch.setattr(speed, "_seconds", lambda step: next(calls))
    # Warm-up ends at the first call no faster than 0.9 x the one before (the second 0.1).
    assert speed.median_seconds(lambda: None, min_run_time=0.45) == (0.1, 3)


def test_unet_columns_for_the_cpu_presets(tmp_path, one_thread):
    results = speed.main(
        ["--backbones", "cpu-resnet", "--sizes", "64", "--min-run-time", "0", "--parts", "latency", "train", "memory"]
        + ["--train-batch-for", "cpu-resnet=2", "--memory-batch", "2", "--memory-steps", "1", "--skip"]
        + ["--output-dir", str(tmp_path)]
    )
    unet = speed.benchmark_unet()
    assert type(unet).__name__ == "UNet"
    (latency,) = results["latency"]
    assert latency["unet_params_m"] == round(sum(p.numel() for p in unet.parameters()) / 1e6, 3)
    for part in ("latency", "train"):
        (row,) = results[part]
        assert row["unet_ms"] > 0 and row["ratio_unet"] == _ratio_of(row, "emclip_ms", "unet_ms")
    (memory,) = results["memory"]
    assert memory["unet_peak_mib"] > memory["baseline_mib"]
    assert memory["ratio_unet"] == _ratio_of(memory, "emclip_peak_mib", "unet_peak_mib")
    with open(tmp_path / "speed_train.csv", newline="") as f:
        assert {"unet_ms", "ratio_unet"} <= set(next(csv.DictReader(f)))


def test_targets_and_report_only_rebuild_from_the_csvs(tmp_path):
    """The ViT ratios and the EM share are set against their targets; a CPU preset's encoder ratio is not."""
    results = {
        "latency": [{"backbone": "ViT-B-16", "size": 224, "ratio": 1.1}, {"backbone": "cpu-resnet", "size": 224, "ratio": 2.3}],
        "train": [{"backbone": "ViT-B-16", "size": 224, "ratio": 1.4}, {"backbone": "ViT-B-16", "size": 512, "note": "skipped"}],
        "em": [{"backbone": "cpu-vit", "channels": 128, "size": 224, "tokens": 196, "em_ms": 1.0, "K": k, "share": share}
               for k, share in ((64, 0.03), (16, 0.9))],
    }
    rows = speed.target_rows(results)
    assert [(r["part"], r["backbone"], r["value"], r["target"], r["met"]) for r in rows] == [
        ("latency", "ViT-B-16", 1.1, speed.TARGETS["latency"], "yes"),
        ("train", "ViT-B-16", 1.4, speed.TARGETS["train"], "no"),
        ("em", "cpu-vit", 0.03, speed.TARGETS["em_share_k64"], "yes"),
    ]
    speed.write_outputs(results, tmp_path)
    (tmp_path / "speed_targets.csv").unlink()
    again = speed.main(["--report-only", "--output-dir", str(tmp_path)])
    assert speed.target_rows(again) == rows  # numbers read back as numbers
    with open(tmp_path / "speed_targets.csv", newline="") as f:
        assert [r["met"] for r in csv.DictReader(f)] == ["yes", "no", "yes"]
    with pytest.raises(SystemExit, match="no speed_<part>.csv"):
        speed.main(["--report-only", "--output-dir", str(tmp_path / "empty")])
