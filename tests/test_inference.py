"""Test-time steps (emclip.inference): mirroring ensemble, post-processing, TENT, disc-centred
refinement and uncertainty, as building blocks and through the bundle's configs."""

import copy
import csv
import logging

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import REPO, tiny_net
from monai.bundle import ConfigWorkflow
from monai.inferers import SliceInferer
from monai.transforms import Compose
from PIL import Image
from scipy import ndimage

from emclip.data import CLIP_MEAN, CLIP_STD, read_fundus_label, write_fundus_photos, write_synthetic
from emclip import inference
from emclip.inference import DiscRefiner, largest_component, predictive_entropy
from emclip.inference.choose_postprocessing import postprocess_steps
from emclip.networks import EMCLIP

CONFIGS = REPO / "bundle" / "configs"
META = str(CONFIGS / "metadata.json")
META_CARDIAC = [META, str(CONFIGS / "metadata_cardiac.json")]
TINY = {"spatial_size": [64, 64], "network_def#em_bases": 8, "num_workers": 0}


def cfg(*names):
    return [str(CONFIGS / f"{n}.yaml") for n in names]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class Identity(nn.Module):
    """Logits = the input: flip-equivariant, so a mirroring ensemble must give softmax(x) exactly."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


@pytest.mark.parametrize("volume", [False, True])
def test_flips_are_undone_exactly(volume):
    x = torch.randn(1, 3, 12, 9, 5) if volume else torch.randn(1, 3, 12, 9)  # asymmetric in every axis
    base = SliceInferer(roi_size=(12, 9), spatial_dim=2, progress=False) if volume else None
    net = Identity()
    probs = inference.TestTimeInferer(base, flips=True)(x, net)
    torch.testing.assert_close(probs, torch.softmax(x, 1), atol=1e-6, rtol=0)
    # four in-plane flips; a volume's slice axis is not mirrored (each slice is one call)
    assert net.calls == (4 * 5 if volume else 4)



def test_gamma_ensemble_averages_the_curves_of_each_channels_range():
    x = torch.rand(1, 2, 6, 5)
    x[:, :, 0, 0], x[:, :, 0, 1] = 0.0, 1.0  # each channel spans [0, 1]: the curve is x ** g
    net = Identity()
    probs = inference.TestTimeInferer(gammas=[0.5, 1.0, 2.0])(x, net)
    expected = sum(torch.softmax(x**g, 1) for g in (0.5, 1.0, 2.0)) / 3
    torch.testing.assert_close(probs, expected, atol=1e-6, rtol=0)
    assert net.calls == 3
    # after an affine normalisation the curve is the same one, mapped by it
    shifted = inference.gamma_ensemble(lambda t: t, 4 * x - 1, [2.0])
    torch.testing.assert_close(shifted, 4 * x**2 - 1, atol=1e-5, rtol=0)
    # [1.0] is one plain pass
    plain = Identity()
    torch.testing.assert_close(inference.TestTimeInferer(gammas=[1.0])(x, plain), torch.softmax(x, 1))
    assert plain.calls == 1


def test_gamma_ensemble_gives_every_slice_of_a_volume_the_same_curve():
    x = torch.rand(1, 2, 8, 7, 4)
    x[..., 0] *= 0.5  # the first slice alone would span a narrower range
    x[:, :, 0, 0, 1], x[:, :, 0, 1, 1] = 0.0, 1.0
    base = SliceInferer(roi_size=(8, 7), spatial_dim=2, progress=False)
    probs = inference.TestTimeInferer(base, gammas=[2.0], flips=True)(x, Identity())
    torch.testing.assert_close(probs, torch.softmax(x**2, 1), atol=1e-6, rtol=0)



@pytest.mark.parametrize("files", [("inference", "cardiac"), ("inference", "fundus"), ("train", "evaluate", "fundus")])
def test_tta_gammas_reach_the_inferer_from_the_config(files):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(cfg(*files))
    assert parser.get_parsed_content("inferer").gammas == [1.0]  # off unless asked for
    parser["tta#gammas"] = [0.67, 1.0, 1.5]
    assert parser.get_parsed_content("inferer", lazy=False).gammas == [0.67, 1.0, 1.5]

@pytest.mark.parametrize("gammas", [[], [0.0], [1.0, -0.5], [float("nan")]])
def test_gamma_ensemble_rejects_gammas_that_are_not_positive(gammas):
    with pytest.raises(ValueError, match=r"tta#gammas must be a non-empty list of positive numbers"):
        inference.TestTimeInferer(gammas=gammas)

def _blobs(rng, shape, values, count=6):
    """A random label map of overlapping blobs with holes: fragments and holes to clean up."""
    grid = np.indices(shape).astype(float)
    label = np.zeros(shape, np.int64)
    for value in values:
        for _ in range(count):
            centre = rng.uniform(0, shape[0], len(shape))[:, None, None] if len(shape) == 2 else rng.uniform(0, shape[0], 3)[:, None, None, None]
            radius = rng.uniform(2, shape[0] / 4)
            label[np.sqrt(((grid - centre) ** 2).sum(0)) < radius] = value
    label[rng.uniform(size=shape) < 0.05] = 0  # pepper: holes
    return label


@pytest.fixture(scope="module")
def steps():
    """The post-processing steps of the task overlays, each switched on."""
    return {task: postprocess_steps(task) for task in ("fundus", "cardiac")}


def postprocess(label, steps, *names):
    """``label`` (spatial, no channel) after the named steps, in their config order."""
    chain = Compose([step for name, step in steps.items() if name in names])
    return np.asarray(chain({"pred": torch.as_tensor(label[None], dtype=torch.float32)})["pred"])[0].astype(label.dtype)


def test_postprocess_adds_no_foreground_but_holes_and_keeps_the_cup_in_the_disc(steps):
    rng = np.random.default_rng(0)
    fundus, cardiac = steps["fundus"], steps["cardiac"]
    assert list(fundus) == ["largest_component", "fill_holes", "cup_in_disc"]
    assert list(cardiac) == ["largest_component", "myo_near_lv", "fill_holes"]
    for _ in range(20):
        raw = _blobs(rng, (48, 40), (1, 2))
        out = postprocess(raw, fundus, *fundus)
        disc, cup = out > 0, out == 2
        assert not (disc & ~ndimage.binary_fill_holes(raw > 0)).any()
        assert not (cup & ~ndimage.binary_fill_holes(raw == 2)).any()
        assert not (cup & ~disc).any()
        assert ndimage.label(disc, np.ones((3, 3)))[1] <= 1
        assert ndimage.label(cup, np.ones((3, 3)))[1] <= 1
        assert not (cup & ~largest_component(disc)).any()
        np.testing.assert_array_equal(postprocess(raw, fundus), raw)  # all off: unchanged
    for _ in range(5):
        raw = _blobs(rng, (24, 24, 6), (1, 2, 3), count=3)
        out = postprocess(raw, cardiac, *cardiac)
        for value in (2, 3):
            assert not ((out == value) & (raw != value)).any()
            assert ndimage.label(out == value, np.ones((3, 3, 3)))[1] <= 1
        lv_filled = np.stack([ndimage.binary_fill_holes(raw[..., k] == 1) for k in range(raw.shape[-1])], -1)
        assert not ((out == 1) & ~lv_filled).any()


def test_postprocess_steps_one_by_one(steps):
    fundus = steps["fundus"]
    label = np.zeros((30, 30), np.int64)
    label[2:14, 2:14] = 1
    label[5:11, 5:11] = 2        # cup of the large disc, with a hole
    label[7, 7] = 0
    label[20:25, 20:25] = 2      # a fragment: cup pixels only, outside the large disc
    out = postprocess(label, fundus, "fill_holes")
    assert out[7, 7] == 2 and (out[20:25, 20:25] == 2).all()
    out = postprocess(label, fundus, "cup_in_disc")
    assert (out[20:25, 20:25] == 1).all()          # the stray cup stays disc, as rim
    assert out[5, 5] == 2
    out = postprocess(label, fundus, "largest_component")
    assert (out[20:25, 20:25] == 0).all() and out[5, 5] == 2
    # slice by slice: a hole open through the stack is filled in each slice, not in the volume
    tube = np.zeros((9, 9, 4), np.int64)
    tube[2:7, 2:7] = 1
    tube[4, 4] = 0
    assert (postprocess(tube, steps["cardiac"], "fill_holes")[4, 4] == 1).all()
    assert (postprocess(tube, {"volume": inference.FillLabelHolesd("pred", labels=[1])}, "volume")[4, 4] == 0).all()


def test_postprocess_blocks_take_any_labels():
    # a task of its own: structure 3 inside structure {1, 3}, with label 2 elsewhere
    label = np.zeros((20, 20), np.int64)
    label[2:12, 2:12] = 1
    label[4:8, 4:8] = 3
    label[15:18, 15:18] = 3     # stray inner pixels: become the outer structure's other label, 1
    label[14:19, 2:6] = 2
    label[16, 4] = 0            # a hole of label 2
    chain = Compose([inference.FillLabelHolesd("pred", labels=[2]), inference.KeepLargestInsided("pred", inner=3, outer=[1, 3])])
    out = np.asarray(chain({"pred": label[None]})["pred"])[0]
    assert out[16, 4] == 2 and (out[15:18, 15:18] == 1).all() and (out[4:8, 4:8] == 3).all()
    with pytest.raises(ValueError, match="give fill"):
        inference.KeepLargestInsided("pred", inner=[1, 2], outer=[1, 2])
    with pytest.raises(ValueError, match="labels"):
        inference.FillLabelHolesd("pred", labels=[])
    with pytest.raises(ValueError, match="one channel first"):
        inference.FillLabelHolesd("pred", labels=[1])({"pred": label})


def test_keep_near_label_removes_a_distant_structure_in_millimetres():
    from monai.data import MetaTensor

    label = np.zeros((40, 40, 3), np.int64)
    label[15:25, 15:25] = 2            # myocardium around ...
    label[17:23, 17:23] = 1            # ... the LV cavity, in every slice
    label[15:25, 29:32] = 2            # a band 7 to 9 pixels from the cavity, apart from the wall
    label[:, :, 2] = np.where(label[:, :, 2] == 1, 2, label[:, :, 2])  # apical slice: no cavity labelled
    step = inference.KeepNearLabeld("pred", labels=[2], anchor=[1], max_distance=10.0, slice_dim=2)
    at_1mm = np.asarray(step({"pred": label[None]})["pred"])[0]
    assert (at_1mm[15:25, 29:32, :2] == 2).all()  # within 10 mm at 1 mm pixels
    at_2mm = step({"pred": MetaTensor(label[None], affine=np.diag([2.0, 2.0, 8.0, 1.0]))})["pred"]
    out = np.asarray(at_2mm)[0]
    assert isinstance(at_2mm, MetaTensor)
    assert (out[15:25, 29:32, :2] == 0).all()   # 14 mm and more from the cavity: background
    assert (out[15:25, 15:25, :2] == label[15:25, 15:25, :2]).all()  # the wall and the cavity stay
    np.testing.assert_array_equal(out[..., 2], label[..., 2])  # no cavity in the slice: unchanged
    with pytest.raises(ValueError, match="max_distance must be > 0"):
        inference.KeepNearLabeld("pred", labels=[2], anchor=[1], max_distance=0)


def test_tent_adapts_and_restores_the_network():
    net = tiny_net().eval()
    before = copy.deepcopy(net.state_dict())
    flags = {n: p.requires_grad for n, p in net.named_parameters()}
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # as in an evaluator
        plain = inference.TestTimeInferer()(x, net)
        adapted = inference.TestTimeInferer(tent_steps=3, tent_lr=0.05)(x, net)
        again = inference.TestTimeInferer()(x, net)
    assert not torch.allclose(plain, adapted, atol=1e-4)  # the adaptation changed the prediction
    after = net.state_dict()
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, atol=0, rtol=0, msg=key)
    assert {n: p.requires_grad for n, p in net.named_parameters()} == flags
    assert not any(m.training for m in net.modules())
    torch.testing.assert_close(again, plain, atol=0, rtol=0)  # the next case sees the original network


def test_adabn_normalises_a_volume_with_the_statistics_of_all_its_slices():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4, momentum=0.3)
    net = nn.Sequential(conv, bn).eval()
    before = copy.deepcopy(net.state_dict())
    # 4 slices, 2 per batch, the second pair brighter: per-batch statistics would differ from the case's
    volume = torch.randn(1, 1, 16, 16, 4) + torch.tensor([0.0, 0.0, 4.0, 4.0])
    slices = SliceInferer(roi_size=(16, 16), spatial_dim=2, sw_batch_size=2, progress=False)
    with torch.no_grad(), inference.case_statistics(net, volume, lambda t: slices(t, net)):
        features = conv(volume.permute(0, 4, 1, 2, 3).reshape(4, 1, 16, 16))
        torch.testing.assert_close(bn.running_mean, features.mean((0, 2, 3)))
        assert not bn.training
        adapted = slices(volume, net)
    for key, value in before.items():
        torch.testing.assert_close(net.state_dict()[key], value, atol=0, rtol=0, msg=key)
    assert bn.momentum == 0.3 and not bn.training
    # one normalisation for the case: over the case the channel means are about 0, and the brighter
    # slices stay apart from the darker ones (each batch's own statistics would centre both at 0)
    assert adapted.mean((0, 2, 3, 4)).abs().max() < 0.05
    assert (adapted[..., 2:].mean((0, 2, 3, 4)) - adapted[..., :2].mean((0, 2, 3, 4))).abs().min() > 0.5


def test_adabn_through_the_inferer_restores_the_network_and_leaves_a_network_without_batch_norm():
    net = tiny_net().eval()
    before = copy.deepcopy(net.state_dict())
    x = torch.randn(1, 3, 64, 64) * 2 + 1  # a shifted "scanner"
    with torch.no_grad():
        plain = inference.TestTimeInferer()(x, net)
        adapted = inference.TestTimeInferer(adabn=True)(x, net)
        again = inference.TestTimeInferer()(x, net)
    assert not torch.allclose(plain, adapted, atol=1e-4)
    for key, value in before.items():
        torch.testing.assert_close(net.state_dict()[key], value, atol=0, rtol=0, msg=key)
    assert not any(m.training for m in net.modules())
    torch.testing.assert_close(again, plain, atol=0, rtol=0)
    instance = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.InstanceNorm2d(3, affine=True)).eval()
    with torch.no_grad():
        torch.testing.assert_close(inference.TestTimeInferer(adabn=True)(x, instance), inference.TestTimeInferer()(x, instance))


class DiscByColour(nn.Module):
    """Segments the synthetic disc by its red brightness (no learning): isolates the refiner."""

    def forward(self, x):
        red = x[:, 0] * CLIP_STD[0] + CLIP_MEAN[0]
        disc = (red - 0.66) * 60
        return torch.stack([-disc, disc, torch.full_like(disc, -30.0)], 1)


def _normalised(path):
    rgb = torch.from_numpy(np.asarray(Image.open(path), np.float32) / 255).permute(2, 0, 1)
    return ((rgb - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None])[None]


def test_two_pass_mode_finds_the_disc_on_a_whole_photograph(tmp_path):
    photos = write_fundus_photos(tmp_path, count=3, seed=1, image_size=512)
    refiner = DiscRefiner((128, 128), disc_fraction=0.3)
    inferer = inference.TestTimeInferer(refine=refiner)
    for path in photos:
        truth = read_fundus_label(str(path).replace("/image/", "/mask/")) > 0
        x = _normalised(path)
        with torch.no_grad():
            probs = inferer(x, DiscByColour())
        assert probs.shape == (1, 3, 512, 512)
        disc = probs[0].argmax(0).numpy() > 0
        assert 2 * (disc & truth).sum() / (disc.sum() + truth.sum()) > 0.8
        # the crop around the disc gives the disc the configured share of its pixels
        top, left, side = refiner.window(truth, truth.shape)
        assert abs(truth[top : top + side, left : left + side].mean() - 0.3) < 0.05
    assert refiner.missed == []


def test_two_pass_mode_pads_a_crop_whose_disc_is_large():
    # a disc crop zoomed in: the square that gives the disc 0.3 of its pixels is larger than the image
    yy, xx = np.mgrid[0:64, 0:80]
    truth = np.hypot(yy - 30, xx - 44) < 25
    red = np.where(truth, 0.9, 0.4)
    x = ((torch.tensor(np.stack([red, red * 0.6, red * 0.3]), dtype=torch.float32)
          - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None])[None]
    refiner = DiscRefiner((32, 32), disc_fraction=0.3)
    top, left, side = refiner.window(truth, truth.shape)
    assert side > 64 and top < 0  # centred on the disc, padded beyond the image
    with torch.no_grad():
        disc = inference.TestTimeInferer(refine=refiner)(x, DiscByColour())[0].argmax(0).numpy() > 0
    assert disc.shape == truth.shape and 2 * (disc & truth).sum() / (disc.sum() + truth.sum()) > 0.95


def test_two_pass_mode_reports_a_photograph_without_disc(caplog):
    refiner = DiscRefiner((64, 64))
    x = torch.full((1, 3, 100, 120), -1.5)
    with caplog.at_level(logging.WARNING, logger="emclip.inference"):
        probs = refiner(x, lambda t: torch.softmax(DiscByColour()(t), 1), names=["blank.png"])
    assert probs.shape == (1, 3, 100, 120)
    assert refiner.missed == ["blank.png"] and "no optic disc found in blank.png" in caplog.text


def test_predictive_entropy_needs_probabilities():
    p = torch.softmax(torch.randn(3, 8, 8), 0)
    u = predictive_entropy(p)
    assert u.shape == (1, 8, 8) and 0 <= u.min() and u.max() <= 1
    torch.testing.assert_close(predictive_entropy(torch.full((3, 2, 2), 1 / 3)), torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="probabilities"):
        predictive_entropy(torch.randn(3, 8, 8))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_synthetic(root, "fundus", per_domain=3, image_size=96, progress=False)
    write_synthetic(root, "cardiac", per_domain=1, progress=False)
    write_fundus_photos(root / "fundus", count=1, image_size=160)
    return root


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for task, (classes, channels) in {"fundus": (3, 3), "cardiac": (4, 1)}.items():
        paths[task] = root / f"{task}.pt"
        torch.save(EMCLIP(classes, em_bases=8, in_channels=channels, prompts=task, encode_text=False).state_dict(), paths[task])
    return paths


def run(files, meta=META, workflow_type="infer", **overrides):
    workflow = ConfigWorkflow(config_file=files, meta_file=meta, workflow_type=workflow_type, **overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()


def all_steps(*postprocess):
    """Overrides switching every test-time step on: the overlay's post-processing steps by name."""
    names = postprocess or ("largest_component", "fill_holes")
    return {"tta#flips": True, "tta#gammas": [0.67, 1.0, 1.5], "adabn#enabled": True, "tent#enabled": True, "uncertainty": True,
            **{f"postprocess#{n}#_disabled_": False for n in names}}


