"""Packaged Model Zoo bundles: generated configs, the Model Zoo checks, and a training run, all with
the bundle's own copy of the code (the repository's `emclip` cannot be imported by the runs)."""

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from monai.bundle import ConfigParser

from emclip.packaging import (
    BUNDLE_NAMES,
    REQUIRED_FILES,
    package,
    verify_minimal,
    write_untrained_weights,
)

SHAPES = {"fundus": [1, 3, 256, 256], "cardiac": [1, 1, 192, 192]}


def bundle_python(bundle: Path, *args: str, timeout: int = 180, path: tuple[str, ...] = ()) -> str:
    """Run Python in ``bundle`` as a user who installed only the required packages would.

    ``-S`` skips site-packages' .pth files, among them the repository's editable install, and
    PYTHONPATH gives back site-packages itself (after ``path``): MONAI, torch and the others
    import, `emclip` only from the bundle's scripts/.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*path, sysconfig.get_paths()["purelib"]])}
    result = subprocess.run([sys.executable, "-S", *args], cwd=bundle, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """Both bundles, each with a checkpoint of the packaged inference architecture."""
    out = tmp_path_factory.mktemp("packaged")
    for task in BUNDLE_NAMES:
        package([task], out, write_untrained_weights(task, out / f"{task}.pt"))
    return {task: out / name for task, name in BUNDLE_NAMES.items()}


@pytest.mark.parametrize("task", list(BUNDLE_NAMES))
def test_layout_and_generated_configs(bundles, task):
    bundle = bundles[task]
    verify_minimal(bundle)
    assert (bundle / "models" / "model.pt").is_file()
    assert (bundle / "scripts" / "emclip" / "prompts" / f"{task}.json").is_file()
    assert not list(bundle.rglob("__pycache__")) and not (bundle / "scripts" / "emclip" / "packaging").exists()
    with zipfile.ZipFile(bundle.with_suffix(".zip")) as archive:
        names = set(archive.namelist())
    assert {f"{bundle.name}/{f}" for f in REQUIRED_FILES} <= names

    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    channels = metadata["network_data_format"]["outputs"]["pred"]["num_channels"]
    configs = {f: yaml.safe_load((bundle / "configs" / f).read_text()) for f in ("train.yaml", "inference.yaml")}
    for config in configs.values():
        assert config["imports"][0] == "$import scripts" and config["bundle_root"] == "."
        assert config["task"] == task and config["num_classes"] == channels
    assert configs["inference.yaml"]["ckpt_path"] == "$@bundle_root + '/models/model.pt'"
    # the overlay chain resolves as the repository's chain with the task overlay last
    chain = ConfigParser.load_config_files([str(bundle / "configs" / f) for f in ("train.yaml", "evaluate.yaml")])
    parser = ConfigParser(chain)
    assert parser.get_parsed_content("output_dir") == "./eval"
    assert parser.get_parsed_content("ckpt_path") == "./models/model.pt"
    assert parser["validate#dataset#data"] == "$@splits['eval']" and parser["task"] == task


def test_packaged_docs_links_resolve(bundles):
    """The model card's links (the benchmark report, its tables and plots) work inside the bundle."""
    docs = bundles["cardiac"] / "docs"
    links = [(page, target) for page in ("README.md", "benchmarks.md")
             for target in re.findall(r"\]\(([^)#]+)\)", (docs / page).read_text()) if "://" not in target]
    assert ("README.md", "benchmarks.md") in links and len(links) > 5
    assert [link for link in links if not (docs / link[1]).exists()] == []


def test_scripts_copy_is_the_imported_package(bundles):
    bundle = bundles["fundus"]
    with pytest.raises(AssertionError, match="No module named 'emclip'"):
        bundle_python(bundle, "-c", "import emclip")
    printed = bundle_python(bundle, "-c", "import scripts, emclip; print(emclip.__file__)")
    assert Path(printed.strip()) == bundle / "scripts" / "emclip" / "__init__.py"


