"""The reported classes of a task: which label values make up each class, and its long name.

A task's config owns them: its overlay sets ``report_classes`` (e.g. fundus reports the optic
disc as the union of the rim and cup labels), or a task whose overlay sets none reports one class
per foreground channel of its metadata (:func:`classes_from_channel_def`). The report handler,
the metrics, the writers and the overlays take these classes as an argument.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["ReportClass", "as_report_classes", "classes_from_channel_def", "get_classes"]


@dataclass(frozen=True)
class ReportClass:
    """One reported class.

    Args:
        labels: the label-map values whose union forms the class.
        long_name: a human-readable name, e.g. ``"optic disc"``.
    """

    labels: tuple[int, ...]
    long_name: str


def as_report_classes(classes: Mapping[str, Any]) -> dict[str, ReportClass]:
    """The reported classes, in report order, from a config's ``report_classes``.

    Args:
        classes: ``{short name: ReportClass}`` or, as written in a config,
            ``{short name: {"labels": [label values], "name": long name}}``.

    Raises:
        TypeError: ``classes`` is not a mapping (e.g. a task name, which no longer fixes them).
        ValueError: a class has no labels, or no classes are given.
    """
    if not isinstance(classes, Mapping):
        raise TypeError(
            f"report classes are a mapping {{name: {{labels: [...], name: ...}}}}, got {classes!r}; "
            "a task's config sets them as report_classes"
        )
    out = {}
    for short, spec in classes.items():
        if not isinstance(spec, ReportClass):
            spec = ReportClass(labels=tuple(int(v) for v in spec["labels"]), long_name=str(spec.get("name", short)))
        if not spec.labels:
            raise ValueError(f"report class {short!r} has no label values")
        out[str(short)] = spec
    if not out:
        raise ValueError("no report classes given")
    return out


def classes_from_channel_def(channel_def: Mapping[Any, str]) -> dict[str, ReportClass]:
    """One reported class per foreground label value of a metadata ``channel_def``.

    Label 0 is the background and not reported. The short name is the channel's name with every
    run of characters other than letters and digits turned into ``_`` (it becomes part of metric
    names such as ``dice_left_ventricle``); the long name is the channel's name.

    Args:
        channel_def: ``network_data_format#outputs#pred#channel_def`` of the metadata,
            ``{"0": "background", "1": "left ventricle", ...}``.
    """
    classes = {}
    for value, name in sorted(((int(k), str(v)) for k, v in channel_def.items()), key=lambda kv: kv[0]):
        if value == 0:
            continue
        short = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") or f"label_{value}"
        if short in classes:
            raise ValueError(f"channel_def names {name!r} twice; give the task report_classes instead")
        classes[short] = ReportClass(labels=(value,), long_name=name)
    return as_report_classes(classes)


@lru_cache(maxsize=None)
def get_classes(task: str | Path) -> dict[str, ReportClass]:
    """The ``report_classes`` of a task's configs (``train.yaml`` + its overlay + metadata).

    For tools that name a task rather than parse a workflow (e.g. the post-processing choice);
    a workflow passes its own ``@report_classes``.

    Args:
        task: a task name of ``bundle/configs`` (``"fundus"``, ``"cardiac"``) or an overlay path.
    """
    from emclip.configs import load_config  # parses the configs with MONAI, only when asked

    return as_report_classes(load_config(task).get_parsed_content("report_classes"))
