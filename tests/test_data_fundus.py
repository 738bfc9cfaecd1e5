"""Fundus readers: folder layouts, mask encodings, exact label conversion, bad input, preprocessing."""

from __future__ import annotations

import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, Invertd
from PIL import Image

from emclip.data import DataError, build_datalist, read_fundus_label
from emclip.data.common import input_error
from emclip.data.fundus import mask_to_label
from conftest import data_error, preprocessing

SIZE = 24
# A label map with all three classes: background 0, rim 1 (disc ring), cup 2 (centre).
LABEL = np.zeros((SIZE, SIZE + 8), np.uint8)  # not square, to catch transposed axes
LABEL[4:20, 6:26] = 1
LABEL[8:16, 12:20] = 2
DOFE = np.choose(LABEL, [255, 128, 0]).astype(np.uint8)


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _rgb(shape: tuple[int, int] = LABEL.shape) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)


def _three(mask: np.ndarray) -> np.ndarray:
    return np.repeat(mask[..., None], 3, axis=2)


def test_dofe_conversion_is_exact() -> None:
    np.testing.assert_array_equal(mask_to_label(DOFE, "dofe"), LABEL)
    np.testing.assert_array_equal(mask_to_label(DOFE, "auto"), LABEL)
    np.testing.assert_array_equal(mask_to_label(LABEL, "index"), LABEL)
    np.testing.assert_array_equal(mask_to_label(np.array([[255, 128, 0]], np.uint8), "dofe"), [[0, 1, 2]])


def test_shared_layout_three_channel_dofe_masks(tmp_path: Path) -> None:
    for domain, split in (("DomA", "train"), ("DomA", "test"), ("DomB", "train")):
        _png(tmp_path / domain / split / "image" / f"{domain}_{split}.png", _rgb())
        _png(tmp_path / domain / split / "mask" / f"{domain}_{split}.png", _three(DOFE))
    items = build_datalist(tmp_path, "fundus")
    assert [(it["domain"], it["split"]) for it in items] == [("DomA", "test"), ("DomA", "train"), ("DomB", "train")]
    assert {it["subject"] for it in items} == {"DomA_train", "DomA_test", "DomB_train"}
    for it in items:
        np.testing.assert_array_equal(read_fundus_label(it["label"], it["mask_format"]), LABEL)


def test_dofe_rois_layout_with_other_mask_suffix(tmp_path: Path) -> None:
    _png(tmp_path / "Domain1" / "train" / "ROIs" / "image" / "n001.jpg", _rgb())
    _png(tmp_path / "Domain1" / "train" / "ROIs" / "mask" / "n001.bmp", DOFE)
    (item,) = build_datalist(tmp_path, "fundus", mask_format="dofe")
    assert item["label"].endswith("n001.bmp") and item["domain"] == "Domain1"
    np.testing.assert_array_equal(read_fundus_label(item["label"], item["mask_format"]), LABEL)


def test_rim_one_disc_cup_pair(tmp_path: Path) -> None:
    folder = tmp_path / "RIMONE" / "test"
    _png(folder / "image" / "r1.png", _rgb())
    _png(folder / "mask" / "r1-1-Disc-T.png", ((LABEL > 0) * 255).astype(np.uint8))
    _png(folder / "mask" / "r1-1-Cup-T.png", (LABEL == 2).astype(np.uint8))
    (item,) = build_datalist(tmp_path, "fundus")
    assert item["mask_format"] == "disc_cup_pair" and len(item["label"]) == 2
    np.testing.assert_array_equal(read_fundus_label(item["label"], "disc_cup_pair"), LABEL)


def test_index_masks(tmp_path: Path) -> None:
    _png(tmp_path / "D" / "train" / "image" / "a.png", _rgb())
    _png(tmp_path / "D" / "train" / "mask" / "a.png", LABEL)
    (item,) = build_datalist(tmp_path, "fundus", mask_format="index")
    np.testing.assert_array_equal(read_fundus_label(item["label"], "index"), LABEL)
    with pytest.raises(DataError, match="a.png"):  # an index mask is not a valid DoFE mask
        read_fundus_label(item["label"], "dofe")


@pytest.mark.parametrize(
    ("values", "fmt", "found"),
    [([0, 128, 200, 255], "dofe", "200"), ([0, 1, 3], "index", "3"), ([0, 1, 128], "auto", "128")],
)
def test_unknown_mask_values_name_file_and_values(tmp_path: Path, values: list[int], fmt: str, found: str) -> None:
    path = _png(tmp_path / "odd_mask.png", np.array([values], np.uint8))
    with pytest.raises(DataError, match=rf"odd_mask\.png.*{found}"):
        read_fundus_label(path, fmt)


def test_unequal_colour_channels(tmp_path: Path) -> None:
    mask = _three(DOFE)
    mask[0, 0] = (0, 128, 255)
    path = _png(tmp_path / "colour.png", mask)
    with pytest.raises(DataError, match="colour.png"):
        read_fundus_label(path)


