"""The domain-generalization switches: decoder output stride, EM placement, region-wise style
mixing, label-aware location-scale augmentation, two views and their consistency loss."""

import numpy as np
import pytest
import torch
from monai.transforms import Compose

from conftest import tiny_net
from emclip.data import task_transforms
from emclip.data.style import RandGINMixd, RandLocationScaled
from emclip.data.transforms import RepeatViewsd
from emclip.losses import EMCLIPLoss, view_consistency


@pytest.mark.parametrize("backbone,size", [("cpu-resnet", (64, 96)), ("cpu-vit", (48, 80))])
@pytest.mark.parametrize("output_stride", [4, 2, 1])
@pytest.mark.parametrize("text_guided", [True, False])
def test_every_output_stride_gives_logits_at_the_input_size(backbone, size, output_stride, text_guided):
    net = tiny_net(backbone=backbone, output_stride=output_stride, text_guided=text_guided, em_levels=[1])
    x = torch.randn(2, 3, *size)
    out = net.train()(x)
    logits = out["pred"] if isinstance(out, dict) else out
    assert logits.shape == (2, 3, *size)
    logits.sum().backward()
    # the finest level's weights take part: they get a gradient
    finest = net.decoder.smooth[0][0].weight
    assert finest.grad is not None and finest.grad.abs().sum() > 0
    with torch.no_grad():
        assert net.eval()(x).shape == (2, 3, *size)


def test_output_stride_sets_the_decoder_levels():
    levels = lambda net: len(net.decoder.smooth)  # noqa: E731
    assert levels(tiny_net(output_stride=4)) == 4
    resnet2, resnet1 = tiny_net(output_stride=2), tiny_net(output_stride=1)
    assert levels(resnet2) == 5 and resnet2.stem is None  # the ResNet stem's own stride-2 map
    assert levels(resnet1) == 6 and len(resnet1.stem.out_channels) == 1
    vit2 = tiny_net(backbone="cpu-vit", output_stride=2)
    assert levels(vit2) == 5 and len(vit2.stem.out_channels) == 1
    with pytest.raises(ValueError, match="output_stride must be 4, 2 or 1"):
        tiny_net(output_stride=8)
    with pytest.raises(ValueError, match="em_levels"):
        tiny_net(em_levels=[4])


def test_output_stride_4_keeps_the_previous_parameter_names():
    # checkpoints of the stride-4 decoder still load: no new parameter at output_stride 4
    names = set(tiny_net(output_stride=4).state_dict())
    assert not any(n.startswith(("stem.", "decoder.narrow")) for n in names)
    assert not any(n.startswith("level_em.") for n in names)


def _item(size=48, seed=0):
    rng = np.random.default_rng(seed)
    image = torch.from_numpy(rng.uniform(0.2, 0.8, (3, size, size)).astype(np.float32))
    label = torch.zeros(1, size, size)
    label[0, 10:30, 8:20] = 1
    label[0, 15:25, 10:15] = 2
    return {"image": image, "label": label}


def test_gin_mix_restyles_regions_differently_and_keeps_the_label():
    item = _item()
    mix = RandGINMixd("image", prob=1.0, grid=(2, 3)).set_random_state(3)
    out = mix(item)
    assert torch.equal(out["label"], item["label"])
    assert out["image"].shape == item["image"].shape and not torch.allclose(out["image"], item["image"])


def test_location_scale_is_affine_per_region_and_keeps_the_label():
    item = _item()
    aug = RandLocationScaled("image", "label", prob=1.0, scale=0.4, shift=0.1, sigma=0.0, curve_points=0)
    out = aug.set_random_state(5)(item)
    assert torch.equal(out["label"], item["label"])
    assert out["image"].min() >= 0 and out["image"].max() <= 1
    slopes = []
    for c in (0, 1, 2):
        region = item["label"][0] == c
        x, y = item["image"][0][region].numpy(), out["image"][0][region].numpy()
        keep = (y > 0) & (y < 1)  # away from the clip
        a, b = np.polyfit(x[keep], y[keep], 1)
        np.testing.assert_allclose(y[keep], a * x[keep] + b, atol=1e-4)
        slopes.append(a)
    assert len({round(a, 3) for a in slopes}) == 3  # each region got its own scale