def test_uncertainty_map_has_the_input_geometry(data, ckpts, tmp_path):
    source = next((data / "fundus" / "SynthB").rglob("image/*.png"))
    image = tmp_path / "wide.png"
    Image.open(source).crop((0, 0, 96, 80)).save(image)
    run(cfg("inference", "fundus"), input_dir=str(image), output_dir=str(tmp_path / "f"), ckpt_path=str(ckpts["fundus"]),
        **TINY, **all_steps("largest_component", "fill_holes", "cup_in_disc"))
    assert Image.open(tmp_path / "f" / "wide.png").size == (96, 80)
    u = Image.open(tmp_path / "f" / "wide_uncertainty.png")
    assert u.size == (96, 80) and u.mode == "L"
    volume = sorted((data / "cardiac").glob("*_sa_ED.nii.gz"))[0]
    run(cfg("inference", "cardiac"), meta=META_CARDIAC, input_dir=str(volume), output_dir=str(tmp_path / "c"),
        ckpt_path=str(ckpts["cardiac"]), **TINY, **all_steps(), **{"spacing": 3.0})
    name = volume.name.replace(".nii.gz", "")
    source, seg, u = (nib.load(p) for p in (volume, tmp_path / "c" / f"{name}_seg.nii.gz", tmp_path / "c" / f"{name}_uncertainty.nii.gz"))
    assert seg.shape == u.shape == source.shape
    np.testing.assert_allclose(u.affine, source.affine, atol=1e-4)
    values = u.get_fdata()
    assert 0 <= values.min() and values.max() <= 1 + 1e-5 and values.max() > 0  # resampled back in float