# The Model Zoo's `ci/verify_bundle.py -b <bundle> -m full`, call by call with its arguments, run
# from a zoo-like folder (`models/<bundle>`, `models/model_info.json`), after what its
# `ci/prepare_schema.py` does (the schema copied to `eval/schema.json`; here the offline copy).
# Then the scripted export is compared with the eager network at two input sizes.
ZOO_VERIFY = """
import json, os, sys
import torch
from monai.apps.utils import download_url
from monai.bundle import ckpt_export, verify_metadata, verify_net_in_out
from monai.bundle.config_parser import ConfigParser

bundle, models_path = sys.argv[1], "models"
sys.path = [os.path.join(models_path, bundle)] + sys.path
bundle_path = os.path.join(models_path, bundle)
meta_file = os.path.join(bundle_path, "configs/metadata.json")

# verify_bundle_directory (full mode: large files are downloaded first)
parser = ConfigParser()
parser.read_config(os.path.join(bundle_path, "large_files.yml"))
for lf_data in parser.get()["large_files"]:
    lf_data["fuzzy"] = True
    lf_data["filepath"] = os.path.join(bundle_path, lf_data.pop("path"))
    download_url(**lf_data)
for file in ["configs/metadata.json", "LICENSE", "models/model.pt"]:
    assert os.path.exists(os.path.join(bundle_path, file)), file
names = os.listdir(os.path.join(bundle_path, "configs"))
(config_name,) = [f"inference.{s}" for s in ("json", "yaml", "yml") if f"inference.{s}" in names]
config_file = os.path.join("configs", config_name)

# verify_version_changes
metadata = json.load(open(meta_file))
assert metadata["version"] in metadata["changelog"]
assert f"{bundle}_v{metadata['version']}" not in json.load(open(os.path.join(models_path, "model_info.json")))

# verify_metadata_format
verify_metadata(meta_file=meta_file, filepath=os.path.join(bundle_path, "eval/schema.json"))

# verify_bundle_properties: the zoo has no bundle_properties.py for the supported app
# (monai-label), so it checks no property

# verify_data_shape
verify_net_in_out(net_id="network_def", meta_file=meta_file, config_file=os.path.join(bundle_path, config_file),
                  bundle_root=bundle_path)

# verify_torchscript: ckpt_export without use_trace scripts the network
ts_path = os.path.join(bundle_path, "models/verify_model.ts")
ckpt_export(net_id="network_def", filepath=ts_path, ckpt_file=os.path.join(bundle_path, "models", "model.pt"),
            meta_file=meta_file, config_file=os.path.join(bundle_path, config_file), bundle_root=bundle_path)
if os.path.exists(os.path.join(bundle_path, "models", "model.ts")):
    torch.jit.load(os.path.join(bundle_path, "models", "model.ts"))

# not the zoo's: the scripted network against the eager one (any valid size runs: not traced)
parser = ConfigParser()
parser.read_config(os.path.join(bundle_path, config_file))
parser.read_meta(meta_file)
parser["bundle_root"] = bundle_path
net = parser.get_parsed_content("network_def")
net.load_state_dict(torch.load(os.path.join(bundle_path, "models", "model.pt"), weights_only=True))
scripted = torch.jit.load(ts_path)
channels = metadata["network_data_format"]["inputs"]["image"]["num_channels"]
diffs = []
with torch.no_grad():
    for size in ([1, channels, 256, 256], [2, channels, 160, 224]):
        x = torch.randn(size)
        eager, out = net.eval()(x), scripted(x)
        assert out.shape == eager.shape, (out.shape, eager.shape)
        diffs.append(float((out - eager).abs().max()))
print(json.dumps({"scripted": isinstance(scripted, torch.jit.RecursiveScriptModule), "max_abs_diff": max(diffs)}))
"""


@pytest.mark.parametrize("task", list(BUNDLE_NAMES))
def test_model_zoo_verify_bundle_full_mode(bundles, task, tmp_path):
    """The zoo's full-mode verification passes, scripted export included, and the script matches eager."""
    name = bundles[task].name
    bundle = tmp_path / "models" / name
    shutil.copytree(bundles[task], bundle)
    (bundle / "eval").mkdir()
    shutil.copy2(bundle / "configs" / "meta_schema.json", bundle / "eval" / "schema.json")
    (tmp_path / "models" / "model_info.json").write_text("{}")
    printed = bundle_python(tmp_path, "-c", ZOO_VERIFY, name, timeout=300)
    result = json.loads(printed.strip().splitlines()[-1])
    assert result["scripted"] and result["max_abs_diff"] <= 1e-5, result
    assert (bundle / "models" / "verify_model.ts").is_file()


def test_packaged_fundus_trains(tmp_path):
    """The zip, unpacked elsewhere and without weights, trains and writes models/model.pt."""
    from emclip.data import write_synthetic

    write_synthetic(tmp_path / "data", "fundus", per_domain=4, image_size=96, progress=False)
    (archive_path,) = package(["fundus"], tmp_path / "zips")
    with zipfile.ZipFile(archive_path) as archive:
        archive.extractall(tmp_path / "unpacked")
    bundle = tmp_path / "unpacked" / BUNDLE_NAMES["fundus"]
    assert (bundle / "models").is_dir() and not (bundle / "models" / "model.pt").exists()
    bundle_python(bundle, "-m", "monai.bundle", "run", "training", "--meta_file", "configs/metadata.json",
                  "--config_file", "configs/train.yaml", "--logging_file", "configs/logging.conf",
                  "--dataset_dir", str(tmp_path / "data" / "fundus"), "--train_domains", "['SynthA']",
                  "--epochs", "1", "--batch_size", "2", "--num_workers", "0", "--spatial_size", "[64, 64]",
                  "--network_def#em_bases", "8")
    assert (bundle / "models" / "model.pt").is_file()


