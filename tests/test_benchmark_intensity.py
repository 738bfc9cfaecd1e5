"""The per-domain intensity of the labelled structures after the task's preprocessing."""

import csv

import nibabel as nib
import numpy as np
import pytest

from emclip.benchmarks import intensity


@pytest.fixture(scope="module")
def cardiac(tmp_path_factory):
    """Synthetic cardiac data plus domain Z: vendor A's subject stored 3x brighter, and with its LV
    blood pool at half the intensity."""
    from emclip.data import write_synthetic

    root = write_synthetic(tmp_path_factory.mktemp("data"), "cardiac", per_domain=1, progress=False)["cardiac"]
    with open(root / "info.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    code = next(r["code"] for r in rows if r["vendor"] == "A")
    for phase in ("ED", "ES"):
        image, label = (nib.load(root / f"{code}_sa_{phase}{end}.nii.gz") for end in ("", "_gt"))
        data = image.get_fdata()
        for name, values in (("BRIGHT", data * 3.0), ("DARKLV", np.where(label.get_fdata() == 1, data * 0.5, data))):
            nib.save(nib.Nifti1Image(values.astype(np.float32), image.affine), root / f"{name}_sa_{phase}.nii.gz")
            nib.save(label, root / f"{name}_sa_{phase}_gt.nii.gz")
    with open(root / "info.csv", "a", newline="") as f:
        f.write("BRIGHT,Z,SynthVendorZ,9,ED;ES\nDARKLV,Y,SynthVendorY,9,ED;ES\n")
    return root, code


def test_a_global_scale_is_preprocessed_away_a_darker_structure_is_not(cardiac):
    root, code = cardiac
    rows = intensity.case_intensities("cardiac", root)
    mean = {(r["case"].split("_")[0], r["case"].split("_")[-1], r["class"]): r["mean"] for r in rows}
    assert {r["class"] for r in rows} == {"background", "LV", "MYO", "RV"}
    assert all(0.0 <= r["mean"] <= 1.0 and r["pixels"] > 0 for r in rows)
    for phase in ("ED.nii.gz", "ES.nii.gz"):
        for name in ("background", "LV", "MYO", "RV"):
            # the percentile scaling removes a global factor
            assert mean["BRIGHT", phase, name] == pytest.approx(mean[code, phase, name], abs=1e-4)
        assert mean["DARKLV", phase, "LV"] < 0.8 * mean[code, phase, "LV"]


def test_domain_table_gives_mean_sd_and_ratio_to_the_first_domain():
    rows = [{"domain": d, "case": c, "class": "LV", "mean": m} for d, c, m in
            (("A", "a1", 0.4), ("A", "a2", 0.6), ("B", "b1", 0.75))]
    table = intensity.domain_table(rows).splitlines()
    assert table[2:] == ["| LV | A | 2 | 0.500 ± 0.141 | 1.00 |", "| LV | B | 1 | 0.750 | 1.50 |"]


def test_command_writes_its_files(cardiac, tmp_path):
    root, _ = cardiac
    intensity.main(["--task", "cardiac", "--dataset-dir", str(root), "--output", str(tmp_path)])
    text = (tmp_path / "intensity.md").read_text()
    assert text.startswith(f"Measured by `python -m emclip.benchmarks.intensity --task cardiac --dataset-dir {root}")
    assert "| LV | Z | 2 |" in text
    assert len((tmp_path / "intensity.csv").read_text().splitlines()) > 1


def test_set_changes_the_preprocessing(cardiac, tmp_path):
    """--set reaches the preprocessing: a standardisation onto constant landmarks makes every mean that constant."""
    root, _ = cardiac
    intensity.main(["--task", "cardiac", "--dataset-dir", str(root), "--output", str(tmp_path),
                    "--set", "preprocess#standardize#_disabled_=false", f"intensity_landmarks={[0.5] * 13}"])
    means = [float(r["mean"]) for r in csv.DictReader((tmp_path / "intensity.csv").open())]
    assert means and all(m == pytest.approx(0.5) for m in means)
    with pytest.raises(SystemExit):
        intensity.main(["--task", "cardiac", "--dataset-dir", str(root), "--output", str(tmp_path), "--set", "no_equals_sign"])