def test_refine_mode_through_the_inference_config(data, ckpts, tmp_path):
    photo = next((data / "fundus" / "SynthPhoto").rglob("image/*.png"))
    run(cfg("inference", "fundus"), input_dir=str(photo), output_dir=str(tmp_path), ckpt_path=str(ckpts["fundus"]),
        **TINY, **{"refine#enabled": True, "tta#flips": True})
    assert Image.open(tmp_path / photo.name).size == Image.open(photo).size


def test_evaluation_with_uncertainty_scores_and_correlation(data, ckpts, tmp_path):
    common = {"bundle_root": str(tmp_path), "ckpt_path": str(ckpts["fundus"]), "output_dir": str(tmp_path / "eval"),
              "dataset_dir": str(data / "fundus"), "train_domains": ["SynthA"], "eval_domains": ["SynthB"], **TINY}
    run(cfg("train", "evaluate", "fundus"), workflow_type="train", **common, **all_steps())
    rows = read_csv(tmp_path / "eval" / "metrics_per_case.csv")
    assert list(rows[0]) == ["domain", "case", "class", "dice", "hd95", "size_ratio", "uncertainty"]
    assert all(0 <= float(r["uncertainty"]) <= 1 for r in rows)
    correlation = read_csv(tmp_path / "eval" / "uncertainty_correlation.csv")
    assert {(r["domain"], r["class"]) for r in correlation} == {(d, c) for d in ("SynthB", "all") for c in ("OD", "OC")}
    assert "Uncertainty against Dice" in (tmp_path / "eval" / "metrics_summary.md").read_text()
    run(cfg("train", "evaluate", "cardiac"), meta=META_CARDIAC, workflow_type="train",
        **{**common, "ckpt_path": str(ckpts["cardiac"]), "dataset_dir": str(data / "cardiac"), "train_domains": ["A"],
           "eval_domains": ["B"], "spacing": 3.0}, **all_steps())
    rows = read_csv(tmp_path / "eval" / "metrics_per_case.csv")
    assert {r["class"] for r in rows} == {"LV", "MYO", "RV"} and "uncertainty" in rows[0]


