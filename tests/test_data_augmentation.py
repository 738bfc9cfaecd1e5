"""Augmentation keeps labels intact, moves them with the image; GIN and hue/saturation behave."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import Compose

from emclip.data import AUGMENTATIONS, RandGIN, RandGINd, augmentation, normalization
from emclip.data.transforms import RandHueSaturationd

SPATIAL = ("flip", "affine", "elastic")


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


def _all_on(task: str, only: tuple[str, ...] | None = None) -> dict:
    return {name: {"prob": 1.0} if only is None or name in only else False for name in AUGMENTATIONS[task]}


@pytest.mark.parametrize(("task", "channels", "classes"), [("fundus", 3, 3), ("cardiac", 1, 4)])
def test_labels_keep_their_values(task: str, channels: int, classes: int) -> None:
    chain = Compose(augmentation(task, **_all_on(task)))
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
    chain = Compose(augmentation(task, **_all_on(task, SPATIAL)))
    chain.set_random_state(1)
    sample = _sample(channels, classes)
    out = chain(dict(sample))
    assert not torch.equal(out["label"], sample["label"])  # it did move
    expected = torch.round(out["image"][0] / 0.9 * (classes - 1))
    assert (expected == out["label"][0]).float().mean() > 0.9  # and both moved alike


def test_intensity_transforms_leave_label_untouched() -> None:
    intensity = tuple(n for n in AUGMENTATIONS["fundus"] if n not in SPATIAL)
    chain = Compose(augmentation("fundus", **_all_on("fundus", intensity)))
    chain.set_random_state(0)
    sample = _sample(3, 3)
    out = chain(dict(sample))
    assert torch.equal(out["label"], sample["label"])
    assert not torch.allclose(out["image"], sample["image"], atol=1e-3)


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


def test_switches() -> None:
    assert augmentation("fundus", **{name: False for name in AUGMENTATIONS["fundus"]}) == []
    default_names = [type(t).__name__ for t in augmentation("cardiac")]
    assert "RandGINd" in default_names and "RandBiasFieldd" in default_names
    assert "RandGINd" not in [type(t).__name__ for t in augmentation("cardiac", gin=False)]
    assert "Rand2DElasticd" not in [type(t).__name__ for t in augmentation("fundus")]  # off by default for fundus
    assert "Rand2DElasticd" in [type(t).__name__ for t in augmentation("fundus", elastic=True)]
    with pytest.raises(ValueError, match="hue_saturation"):
        augmentation("cardiac", hue_saturation=True)
    with pytest.raises(ValueError, match="probability"):
        augmentation("fundus", gin={"probability": 1.0})
    with pytest.raises(ValueError, match="task"):
        augmentation("brain")


def test_normalization_defaults() -> None:
    image = torch.full((3, 2, 2), 0.5)
    (clip,) = normalization("fundus")
    assert torch.allclose(clip({"image": image})["image"][0], torch.tensor((0.5 - 0.48145466) / 0.26862954))
    assert normalization("cardiac") == []
    (centred,) = normalization("cardiac", normalize=True)
    assert torch.allclose(centred({"image": torch.ones(1, 2, 2)})["image"], torch.ones(1, 2, 2))
