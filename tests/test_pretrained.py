"""Pretrained CLIP without internet: EM-CLIP built from a local open_clip checkpoint of a named
architecture, the error for an unreachable tag, and the ViT-B/16 overlay (clip_vit_b16.yaml)."""

import time

import open_clip
import pytest
import torch
from monai.bundle import ConfigParser
from test_bundle import CONFIGS

from emclip.networks import EMCLIP, build_clip


def save_random_clip(name: str, path) -> dict[str, torch.Tensor]:
    """A random open_clip ``name`` saved as a checkpoint (half precision: half the file); return it."""
    state = {k: v.half() for k, v in open_clip.create_model(name).state_dict().items()}
    torch.save({"state_dict": state}, path)
    return state


def assert_image_tower_from(net: EMCLIP, state: dict[str, torch.Tensor]) -> None:
    tower = net.backbone.visual.state_dict()
    assert tower
    for key, value in tower.items():
        assert torch.equal(value, state[f"visual.{key}"].to(value.dtype)), key


@pytest.fixture(scope="module")
def vit_b16(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "vit_b16.pt"
    return path, save_random_clip("ViT-B-16", path)


def test_rn50_from_a_local_file(tmp_path):
    state = save_random_clip("RN50", tmp_path / "rn50.pt")
    net = EMCLIP(3, backbone="RN50", pretrained=str(tmp_path / "rn50.pt"), em_bases=8, decoder_channels=32)
    assert_image_tower_from(net, state)


def test_unreachable_tag_offline_says_to_pass_a_local_file(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as HF_HUB_OFFLINE=1 does
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"pretrained='openai' of 'RN50'.*pass the local path .* as `pretrained`"):
        build_clip("RN50", "openai")
    assert time.perf_counter() - start < 30  # no download retries
    with pytest.raises(FileNotFoundError, match=r"'no_such_tag' is neither a local checkpoint file nor .*openai"):
        build_clip("RN50", "no_such_tag")


def overlay(workflow: str, task: str) -> ConfigParser:
    files = [str(CONFIGS / f) for f in (f"{workflow}.yaml", f"{task}.yaml", "clip_vit_b16.yaml")]
    parser = ConfigParser(ConfigParser.load_config_files(files))
    parser["network_def#em_bases"] = 8
    return parser


def test_overlay_builds_the_pretrained_network_for_training_and_inference(vit_b16):
    path, state = vit_b16
    train = overlay("train", "fundus")
    train["pretrained"] = str(path)
    train["device"] = "$torch.device('cpu')"
    assert train.get_parsed_content("spatial_size") == [224, 224]
    assert train.get_parsed_content("amp") is False  # on with CUDA only
    optimizer = train.get_parsed_content("optimizer")
    rates = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert rates["image/decay"] == pytest.approx(1e-5) and rates["decoder/decay"] == pytest.approx(1e-4)
    assert not any(name.startswith("text/") for name in rates)
    assert isinstance(train.get_parsed_content("lr_scheduler"), torch.optim.lr_scheduler.SequentialLR)
    network = train.get_parsed_content("network").eval()
    assert_image_tower_from(network, state)
    served = overlay("inference", "fundus").get_parsed_content("network_def").eval()
    served.load_state_dict(network.state_dict())  # strict: the two configs build one architecture
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(served(x), network(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("workflow", ["train", "inference"])
def test_overlay_applies_to_cardiac(workflow):
    parser = overlay(workflow, "cardiac")
    assert parser.get_parsed_content("backbone") == "ViT-B-16"
    assert parser.get_parsed_content("base_inferer#roi_size") == [224, 224]  # slice by slice at the overlay's size
    assert parser.get_parsed_content("network_def#in_channels") == 1
    assert parser.get_parsed_content("normalize") is True


def test_packaged_bundles_carry_the_overlay(tmp_path):
    from emclip.packaging import BUNDLE_NAMES, package

    package(["cardiac"], tmp_path)
    configs = tmp_path / BUNDLE_NAMES["cardiac"] / "configs"
    assert (configs / "clip_vit_b16.yaml").read_text() == (CONFIGS / "clip_vit_b16.yaml").read_text()
    for workflow in ("train", "inference"):
        parser = ConfigParser(ConfigParser.load_config_files([str(configs / f"{workflow}.yaml"),
                                                              str(configs / "clip_vit_b16.yaml")]))
        assert parser["task"] == "cardiac" and parser["backbone"] == "ViT-B-16" and parser["spatial_size"] == [224, 224]


def test_a_wrong_local_file_is_named(tmp_path):
    path = tmp_path / "not_rn50.pt"
    torch.save({"visual.conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(RuntimeError, match=r"could not load the checkpoint pretrained='.*not_rn50.pt' into 'RN50'"):
        build_clip("RN50", str(path))