def test_reports_correlate_the_uncertainty_score_with_dice(tmp_path):
    from emclip.reports import uncertainty_correlation, write_reports

    fundus = {"OD": {"labels": [1, 2], "name": "optic disc"}, "OC": {"labels": [2], "name": "optic cup"}}

    rows = [{"domain": d, "case": f"c{i}", "class": c, "dice": 1 - 0.1 * i, "hd95": 1.0, "uncertainty": 0.05 * i}
            for d in ("B", "C") for i in range(5) for c in ("OD", "OC")]
    rows[0] = {**rows[0], "uncertainty": 0.12}  # the best OD case of B ranked third most uncertain: rho -0.7
    rho = {(e["domain"], e["class"]): e["spearman"] for e in uncertainty_correlation(rows, fundus)}
    assert rho[("C", "OD")] == pytest.approx(-1.0) and rho[("B", "OD")] == pytest.approx(-0.7)
    paths = write_reports(rows, tmp_path, fundus)
    assert list(read_csv(paths["per_case_csv"])[0]) == ["domain", "case", "class", "dice", "hd95", "uncertainty"]
    assert {r["metric"] for r in read_csv(paths["summary_csv"])} == {"dice", "hd95", "uncertainty"}
    assert len(read_csv(paths["correlation_csv"])) == 3 * 2  # B, C, all x OD, OC
    with pytest.raises(ValueError, match="'uncertainty' value and others not; give it for every case or none"):
        write_reports(rows + [{"domain": "B", "case": "x", "class": "OD", "dice": 1.0, "hd95": 0.0}], tmp_path, fundus)
