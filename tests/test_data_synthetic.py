"""Synthetic generator, the datalist command line on its output, and the cached datasets."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from emclip.data import (
    build_datalist,
    cache_nbytes,
    load_datalist,
    make_dataset,
    make_slice_dataset,
    read_fundus_label,
    task_transforms,
    write_synthetic,
)
from emclip.data.datalist import main as datalist_main
from emclip.data.synthetic import main as synthetic_main


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic(root, "fundus", per_domain=4, image_size=64, progress=False)
    write_synthetic(root, "cardiac", per_domain=1, progress=False)
    return root


def test_fundus_domains_are_readable_and_differ(synthetic_root: Path) -> None:
    items = build_datalist(synthetic_root / "fundus", "fundus")
    assert sorted({it["domain"] for it in items}) == ["SynthA", "SynthB", "SynthC"]
    assert sorted(it["split"] for it in items if it["domain"] == "SynthA") == ["test", "train", "train", "train"]
    means = {}
    for it in items:
        image = np.asarray(Image.open(it["image"]))
        assert image.shape == (64, 64, 3)
        assert set(np.unique(read_fundus_label(it["label"], "dofe")).tolist()) == {0, 1, 2}  # disc and cup drawn
        means.setdefault(it["domain"], []).append(image.reshape(-1, 3).mean(0))
    colours = [np.mean(v, 0) for v in means.values()]
    assert min(np.abs(a - b).max() for i, a in enumerate(colours) for b in colours[i + 1 :]) > 10  # colour casts differ


def test_cardiac_layout_matches_shared_folder(synthetic_root: Path) -> None:
    root = synthetic_root / "cardiac"
    with open(root / "info.csv") as f:
        assert csv.DictReader(f).fieldnames == ["code", "vendor", "vendor_name", "centre", "phase_files"]
    items = build_datalist(root, "cardiac")
    assert [(it["domain"], it["phase"]) for it in items] == [(v, p) for v in "ABC" for p in ("ED", "ES")]
    spacings = {it["domain"]: nib.load(it["image"]).header.get_zooms() for it in items}
    assert len(set(spacings.values())) == 3  # vendors differ in resolution
    label = np.asarray(nib.load(items[0]["label"]).dataobj)
    assert set(np.unique(label).tolist()) == {0, 1, 2, 3}


def test_same_seed_same_data(tmp_path: Path) -> None:
    synthetic_main(["--task", "fundus", "--output", str(tmp_path / "a"), "--per-domain", "1", "--image-size", "32"])
    write_synthetic(tmp_path / "b", "fundus", per_domain=1, image_size=32, progress=False)
    write_synthetic(tmp_path / "c", "fundus", per_domain=1, image_size=32, seed=1, progress=False)
    name = "SynthA/train/image/syntha_000.png"
    a, b, c = (np.asarray(Image.open(tmp_path / x / "fundus" / name)) for x in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_datalist_cli_on_fundus(synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "fundus.json"
    datalist_main(
        ["--task", "fundus", "--root", str(synthetic_root / "fundus"), "--output", str(output), "--train-domains", "SynthA"]
    )
    printed = capsys.readouterr().out
    assert "SynthA" in printed and "SynthC" in printed
    data = json.loads(output.read_text())
    assert data["counts"]["SynthB"] == {"images": 4, "subjects": 4}
    assert {it["domain"] for it in data["testing"]} == {"SynthB", "SynthC"}
    items = load_datalist(output)
    assert len(items) == 12 and all({"image", "label", "domain", "subject", "split"} <= set(it) for it in items)
    assert all(Path(it["image"]).is_absolute() for it in items)


def test_datalist_cli_on_cardiac(synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "cardiac.json"
    datalist_main(["--task", "cardiac", "--root", str(synthetic_root / "cardiac"), "--output", str(output)])
    assert "labelled_slices" in capsys.readouterr().out
    counts = json.loads(output.read_text())["counts"]
    assert sorted(counts) == ["A", "B", "C"]
    # each synthetic volume has no heart in its first and last slice; vendors have 10, 12, 14 slices
    assert [counts[v]["labelled_slices"] for v in "ABC"] == [16, 20, 24]
    assert all(counts[v]["images"] == 2 and counts[v]["subjects"] == 1 for v in "ABC")


@pytest.mark.parametrize("cache", ["memory", "disk", "none"])
def test_make_dataset_caches_preprocessing(synthetic_root: Path, tmp_path: Path, cache: str) -> None:
    items = build_datalist(synthetic_root / "fundus", "fundus")[:3]
    chain = task_transforms("fundus", "preprocess", "augment", "normalization",
                            overrides={"spatial_size": [32, 32], "augment#gin#prob": 1.0})
    dataset = make_dataset(items, chain, cache=cache, cache_dir=tmp_path / "cache", progress=False)
    sample = dataset[0]
    assert sample["image"].shape == (3, 32, 32) and sample["image"].min() < 0  # CLIP-normalised
    assert set(torch.unique(sample["label"]).tolist()) <= {0.0, 1.0, 2.0}
    assert sample["domain"] == items[0]["domain"]
    if cache == "memory":
        assert cache_nbytes(dataset) >= 3 * (3 + 1) * 32 * 32 * 4  # image and label of 3 items
    if cache == "disk":  # written at first access, in the folder of this preprocessing
        assert [len(list(d.iterdir())) for d in (tmp_path / "cache").iterdir()] == [1]


def test_disk_cache_is_keyed_by_the_preprocessing(synthetic_root: Path, tmp_path: Path) -> None:
    """Another preprocessing in the same cache folder gets its own volumes, not the earlier run's."""
    def first_image(task: str, keys: tuple[str, ...], **overrides) -> torch.Tensor:
        items = build_datalist(synthetic_root / task, task)[:2]
        if task == "fundus":
            chain = task_transforms(task, "preprocess", overrides=overrides)
            return make_dataset(items, chain, cache="disk", cache_dir=tmp_path / task, progress=False)[0]["image"]
        chain = task_transforms(task, "preprocess", overrides=overrides)
        return make_slice_dataset(items, chain, keys=keys, cache_dir=tmp_path / task, progress=False)[0]["image"]

    assert first_image("fundus", (), spatial_size=[32, 32]).shape[-1] == 32
    assert first_image("fundus", (), spatial_size=[40, 40]).shape[-1] == 40
    assert first_image("fundus", (), spatial_size=[32, 32]).shape[-1] == 32  # the first folder, reused
    assert len(list((tmp_path / "fundus").iterdir())) == 2
    size = {"spatial_size": [32, 32]}
    plain = first_image("cardiac", ("image", "label"), **size)
    equalized = first_image("cardiac", ("image", "label"), **size, **{"preprocess#equalize#_disabled_": False})
    assert not torch.allclose(plain, equalized)
    assert len(list((tmp_path / "cardiac").iterdir())) == 2


def test_evaluation_transforms_are_deterministic(synthetic_root: Path) -> None:
    item = build_datalist(synthetic_root / "fundus", "fundus")[0]
    dataset = make_dataset([item], task_transforms("fundus", "preprocess", "normalization"), cache="none")
    assert torch.equal(dataset[0]["image"], dataset[0]["image"])
    assert dataset[0]["image"].shape == (3, 256, 256)  # default spatial_size