def test_slicer_nifti_label(tmp_path: Path) -> None:
    """A label map saved as 3D Slicer saves the label of a 2D image: voxel (column, row, 0)."""
    path = tmp_path / "label.nii.gz"
    nib.save(nib.Nifti1Image(LABEL.T[..., None].astype(np.int16), np.eye(4)), str(path))
    np.testing.assert_array_equal(read_fundus_label(path), LABEL)
    item = {"image": str(_png(tmp_path / "img.png", _rgb())), "label": str(path)}
    png = _item(tmp_path / "png", _rgb(), DOFE)
    out, ref = (Compose(preprocessing("fundus", spatial_size=LABEL.shape))(i) for i in (item, png))
    torch.testing.assert_close(out["label"].as_tensor(), ref["label"].as_tensor())

    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.uint8), np.eye(4)), str(path))
    with pytest.raises(DataError, match=r"label\.nii\.gz has shape \(4, 4, 2\)"):
        read_fundus_label(path)
    nib.save(nib.Nifti1Image(np.full((4, 4, 1), 0.5, np.float32), np.eye(4)), str(path))
    with pytest.raises(DataError, match=r"label\.nii\.gz has non-integer values"):
        read_fundus_label(path)


def test_image_without_mask(tmp_path: Path) -> None:
    _png(tmp_path / "D" / "train" / "image" / "lonely.png", _rgb())
    _png(tmp_path / "D" / "train" / "image" / "ok.png", _rgb())
    _png(tmp_path / "D" / "train" / "mask" / "ok.png", DOFE)
    with pytest.raises(DataError, match="lonely.png"):
        build_datalist(tmp_path, "fundus")
    assert [it["subject"] for it in build_datalist(tmp_path, "fundus", missing_label="skip")] == ["ok"]


def _item(tmp_path: Path, image: np.ndarray, mask: np.ndarray) -> dict:
    return {
        "image": str(_png(tmp_path / "img.png", image)),
        "label": str(_png(tmp_path / "msk.png", mask)),
        "mask_format": "dofe",
    }


def test_corrupt_image_names_file_and_cause(tmp_path: Path) -> None:
    item = _item(tmp_path, _rgb(), DOFE)
    Path(item["image"]).write_bytes(b"\x89PNG not really")
    with pytest.raises(RuntimeError) as info:
        Compose(preprocessing("fundus"))(item)
    message = data_error(info)
    # the image reader's own error, not MONAI's fallback "cannot find a suitable reader"
    assert message == f"cannot read image file {item['image']}: cannot identify image file '{item['image']}'"


def test_input_error_is_an_http_422_where_starlette_is_installed() -> None:
    HTTPException = pytest.importorskip("starlette.exceptions").HTTPException
    err = input_error("cannot read image file x.png: image file is truncated")
    assert isinstance(err, DataError) and isinstance(err, HTTPException)
    assert (err.status_code, err.detail) == (422, "cannot read image file x.png: image file is truncated")
    assert str(err) == err.detail
    # DataLoader workers pickle their errors
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is type(err) and str(again) == str(err)


def test_mask_shape_differs_from_image(tmp_path: Path) -> None:
    item = _item(tmp_path, _rgb((SIZE, SIZE)), DOFE)
    with pytest.raises(RuntimeError) as info:
        Compose(preprocessing("fundus"))(item)
    message = data_error(info)
    assert "img.png" in message and "msk.png" in message


def test_preprocessing_aligns_label_and_inverts(tmp_path: Path) -> None:
    image = np.zeros((*LABEL.shape, 3), np.uint8)
    image[LABEL == 2] = 255  # the cup is the only bright area
    chain = Compose(preprocessing("fundus", spatial_size=16))
    out = chain(_item(tmp_path, image, DOFE))
    assert out["image"].shape == (3, 16, 16) and out["label"].shape == (1, 16, 16)
    assert 0.0 <= float(out["image"].min()) and float(out["image"].max()) <= 1.0
    assert set(torch.unique(out["label"]).tolist()) == {0.0, 1.0, 2.0}
    bright = out["image"][0] > 0.9
    assert bright.any() and bool((out["label"][0][bright] == 2).all())  # image and label are not transposed
    out["pred"] = out["label"].clone()
    back = Invertd("pred", transform=chain, orig_keys="image", nearest_interp=True)(out)["pred"]
    assert back.shape == (1, LABEL.shape[1], LABEL.shape[0])  # original geometry, (W, H) as MONAI loads PNG
    assert (back[0].numpy().T == LABEL).mean() > 0.9


def test_mask_format_option_applies_to_auto_items(tmp_path: Path) -> None:
    item = {**_item(tmp_path, _rgb(), LABEL), "mask_format": "auto"}  # an index mask, as "auto" finds it
    out = Compose(preprocessing("fundus", spatial_size=8))(dict(item))
    assert set(torch.unique(out["label"]).tolist()) == {0.0, 1.0, 2.0}
    with pytest.raises(RuntimeError) as info:  # the config says DoFE: index values are then an error
        Compose(preprocessing("fundus", mask_format="dofe"))(dict(item))
    assert "msk.png" in data_error(info)


def test_image_only_preprocessing(tmp_path: Path) -> None:
    out = Compose(preprocessing("fundus", spatial_size=(8, 12)))({"image": _item(tmp_path, _rgb(), DOFE)["image"]})
    assert out["image"].shape == (3, 8, 12) and "label" not in out