def test_command_says_what_to_do_without_weights(tmp_path, capsys):
    from emclip.packaging.__main__ import main

    main(["--task", "fundus", "--output", str(tmp_path)])
    out = capsys.readouterr().out
    bundle = tmp_path / BUNDLE_NAMES["fundus"]
    assert f"no {bundle}/models/model.pt: MONAI Label serves no model" in out
    assert "--ckpt" in out and "restart the server" in out
    ckpt = write_untrained_weights("fundus", tmp_path / "fundus.pt")
    main(["--task", "fundus", "--output", str(tmp_path), "--ckpt", str(ckpt)])
    assert "models/model.pt:" not in capsys.readouterr().out and (bundle / "models" / "model.pt").is_file()


@pytest.mark.parametrize("task", list(BUNDLE_NAMES))
def test_metadata_versions_are_the_installed_ones(bundles, task):
    """The Model Zoo installs `monai==monai_version`, `torch==pytorch_version`, ...: the tested ones."""
    metadata = json.loads((bundles[task] / "configs" / "metadata.json").read_text())
    installed = {d: importlib.metadata.version(d).split("+")[0] for d in ("monai", "torch", "numpy")}
    assert [metadata["monai_version"], metadata["pytorch_version"], metadata["numpy_version"]] == list(installed.values())
    assert {"open_clip_torch", "pytorch-ignite", "torchvision"} <= set(metadata["required_packages_version"])
    for dist, version in metadata["required_packages_version"].items():
        assert version == importlib.metadata.version(dist).split("+")[0], dist


def test_minimum_versions_match_setup_cfg():
    import configparser

    from emclip import MINIMUM_VERSIONS

    setup = configparser.ConfigParser()
    setup.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    requires = setup["options"]["install_requires"].split()
    for dist, oldest in MINIMUM_VERSIONS.items():
        assert any(re.fullmatch(rf"{dist}(\[\w+\])?>={re.escape(oldest)}", r) for r in requires), (dist, requires)


def test_old_dependency_is_refused_with_one_line(bundles, tmp_path):
    """A MONAI or open_clip older than supported stops the bundle with one line, not a traceback."""
    from emclip import UnsupportedVersionError, check_versions

    with pytest.raises(UnsupportedVersionError, match=r"needs open_clip_torch >= 99\.1, found .*'open_clip_torch>=99\.1'"):
        check_versions({"open_clip_torch": "99.1"})
    check_versions()  # the installed ones pass
    # an older MONAI's metadata first on the path, as pip would leave it
    old = tmp_path / "old" / "monai-1.3.0.dist-info"
    old.mkdir(parents=True)
    (old / "METADATA").write_text("Metadata-Version: 2.1\nName: monai\nVersion: 1.3.0\n")
    env = {**os.environ, "PYTHONPATH": f"{old.parent}{os.pathsep}{sysconfig.get_paths()['purelib']}"}
    result = subprocess.run(
        [sys.executable, "-S", "-m", "monai.bundle", "run", "inferring", "--meta_file", "configs/metadata.json",
         "--config_file", "configs/inference.yaml", "--input_dir", str(tmp_path)],
        cwd=bundles["fundus"], env=env, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: EM-CLIP needs monai >= 1.4, found 1.3.0: run pip install 'monai>=1.4'"
    )
    assert "Traceback" not in result.stderr + result.stdout


def test_packaged_bundle_exports_and_infers_with_onnx_runtime(tmp_path):
    """README's export command in a packaged bundle, then inference through ONNX Runtime (the
    inference_onnx.yaml overlay) writes the masks the PyTorch network writes."""
    from emclip.data import write_synthetic

    # untrained, with the class text embeddings: the masks vary over the image
    ckpt = write_untrained_weights("fundus", tmp_path / "fundus.pt", encode_text=True)
    (archive,) = package(["fundus"], tmp_path / "dist", ckpt)
    bundle = archive.with_suffix("")
    printed = bundle_python(bundle, "-m", "emclip.export", "--config_file", "configs/inference.yaml",
                            "--ckpt_file", "models/model.pt", "--output", "models/model", path=("scripts",))
    assert printed.count("max |logit - eager|") == 2 and (bundle / "models" / "model.onnx").is_file()
    assert (bundle / "models" / "model.pt2").is_file()
    write_synthetic(tmp_path / "data", "fundus", per_domain=1, image_size=96, progress=False)
    images = tmp_path / "data" / "fundus" / "SynthA" / "train" / "image"
    masks = {}
    for name, configs in (("torch", "configs/inference.yaml"),
                          ("onnx", "['configs/inference.yaml','configs/inference_onnx.yaml']")):
        bundle_python(bundle, "-m", "monai.bundle", "run", "inferring", "--meta_file", "configs/metadata.json",
                      "--config_file", configs, "--input_dir", str(images), "--output_dir", str(tmp_path / name))
        masks[name] = {p.name: np.asarray(Image.open(p)) for p in sorted((tmp_path / name).glob("*.png"))}
    assert list(masks["onnx"]) == list(masks["torch"]) == [p.name for p in sorted(images.glob("*.png"))]
    for name, mask in masks["torch"].items():
        assert len(np.unique(mask)) > 1  # not one class everywhere
        # logits within the export tolerance: only a near-tie pixel could take the other class
        assert np.mean(masks["onnx"][name] != mask) < 1e-3, name
