"""Augmentation keeps labels intact, moves them with the image; GIN and hue/saturation behave."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import Compose

from emclip.configs import load_config
from emclip.data import RandGIN, RandGINd, task_transforms
from emclip.data.transforms import RandHueSaturationd

SPATIAL = ("flip_x", "flip_y", "affine", "zoom", "elastic")


def _sample(channels: int, classes: int, size: int = 48) -> dict:
    """Concentric label regions; the image is a per-class intensity plus a little texture."""
    yy, xx = np.mgrid[0:size, 0:size]
    radius = np.hypot(yy - size / 2 + 3, xx - size / 2 - 5)
    label = np.zeros((size, size), np.float32)
    for c in range(1, classes):
        label[radius < size * (0.45 - 0.1 * c)] = c
    texture = np.random.default_rng(0).uniform(0, 0.05, (channels, size, size))
    image = (label / (classes - 1))[None] * 0.9 + texture
    return {"image": torch.as_tensor(image, dtype=torch.float32), "label": torch.as_tensor(label)[None]}


def _switches(task: str) -> list[str]:
    """The overlay's augmentation switches (the two-view split and the final clip have none)."""
    return [name for name in load_config(task)["augment"] if name not in ("views", "clip")]


def _augmentation(task: str, only: tuple[str, ...] | None = None) -> Compose:
    """The overlay's augmentation with the switches in ``only`` (default all) on at probability 1, the others off."""
    overrides = {}
    for name in _switches(task):
        on = only is None or name in only
        overrides[f"augment#{name}#_disabled_"] = not on
        if on:
            overrides[f"augment#{name}#prob"] = 1.0
    return Compose(task_transforms(task, "augment", overrides=overrides))


@pytest.mark.parametrize(("task", "channels", "classes"), [("fundus", 3, 3), ("cardiac", 1, 4)])
def test_labels_keep_their_values(task: str, channels: int, classes: int) -> None:
    chain = _augmentation(task)
    sample = _sample(channels, classes)
    for seed in range(4):
        chain.set_random_state(seed)
        out = chain(dict(sample))
        values = set(torch.unique(out["label"]).tolist())
        assert values <= set(range(classes)) and len(values) >= 2  # nearest only: no 0.5 between classes
        assert 0.0 <= float(out["image"].min()) and float(out["image"].max()) <= 1.0
        assert out["image"].shape == sample["image"].shape and out["label"].shape == sample["label"].shape


@pytest.mark.parametrize(("task", "channels", "classes"), [("fundus", 3, 3), ("cardiac", 1, 4)])
def test_spatial_transforms_move_label_with_image(task: str, channels: int, classes: int) -> None:
    chain = _augmentation(task, SPATIAL)
    chain.set_random_state(1)
    sample = _sample(channels, classes)
    out = chain(dict(sample))
    assert not torch.equal(out["label"], sample["label"])  # it did move
    expected = torch.round(out["image"][0] / 0.9 * (classes - 1))
    assert (expected == out["label"][0]).float().mean() > 0.9  # and both moved alike


@pytest.mark.parametrize(("task", "channels", "classes"), [("fundus", 3, 3), ("cardiac", 1, 4)])
def test_intensity_transforms_leave_label_untouched(task: str, channels: int, classes: int) -> None:
    intensity = tuple(n for n in _switches(task) if n not in SPATIAL)
    chain = _augmentation(task, intensity)
    chain.set_random_state(0)
    sample = _sample(channels, classes)
    out = chain(dict(sample))
    assert torch.equal(out["label"], sample["label"])
    assert not torch.allclose(out["image"], sample["image"], atol=1e-3)


def test_cardiac_intensity_scale_multiplies_the_whole_image_within_its_range() -> None:
    chain = _augmentation("cardiac", ("intensity_scale",))
    sample = _sample(1, 4)
    sample["image"] = sample["image"] * 0.6  # room above: the final clip at 1 does not bite
    ratios = []
    for seed in range(6):
        chain.set_random_state(seed)
        out = chain(dict(sample))
        ratio = out["image"] / sample["image"]
        assert torch.allclose(ratio, ratio.mean(), atol=1e-4)  # one factor for every pixel
        ratios.append(float(ratio.mean()))
    assert all(1 / 1.5 - 1e-3 <= r <= 1.5 + 1e-3 for r in ratios)
    assert min(ratios) < 1 < max(ratios)  # darker and brighter


