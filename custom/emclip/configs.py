"""The bundle's configs as the Python side sees them: where they are, the files of a task, the
``python -m monai.bundle`` command line of a workflow and a parsed config.

A task is a YAML overlay (``fundus``, ``cardiac``, ``task_2d`` in ``bundle/configs``, or the path
of a user's own overlay) plus its metadata: ``metadata.json``, then ``metadata_<task>.json`` when
the overlay's folder has one. The demo, the benchmarks and the tests build their commands here,
so that a task needs no table in code.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CONFIGS", "REPO", "bundle_command", "list_arg", "load_config", "meta_files", "overlay_file", "parse_overrides", "task_files"]

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundle" / "configs"


def overlay_file(task: str | Path, config_dir: str | Path = CONFIGS) -> Path:
    """The task overlay: ``<config_dir>/<task>.yaml`` for a name, else the path itself."""
    path = Path(task)
    if path.suffix in (".yaml", ".yml", ".json"):
        return path
    return Path(config_dir) / f"{task}.yaml"


def meta_files(task: str | Path, config_dir: str | Path = CONFIGS) -> list[Path]:
    """``metadata.json`` of ``config_dir``, then the task's own ``metadata_<task>.json`` next to its overlay."""
    overlay = overlay_file(task, config_dir)
    own = overlay.parent / f"metadata_{overlay.stem}.json"
    return [Path(config_dir) / "metadata.json"] + ([own] if own.is_file() else [])


def task_files(workflows: Sequence[str], task: str | Path | None, config_dir: str | Path = CONFIGS) -> list[Path]:
    """Config files of ``workflows`` (``train``, ``evaluate``, ...) and the task overlay last.

    ``task=None`` (a packaged bundle, whose configs already hold their overlay) adds none.
    """
    files = [Path(config_dir) / f"{w}.yaml" for w in workflows]
    return files + ([overlay_file(task, config_dir)] if task is not None else [])


def list_arg(items: Sequence[Any]) -> str:
    """A list as one command-line value of ``monai.bundle`` (``"['a','b']"``)."""
    return "[" + ",".join(f"'{i}'" for i in items) + "]"


def bundle_command(workflow: str, configs: Sequence[str], task: str | Path, **overrides: object) -> list[str]:
    """``python -m monai.bundle run <workflow>`` with the task's metadata, ``configs`` and its overlay."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", workflow,
           "--meta_file", list_arg([str(m) for m in meta_files(task)]),
           "--config_file", list_arg([str(f) for f in task_files(configs, task)]),
           "--logging_file", str(CONFIGS / "logging.conf")]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    return cmd


def load_config(
    task: str | Path | None,
    workflows: Sequence[str] = ("train",),
    overrides: Mapping[str, Any] | None = None,
    config_dir: str | Path = CONFIGS,
):
    """A ``monai.bundle.ConfigParser`` of the task's configs and metadata, with ``overrides`` applied.

    Items are built on request (``parser.get_parsed_content("preprocessing")``), so reading one
    pipeline part does not build the network or the datasets.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(f) for f in task_files(workflows, task, config_dir)])
    parser.read_meta([str(m) for m in meta_files(task if task is not None else "none", config_dir)])
    for key, value in (overrides or {}).items():
        parser[key] = value
    return parser


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``key=value`` strings to config overrides, each value read as YAML.

    Raises:
        ValueError: a pair without ``=``.
    """
    import yaml

    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set {pair!r}: expected key=value, e.g. spatial_size=[256,256]")
        overrides[key] = yaml.safe_load(value)
    return overrides
