"""Cardiac readers (M&Ms 4D + CSV, split-out frames), bad input, volume preprocessing and slices."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, Invertd

from emclip.data import DataError, build_datalist, expand_slices, labelled_slices, make_slice_dataset
from conftest import data_error, preprocessing

SHAPE = (20, 16, 5)  # in-plane 20 x 16 voxels of 2.5 mm, 5 slices
SPACING = (2.5, 2.5, 8.0)


def _nifti(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([*SPACING, 1.0])), path)
    return path


def _frame(labelled: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Image and label of one frame; the label has LV/MYO/RV in the ``labelled`` slices only."""
    image = np.random.default_rng(seed).uniform(0, 500, SHAPE).astype(np.float32)
    label = np.zeros(SHAPE, np.uint8)
    for k in labelled:
        label[6:14, 4:12, k] = 2
        label[8:12, 6:10, k] = 1
        label[14:17, 4:12, k] = 3
    return image, label


def _split_out(root: Path, subjects: dict[str, str]) -> None:
    """Shared-folder layout: ``<code>_sa_<ED|ES>[_gt].nii.gz`` plus ``info.csv``."""
    rows = ["code,vendor,vendor_name,centre,phase_files"]
    for i, (code, vendor) in enumerate(subjects.items()):
        for phase, labelled in (("ED", [1, 2, 3]), ("ES", [2, 3])):
            image, label = _frame(labelled, i)
            _nifti(root / f"{code}_sa_{phase}.nii.gz", image)
            _nifti(root / f"{code}_sa_{phase}_gt.nii.gz", label)
        rows.append(f"{code},{vendor},Maker{vendor},{i},ED;ES")
    (root / "info.csv").write_text("\n".join(rows) + "\n")


def _mnms(root: Path, ed: str = "0", es: str = "3", frames: int = 6) -> Path:
    """Official layout: 4D volume and label in ``Training/Labeled/<code>/`` and the M&Ms CSV."""
    folder = root / "Training" / "Labeled" / "P4D001"
    images, labels = zip(*(_frame([1, 2, 3] if t == 0 else [2] if t == 3 else [], t) for t in range(frames)))
    _nifti(folder / "P4D001_sa.nii.gz", np.stack(images, -1))
    _nifti(folder / "P4D001_sa_gt.nii.gz", np.stack(labels, -1))
    (root / "mnms_info.csv").write_text(f"External code,VendorName,Vendor,Centre,ED,ES\nP4D001,Siemens,A,1,{ed},{es}\n")
    return folder


def test_split_out_layout(tmp_path: Path) -> None:
    _split_out(tmp_path, {"AAA111": "A", "BBB222": "B"})
    items = build_datalist(tmp_path, "cardiac")
    assert [(it["subject"], it["phase"], it["domain"], it["frame"]) for it in items] == [
        ("AAA111", "ED", "A", -1), ("AAA111", "ES", "A", -1), ("BBB222", "ED", "B", -1), ("BBB222", "ES", "B", -1)
    ]
    assert all(it["label"].endswith(f"{it['subject']}_sa_{it['phase']}_gt.nii.gz") for it in items)
    assert [labelled_slices(it["label"], it["frame"]) for it in items[:2]] == [([1, 2, 3], 5), ([2, 3], 5)]


def test_mnms_4d_layout_uses_csv_frames(tmp_path: Path) -> None:
    _mnms(tmp_path)
    items = build_datalist(tmp_path, "cardiac")
    assert [(it["phase"], it["frame"], it["split"], it["domain"]) for it in items] == [
        ("ED", 0, "train", "A"), ("ES", 3, "train", "A")
    ]
    assert [labelled_slices(it["label"], it["frame"])[0] for it in items] == [[1, 2, 3], [2]]
    chain = Compose(preprocessing("cardiac", spatial_size=48))
    es = chain(items[1])
    assert es["image"].shape == (1, 48, 48, 5)
    assert [k for k in range(5) if es["label"][..., k].any()] == [2]  # the ES frame, not ED


def test_4d_volume_without_frame_information(tmp_path: Path) -> None:
    folder = _mnms(tmp_path, ed="", es="")
    with pytest.raises(DataError, match=r"P4D001_sa\.nii\.gz.*ED/ES"):
        build_datalist(tmp_path, "cardiac")
    with pytest.raises(RuntimeError) as info:  # a 4D file given as one 3D frame
        Compose(preprocessing("cardiac"))({"image": str(folder / "P4D001_sa.nii.gz"), "label": str(folder / "P4D001_sa_gt.nii.gz")})
    assert "P4D001_sa.nii.gz" in data_error(info) and "no frame index" in data_error(info)


def test_frame_index_beyond_the_volume(tmp_path: Path) -> None:
    _mnms(tmp_path, es="9")
    with pytest.raises(DataError, match=r"P4D001_sa\.nii\.gz"):
        build_datalist(tmp_path, "cardiac")


