"""Build per-task Model Zoo style bundles from the repository's bundle (``bundle/``, ``custom/emclip``)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import yaml
from monai.bundle import ConfigParser
from monai.bundle.utils import merge_kv

from emclip.configs import REPO, meta_files, overlay_file

__all__ = [
    "BUNDLE_NAMES",
    "REQUIRED_FILES",
    "bundle_name",
    "SCRIPTS_INIT",
    "build_bundle",
    "installed_version",
    "package",
    "packaged_configs",
    "packaged_metadata",
    "verify_minimal",
    "write_untrained_weights",
]

SOURCE = REPO / "bundle"
PACKAGE = Path(__file__).resolve().parents[1]

BUNDLE_NAMES = {"fundus": "emclip_fundus_segmentation", "cardiac": "emclip_cardiac_mri_segmentation"}


def bundle_name(task: str | Path) -> str:
    """The packaged bundle's name: the built-in tasks' Zoo names, else ``emclip_<overlay name>_segmentation``."""
    return BUNDLE_NAMES.get(str(task), f"emclip_{Path(task).stem}_segmentation")
WORKFLOW_CONFIGS = ("train.yaml", "evaluate.yaml", "inference.yaml", "multi_gpu_train.yaml")
REQUIRED_FILES = (
    "configs/metadata.json",
    "configs/meta_schema.json",
    "configs/logging.conf",
    *(f"configs/{name}" for name in WORKFLOW_CONFIGS),
    "LICENSE",
    "docs/README.md",
    "docs/data_license.txt",
    "large_files.yml",
    "scripts/__init__.py",
    "scripts/emclip/__init__.py",
)
# files and folders copied as they are; the model card links the benchmark report and its results folder;
# the pretrained-CLIP overlay applies to any task's configs
COPIED = ("LICENSE", "large_files.yml", "docs/README.md", "docs/data_license.txt", "docs/benchmarks.md",
          "docs/benchmarks", "configs/logging.conf", "configs/meta_schema.json", "configs/clip_vit_b16.yaml",
          "configs/inference_onnx.yaml")

# A packaged bundle holds one task, so its outputs drop the per-task sub-folder and the best
# checkpoint is `models/model.pt`, where MONAI Label and the Model Zoo look for it. Each key must
# exist in the generated config: a renamed key in bundle/configs fails packaging, not a user's run.
PATHS = {
    "train.yaml": {
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/runs'",
        "ckpt_dir": "$@bundle_root + '/models'",
    },
    "evaluate.yaml": {
        "output_dir": "$@bundle_root + '/eval'",
        "ckpt_path": "$@bundle_root + '/models/model.pt'",
    },
    "inference.yaml": {
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/predictions'",
        "ckpt_path": "$@bundle_root + '/models/model.pt'",
    },
    "multi_gpu_train.yaml": {},
}

SCRIPTS_INIT = '''"""EM-CLIP custom code of this bundle.

