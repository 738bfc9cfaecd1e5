"""Packaged Model Zoo bundles: generated configs, the Model Zoo checks, and a training run, all with
the bundle's own copy of the code (the repository's `emclip` cannot be imported by the runs)."""

import json
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from monai.bundle import ConfigParser

from emclip.packaging import (
    BUNDLE_NAMES,
    REQUIRED_FILES,
    package,
    verify_minimal,
    write_untrained_weights,
)

SHAPES = {"fundus": [1, 3, 256, 256], "cardiac": [1, 1, 192, 192]}


def bundle_python(bundle: Path, *args: str, timeout: int = 180) -> str:
    """Run Python in ``bundle`` as a user who installed only the required packages would.

    ``-S`` skips site-packages' .pth files, among them the repository's editable install, and
    PYTHONPATH gives back site-packages itself: MONAI, torch and the others import, `emclip` only
    from the bundle's scripts/.
    """
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    result = subprocess.run([sys.executable, "-S", *args], cwd=bundle, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


# `python -m monai.bundle <command> ...` for several commands in one process: importing MONAI takes
# most of a call's time on 2 CPU cores, and each command is parsed by fire exactly as on the CLI.
MONAI_CLI = """
import json, sys
import fire
import monai.bundle.__main__ as cli
for argv in json.loads(sys.argv[1]):
    fire.Fire(cli, command=argv)
"""


def monai_bundle(bundle: Path, *commands: list[str], timeout: int = 180) -> str:
    """Run ``python -m monai.bundle`` commands in ``bundle`` (see :func:`bundle_python`)."""
    return bundle_python(bundle, "-c", MONAI_CLI, json.dumps(commands), timeout=timeout)


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


@pytest.mark.parametrize("task", list(BUNDLE_NAMES))
def test_model_zoo_checks(bundles, task, tmp_path):
    """ci/verify_bundle.py's checks of the Model Zoo, with the same MONAI commands."""
    bundle = bundles[task]
    meta = ["--meta_file", "configs/metadata.json"]
    infer = [*meta, "--config_file", "configs/inference.yaml"]
    ts = tmp_path / "model.ts"
    monai_bundle(
        bundle,
        ["verify_metadata", *meta, "--filepath", "configs/meta_schema.json"],
        ["verify_net_in_out", "network_def", *infer, "--device", "cpu"],
        ["ckpt_export", "network_def", "--filepath", str(ts), "--ckpt_file", "models/model.pt", *infer,
         "--use_trace", "True", "--input_shape", str(SHAPES[task])],
    )
    traced = torch.jit.load(str(ts))
    channels = json.loads((bundle / "configs" / "metadata.json").read_text())["network_data_format"]
    assert traced(torch.rand(SHAPES[task])).shape[1] == channels["outputs"]["pred"]["num_channels"]


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