def test_image_without_label_and_subject_without_csv_row(tmp_path: Path) -> None:
    _split_out(tmp_path, {"AAA111": "A"})
    (tmp_path / "AAA111_sa_ES_gt.nii.gz").unlink()
    with pytest.raises(DataError, match="AAA111_sa_ES.nii.gz"):
        build_datalist(tmp_path, "cardiac")
    assert [it["phase"] for it in build_datalist(tmp_path, "cardiac", missing_label="skip")] == ["ED"]
    _nifti(tmp_path / "ZZZ999_sa_ED.nii.gz", _frame([])[0])
    with pytest.raises(DataError, match="ZZZ999"):
        build_datalist(tmp_path, "cardiac", missing_label="skip")


def test_bad_label_values_shape_and_corrupt_file(tmp_path: Path) -> None:
    _split_out(tmp_path, {"AAA111": "A"})
    ed, es = build_datalist(tmp_path, "cardiac")
    chain = Compose(preprocessing("cardiac"))
    label = _frame([1])[1]
    label[0, 0, 0] = 7
    _nifti(Path(ed["label"]), label)
    with pytest.raises(RuntimeError) as info:
        chain(ed)
    assert "AAA111_sa_ED_gt.nii.gz" in data_error(info) and "7" in data_error(info)
    _nifti(Path(es["label"]), np.zeros((20, 16, 4), np.uint8))
    with pytest.raises(RuntimeError) as info:
        chain(es)
    assert "AAA111_sa_ES_gt.nii.gz" in data_error(info) and "AAA111_sa_ES.nii.gz" in data_error(info)
    Path(es["image"]).write_bytes(b"not a nifti file")
    with pytest.raises(RuntimeError) as info:
        chain(es)
    assert "AAA111_sa_ES.nii.gz" in data_error(info)


def test_preprocessing_resamples_normalises_and_inverts(tmp_path: Path) -> None:
    _split_out(tmp_path, {"AAA111": "A"})
    item = build_datalist(tmp_path, "cardiac")[0]
    chain = Compose(preprocessing("cardiac", spacing=1.25, spatial_size=48))
    out = chain(item)
    # 20 x 16 voxels of 2.5 mm -> 40 x 32 of 1.25 mm, padded to 48 x 48; slices untouched
    assert out["image"].shape == (1, 48, 48, 5) and out["label"].shape == (1, 48, 48, 5)
    np.testing.assert_allclose(out["image"].pixdim[:2].tolist(), [1.25, 1.25])
    assert float(out["image"].min()) == 0.0 and float(out["image"].max()) == pytest.approx(1.0)
    assert set(torch.unique(out["label"]).tolist()) == {0.0, 1.0, 2.0, 3.0}
    out["pred"] = out["label"].clone()
    back = Invertd("pred", transform=chain, orig_keys="image", nearest_interp=True)(out)["pred"]
    original = nib.load(item["label"]).get_fdata()
    assert back.shape == (1, *SHAPE) and (back[0].numpy() == original).mean() > 0.97