def test_gin_changes_image_not_label_and_is_seeded() -> None:
    sample = _sample(3, 3)
    gin = RandGINd("image", prob=1.0)
    out = gin.set_random_state(7)(dict(sample))
    assert torch.equal(out["label"], sample["label"])
    assert (out["image"] - sample["image"]).abs().mean() > 1e-3
    assert float(out["image"].min()) >= float(sample["image"].min()) - 1e-5
    assert float(out["image"].max()) <= float(sample["image"].max()) + 1e-5  # stays in the image's range
    assert torch.equal(RandGINd("image", prob=1.0).set_random_state(7)(dict(sample))["image"], out["image"])
    assert not torch.equal(RandGINd("image", prob=1.0).set_random_state(8)(dict(sample))["image"], out["image"])
    assert RandGINd("image", prob=0.0)(dict(sample))["image"] is sample["image"]


def test_gin_blend_weight_and_3d_volumes() -> None:
    image = torch.rand(1, 12, 12, 6)
    assert torch.allclose(RandGIN(prob=1.0, alpha_range=(0.0, 0.0))(image), image)
    out = RandGIN(prob=1.0, num_layers=1, alpha_range=(1.0, 1.0)).set_random_state(0)(image)  # plain random conv
    assert out.shape == image.shape and not torch.allclose(out, image)


def test_hue_saturation_keeps_grey_and_changes_colour() -> None:
    image = torch.tensor([[0.5, 0.9], [0.5, 0.1], [0.5, 0.1]]).reshape(3, 1, 2)  # a grey and a red pixel
    out = RandHueSaturationd("image", prob=1.0, hue=0.25, saturation=0.5).set_random_state(0)({"image": image})["image"]
    assert torch.allclose(out[:, 0, 0], image[:, 0, 0], atol=1e-6)
    assert not torch.allclose(out[:, 0, 1], image[:, 0, 1], atol=1e-3)
    same = RandHueSaturationd("image", prob=1.0, hue=0.0, saturation=0.0)({"image": image})["image"]
    assert torch.allclose(same, image, atol=1e-6)


def _names(task: str, **overrides) -> list[str]:
    return [type(t).__name__ for t in task_transforms(task, "augment", overrides=overrides)]


def test_zoom_scales_structures_and_keeps_the_size() -> None:
    sample = _sample(3, 3)
    area = float((sample["label"] == 2).sum())  # the inner disc: it stays inside the image at 1.4
    for factor in (0.7, 1.4):
        zoom = {"augment#zoom#_disabled_": False, "augment#zoom#prob": 1.0, "augment#zoom#min_zoom": factor, "augment#zoom#max_zoom": factor}
        chain = Compose([t for t in task_transforms("fundus", "augment", overrides=zoom) if type(t).__name__ == "RandZoomd"])
        out = chain(dict(sample))
        assert out["label"].shape == sample["label"].shape and set(torch.unique(out["label"]).tolist()) <= {0.0, 1.0, 2.0}
        assert float((out["label"] == 2).sum()) / area == pytest.approx(factor**2, rel=0.05)  # the structures, not the image
        expected = torch.round(out["image"][0] / 0.9 * 2)
        assert (expected == out["label"][0]).float().mean() > 0.9


def test_switches() -> None:
    assert _names("fundus", **{f"augment#{n}#_disabled_": True for n in _switches("fundus")}) == ["ScaleIntensityRanged"]
    default_names = _names("cardiac")
    assert "RandGINd" in default_names and "RandBiasFieldd" in default_names and "RepeatViewsd" not in default_names
    assert "RandGINd" not in _names("cardiac", **{"augment#gin#_disabled_": True})
    assert "Rand2DElasticd" not in _names("fundus")  # off by default for fundus
    assert "Rand2DElasticd" in _names("fundus", **{"augment#elastic#_disabled_": False})
    assert "RandZoomd" not in _names("fundus") and "RandZoomd" in _names("fundus", **{"augment#zoom#_disabled_": False})
    assert "RandHueSaturationd" not in _names("task_2d", in_channels=1)  # colour only for RGB
    with pytest.raises(Exception, match="RandGINd"):  # an option the transform does not take
        _names("fundus", **{"augment#gin#probability": 1.0})
    with pytest.raises(FileNotFoundError):
        _names("brain")


def test_normalization_defaults() -> None:
    image = torch.full((3, 2, 2), 0.5)
    (clip,) = task_transforms("fundus", "normalization")
    assert torch.allclose(clip({"image": image})["image"][0], torch.tensor((0.5 - 0.48145466) / 0.26862954))
    assert task_transforms("cardiac", "normalization") == []
    (centred,) = task_transforms("cardiac", "normalization", overrides={"normalize": True})
    assert torch.allclose(centred({"image": torch.ones(1, 2, 2)})["image"], torch.ones(1, 2, 2))
    (grey,) = task_transforms("task_2d", "normalization", overrides={"in_channels": 1})
    assert torch.allclose(grey({"image": torch.ones(1, 2, 2)})["image"], torch.ones(1, 2, 2))