The package lives in `scripts/emclip` and is imported as the top-level package `emclip` (its
modules import each other as `emclip.*`). Importing `scripts` puts this folder first on
`sys.path`, so the configs' first import, `$import scripts`, makes their later `$import emclip`
and `_target_: emclip...` resolve to this copy. `scripts` itself is found because the bundle
folder is on `sys.path`: MONAI Label adds it; run `python -m monai.bundle ...` from the bundle
folder, or set `PYTHONPATH=<bundle folder>`.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
'''


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Apply ``overlay`` to ``base`` as ``monai.bundle`` merges a list of config files.

    Args:
        base: the config to update (not modified).
        overlay: keys and values to apply; keys may be id paths (``a#b#c``).

    Returns:
        The merged config. An id-path key whose parent ``base`` lacks (an overlay config such as
        evaluate.yaml names train.yaml's items) is kept as it is, for the later merge at run time.
    """
    parser = ConfigParser(config=json.loads(json.dumps(base)))
    for key, value in overlay.items():
        parent = key.lstrip("+").rpartition("#")[0]
        if parent and parent not in parser:
            parser.config[key] = value
        else:
            merge_kv(parser, key, value)
    return parser.get()


def _load(path: Path) -> dict[str, Any]:
    """Read one config file as a dict.

    Args:
        path: a YAML or JSON config file.
    """
    return ConfigParser.load_config_file(str(path))


def _prompts_file(overlay: dict[str, Any]) -> Path | None:
    """The overlay's prompts JSON when it names a file (a packaged prompt set travels with ``scripts/emclip``)."""
    prompts = overlay.get("prompts")
    return Path(prompts) if isinstance(prompts, str) and os.path.isfile(prompts) else None


def packaged_configs(task: str | Path, source: Path = SOURCE) -> dict[str, dict[str, Any]]:
    """Generate the packaged workflow configs of ``task``.

    Args:
        task: an overlay name in ``source/configs`` (``fundus``, ``cardiac``, ``task_2d``) or an overlay's path.
        source: the repository's bundle folder.

    Returns:
        ``{file name: config}``: each config with the task overlay applied on top (so chains such
        as train + evaluate resolve as with the overlay last), `$import scripts` first in
        ``imports``, and paths relative to ``bundle_root`` (a prompts file is read from ``configs/``).
    """
    overlay = _load(overlay_file(task, source / "configs"))
    prompts = _prompts_file(overlay)
    if prompts is not None:
        overlay["prompts"] = f"$@bundle_root + '/configs/{prompts.name}'"
    configs = {}
    for name in WORKFLOW_CONFIGS:
        config = _merge(_load(source / "configs" / name), overlay)
        for key, value in PATHS[name].items():
            if key not in config:
                raise KeyError(f"bundle/configs/{name}: no {key!r} to make relative to bundle_root")
            config[key] = value
        if "imports" in config:
            # first, so that the `$import emclip` after it finds scripts/emclip (MONAI evaluates
            # every import statement, in order, before any other expression)
            config = {"imports": ["$import scripts"] + [i for i in config["imports"] if i != "$import scripts"],
                      **{k: v for k, v in config.items() if k != "imports"}}
        configs[name] = config
    return configs


def write_untrained_weights(task: str, path: Path, encode_text: bool = False) -> Path:
    """Save the state_dict of an untrained packaged inference network of ``task`` to ``path``.

    It loads as ``models/model.pt`` does: for checks and timings, whose results do not depend on the
    weights' values.

    Args:
        task: ``fundus`` or ``cardiac``.
        path: the file to write.
        encode_text: encode the class prompts into the text buffer, as a training run starts
            (otherwise it is zeros and every pixel gets the same class, which uncertainty
            scoring cannot rank).
    """
    parser = ConfigParser(packaged_configs(task)["inference.yaml"])
    parser["network_def"]["encode_text"] = encode_text
    network = parser.get_parsed_content("network_def")
    torch.save(network.state_dict(), path)
    return Path(path)


def installed_version(dist: str) -> str:
    """The installed version of distribution ``dist``, without a local label (``2.5.1+cu124`` -> ``2.5.1``).

    Args:
        dist: a distribution name as pip knows it (``monai``, ``open_clip_torch``).

    Raises:
        RuntimeError: ``dist`` is not installed.
    """
    try:
        return importlib.metadata.version(dist).split("+")[0]
    except importlib.metadata.PackageNotFoundError as err:
        raise RuntimeError(
            f"{dist} is not installed: the packaged metadata records the installed version of every package in "
            "bundle/configs/metadata.json's required_packages_version; install it or remove it there"
        ) from err


def packaged_metadata(task: str | Path, source: Path = SOURCE) -> dict[str, Any]:
    """The task's metadata: ``metadata.json``, updated with ``metadata_<task>.json`` beside its overlay if it exists.

    The versions (``monai_version``, ``pytorch_version``, ``numpy_version`` and each of
    ``required_packages_version``) are those installed where packaging runs, which the tests run with.

    Args:
        task: ``fundus`` or ``cardiac``.
        source: the repository's bundle folder.
    """
    metadata = ConfigParser.load_config_files([str(f) for f in meta_files(task, source / "configs")])
    for key, dist in (("monai_version", "monai"), ("pytorch_version", "torch"), ("numpy_version", "numpy")):
        metadata[key] = installed_version(dist)
    metadata["required_packages_version"] = {d: installed_version(d) for d in metadata["required_packages_version"]}
    return metadata


def _write_config(config: dict[str, Any], path: Path, origin: str) -> None:
    """Write a generated YAML config with a header naming its sources.

    Args:
        config: the config.
        path: the YAML file to write.
        origin: the source files, for the header.
    """
    header = f"# Generated by `python -m emclip.packaging` from {origin}: edit those, not this file.\n"
    path.write_text(header + yaml.safe_dump(config, sort_keys=False, width=120))


def _copy_scripts(target: Path) -> None:
    """Copy the ``emclip`` package (prompts included) to ``target/emclip`` with the import shim.

    Args:
        target: the bundle's ``scripts`` folder.
    """
    # the packaging code itself has no use inside a bundle
    shutil.copytree(PACKAGE, target / "emclip", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "packaging"))
    (target / "__init__.py").write_text(SCRIPTS_INIT)


def verify_minimal(bundle: Path) -> None:
    """The Model Zoo's minimal checks: required files, and the version is the newest changelog entry.

    Args:
        bundle: a packaged bundle folder.

    Raises:
        ValueError: naming what is missing or inconsistent.
    """
    missing = [f for f in REQUIRED_FILES if not (bundle / f).is_file()]
    if missing:
        raise ValueError(f"{bundle}: missing {missing}")
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    newest = sorted(metadata["changelog"], key=lambda v: tuple(int(p) for p in v.split(".")))[-1]
    if metadata["version"] != newest:
        raise ValueError(f"{bundle}: version {metadata['version']} is not the newest changelog key {newest}")


def build_bundle(task: str | Path, output: Path, ckpt: Path | None = None, source: Path = SOURCE) -> Path:
    """Write the bundle folder of ``task`` under ``output`` (replacing an older one).

    Args:
        task: an overlay name in ``source/configs`` or an overlay's path.
        output: the folder to write ``<bundle name>/`` into.
        ckpt: trained weights for ``models/model.pt`` (a state_dict of this task), or None.
        source: the repository's bundle folder.

    Returns:
        The bundle folder.
    """
    bundle = Path(output) / bundle_name(task)
    if bundle.exists():
        shutil.rmtree(bundle)
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    for name in COPIED:
        (bundle / name).parent.mkdir(parents=True, exist_ok=True)
        copy = shutil.copytree if (source / name).is_dir() else shutil.copy2
        copy(source / name, bundle / name)
    metadata = packaged_metadata(task, source)
    (bundle / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=4) + "\n")
    overlay = overlay_file(task, source / "configs")
    for name, config in packaged_configs(task, source).items():
        _write_config(config, bundle / "configs" / name, f"bundle/configs/{name} + {overlay.name}")
    prompts = _prompts_file(_load(overlay))
    if prompts is not None:
        shutil.copy2(prompts, bundle / "configs" / prompts.name)
    _copy_scripts(bundle / "scripts")
    if ckpt is not None:
        from emclip.workflows import check_checkpoint

        num_classes = metadata["network_data_format"]["outputs"]["pred"]["num_channels"]
        shutil.copy2(check_checkpoint(str(ckpt), num_classes), bundle / "models" / "model.pt")
    verify_minimal(bundle)
    return bundle


def _zip(bundle: Path) -> Path:
    """Zip a bundle folder as ``<name>.zip`` beside it, holding the folder ``<name>/``.

    Args:
        bundle: the bundle folder.
    """
    return Path(shutil.make_archive(str(bundle), "zip", root_dir=bundle.parent, base_dir=bundle.name))


def package(tasks: Iterable[str], output: Path, ckpt: Path | None = None, source: Path = SOURCE) -> list[Path]:
    """Build and zip the bundle of each task.

    Args:
        tasks: tasks to package (overlay names or paths).
        output: the output folder.
        ckpt: trained weights for ``models/model.pt``, for a single task only.
        source: the repository's bundle folder.

    Returns:
        The zip files written.
    """
    tasks = list(tasks)
    if ckpt is not None and len(tasks) != 1:
        raise ValueError("--ckpt holds the weights of one task: package one task at a time")
    return [_zip(build_bundle(task, Path(output), ckpt, source)) for task in tasks]