def test_expand_slices_keeps_labelled_slices_with_metadata(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _split_out(tmp_path, {"AAA111": "A", "BBB222": "B"})
    items = build_datalist(tmp_path, "cardiac")
    chain = Compose(preprocessing("cardiac", spatial_size=48))
    with caplog.at_level(logging.INFO, logger="emclip.data"):
        slices = expand_slices([chain(it) for it in items])
    assert [(s["subject"], s["phase"], s["slice"]) for s in slices[:5]] == [
        ("AAA111", "ED", 1), ("AAA111", "ED", 2), ("AAA111", "ED", 3), ("AAA111", "ES", 2), ("AAA111", "ES", 3)
    ]
    assert len(slices) == 10 and {s["domain"] for s in slices} == {"A", "B"}
    assert "10 unlabelled slices" in caplog.text  # 4 volumes x 5 slices, 10 without foreground
    first = slices[0]["image"]
    assert first.shape == (1, 48, 48) and first.untyped_storage().nbytes() == first.numel() * 4  # a compact copy
    dataset = make_slice_dataset(items, chain, progress=False)
    assert len(dataset) == 10 and dataset[0]["label"].shape == (1, 48, 48)


def test_unlabelled_slices_train_as_background(tmp_path: Path) -> None:
    """``labelled_only=False`` (``train_unlabelled_slices``) keeps every slice of every volume; the
    slices beyond the annotated ones come with an all-background label, the others unchanged."""
    from emclip.data import make_dataset

    _split_out(tmp_path, {"AAA111": "A", "BBB222": "B"})
    items = build_datalist(tmp_path, "cardiac")
    transforms = preprocessing("cardiac", spatial_size=48)
    labelled = make_dataset(items, transforms, cache="none", progress=False, slices=True)
    every = make_dataset(items, transforms, cache="none", progress=False, slices=True, labelled_only=False)
    assert len(labelled) == 10 and len(every) == 20  # 4 volumes x 5 slices
    by_slice = {(s["subject"], s["phase"], s["slice"]): s["label"] for s in every}
    empty = [key for key, label in by_slice.items() if not label.any()]
    assert sorted(empty) == sorted(
        (code, phase, k) for code in ("AAA111", "BBB222") for phase, kept in (("ED", [1, 2, 3]), ("ES", [2, 3]))
        for k in range(5) if k not in kept
    )
    for s in labelled:
        assert torch.equal(by_slice[(s["subject"], s["phase"], s["slice"])], s["label"])


def test_equalize_divides_out_a_monotone_intensity_mapping(tmp_path: Path) -> None:
    """With preprocess#equalize on, a scanner's gain or gamma leaves the network's input (nearly) unchanged."""
    _split_out(tmp_path, {"AAA111": "A"})
    item = build_datalist(tmp_path, "cardiac")[0]
    raw = nib.load(item["image"])
    rendered = {}
    for name, mapping in {"as_is": lambda x: x, "gain": lambda x: 3.0 * x, "gamma": lambda x: 500.0 * (x / 500.0) ** 1.5}.items():
        path = _nifti(tmp_path / name / "AAA111_sa_ED.nii.gz", mapping(raw.get_fdata()).astype(np.float32))
        for on in (True, False):
            chain = Compose(preprocessing("cardiac", spatial_size=48, **{"preprocess#equalize#_disabled_": not on}))
            rendered[name, on] = chain({"image": str(path)})["image"]
    equalized = rendered["as_is", True]
    assert 0.0 <= float(equalized.min()) and float(equalized.max()) <= 1.0
    torch.testing.assert_close(rendered["gain", True], equalized, atol=1e-5, rtol=0)
    assert float((rendered["gamma", True] - equalized).abs().mean()) < 0.01
    assert float((rendered["gamma", False] - rendered["as_is", False]).abs().mean()) > 0.05


def test_standardize_maps_another_scanners_contrast_onto_the_training_landmarks(tmp_path: Path) -> None:
    """preprocess#standardize with the training volumes' landmarks (python -m emclip.data.landmarks)
    leaves a training-like volume nearly as it was and brings a gamma-changed one back to it."""
    from emclip.data.landmarks import main as landmarks_main

    _split_out(tmp_path, {"AAA111": "A", "BBB222": "B"})
    landmarks = landmarks_main(["--task", "cardiac", "--dataset-dir", str(tmp_path), "--train-domains", "A",
                                "--val-fraction", "0", "--output", str(tmp_path / "landmarks.json"),
                                "--set", "spatial_size=[48,48]"])
    assert len(landmarks) == 13 and landmarks == sorted(landmarks) and 0.0 <= landmarks[0] < landmarks[-1] <= 1.0
    assert '"intensity_landmarks"' in (tmp_path / "landmarks.json").read_text()
    from emclip.configs import load_config

    # the same, in a training config
    expression = "$emclip.data.reference_landmarks('cardiac', @splits['train'], {'spatial_size': @spatial_size})"
    parser = load_config("cardiac", overrides={"dataset_dir": str(tmp_path), "train_domains": ["A"], "val_fraction": 0.0,
                                               "spatial_size": [48, 48], "intensity_landmarks": expression})
    assert parser.get_parsed_content("intensity_landmarks") == landmarks
    item = next(it for it in build_datalist(tmp_path, "cardiac") if it["domain"] == "A" and it["phase"] == "ED")
    raw = nib.load(item["image"]).get_fdata()
    gamma = _nifti(tmp_path / "gamma" / "AAA111_sa_ED.nii.gz", (500.0 * (raw / 500.0) ** 2.0).astype(np.float32))
    rendered = {}
    for on in (True, False):
        chain = Compose(preprocessing("cardiac", spatial_size=48, intensity_landmarks=landmarks,
                                      **{"preprocess#standardize#_disabled_": not on}))
        rendered["as_is", on] = chain({"image": item["image"]})["image"]
        rendered["gamma", on] = chain({"image": str(gamma)})["image"]
    assert float((rendered["as_is", True] - rendered["as_is", False]).abs().mean()) < 0.01
    assert float((rendered["gamma", False] - rendered["as_is", False]).abs().mean()) > 0.05
    assert float((rendered["gamma", True] - rendered["as_is", False]).abs().mean()) < 0.02
    with pytest.raises(Exception) as err:  # switched on without a reference: the message says how to get one
        preprocessing("cardiac", spatial_size=48, **{"preprocess#standardize#_disabled_": False})
    messages = [str(e) for e in (err.value, err.value.__cause__) if e is not None]
    assert any("python -m emclip.data.landmarks" in m for m in messages), messages