def test_location_scale_curve_is_monotone():
    item = _item()
    aug = RandLocationScaled("image", "label", prob=1.0, scale=0.0, shift=0.0, sigma=0.0, curve_points=4)
    out = aug.set_random_state(1)(item)["image"][0].flatten()
    order = torch.argsort(item["image"][0].flatten())
    assert torch.all(torch.diff(out[order]) >= -1e-6)


def test_two_views_share_geometry_and_differ_in_appearance():
    recipe = {"consistency_weight": 1.0, "augment#gin_mix#_disabled_": False, "augment#location_scale#_disabled_": False,
              "augment#flip_x#prob": 1.0, "augment#flip_y#prob": 1.0}
    chain = Compose(task_transforms("fundus", "augment", overrides=recipe))
    chain.set_random_state(0)
    item = _item()
    views = chain(item)
    assert isinstance(views, list) and len(views) == 2
    assert torch.equal(views[0]["label"], views[1]["label"])
    assert set(torch.unique(views[0]["label"]).tolist()) <= {0.0, 1.0, 2.0}
    assert not torch.allclose(views[0]["image"], views[1]["image"])
    chain = task_transforms("fundus", "augment", overrides={"consistency_weight": 1.0})
    assert [type(t).__name__ for t in chain[:4]] == ["RandFlipd", "RandFlipd", "RandAffined", "RepeatViewsd"]


def test_consistency_is_zero_for_identical_views_and_positive_otherwise():
    torch.manual_seed(0)
    a = torch.randn(2, 3, 8, 8)
    same = torch.stack([a[0], a[0], a[1], a[1]])
    for form in ("kl", "mse"):
        assert view_consistency(same, form).item() == pytest.approx(0.0, abs=1e-7)
        assert view_consistency(torch.randn(4, 3, 8, 8), form).item() > 0
    with pytest.raises(ValueError, match="pairs of views"):
        view_consistency(torch.randn(3, 3, 8, 8))
    target = torch.randint(0, 3, (4, 1, 8, 8))
    plain, weighted = EMCLIPLoss(), EMCLIPLoss(consistency_weight=2.0)
    assert weighted(same, target).item() == pytest.approx(plain(same, target).item(), abs=1e-6)


@pytest.mark.parametrize("task", ["fundus", "cardiac"])
def test_bundle_trains_with_the_whole_recipe(task, tmp_path):
    from test_bundle import META, META_CARDIAC, TINY, TINY_CARDIAC, cfg, run

    from emclip.data import write_synthetic

    write_synthetic(tmp_path / "data", task, per_domain=2 if task == "cardiac" else 4, image_size=96, progress=False)
    overrides = {
        **(TINY_CARDIAC if task == "cardiac" else TINY),
        "consistency_weight": 0.5,
        "network_def#output_stride": 2,
        "augment#gin_mix#_disabled_": False,
        "augment#location_scale#_disabled_": False,
        "val_fraction": 0.0,
    }
    batch = run(
        cfg("train", task), meta=META_CARDIAC if task == "cardiac" else META, bundle_root=str(tmp_path / "b"), dataset_dir=str(tmp_path / "data" / task),
        train_domains=["A" if task == "cardiac" else "SynthA"], keep="train#dataset", **overrides,
    )
    assert isinstance(batch[0], list) and len(batch[0]) == 2  # two views per item
    assert any(p.name.startswith("checkpoint") for p in (tmp_path / "b" / "models" / task).iterdir())


@pytest.mark.parametrize("shape", [(1, 64, 64), (1, 64, 64, 5)])
@pytest.mark.parametrize("zoom", [0.7, 1.2])
def test_input_zoom_keeps_the_size_and_inverts(shape, zoom):
    from monai.data import MetaTensor

    from emclip.data import ZoomInPlaned

    image = torch.zeros(shape)
    image[:, 16:48, 20:44] = 1.0  # a centred block, inside the crop of a 1.2 zoom
    t = ZoomInPlaned("image", zoom)
    out = t({"image": MetaTensor(image.clone())})
    assert out["image"].shape == image.shape
    inside = float(out["image"].sum()) / float(image.sum())
    assert inside == pytest.approx(zoom**2, rel=0.15)  # the block's area scales in plane only
    back = t.inverse(out)["image"]
    assert back.shape == image.shape
    assert float(((back > 0.5) == (image > 0.5)).float().mean()) > 0.97
