"""A task's pipeline as the bundle builds it, for Python callers (checks, benchmarks, tests).

The overlays list the pipeline (``preprocess``, ``augment``, ``normalization``, ``read_label``);
this reads those items from the parsed configs instead of assembling transforms in code, so that
what a check or a measurement runs is what training runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai.transforms import Compose, Transform

from emclip.configs import load_config

__all__ = ["chain", "task_transforms"]


def chain(*parts: Any) -> list[Transform]:
    """One flat transform list from pipeline items: dicts of named transforms (in order), ``Compose``s,
    lists or single transforms, nested in any way.

    Flat, because MONAI's caches (and ``make_dataset``'s screening) keep the transforms before the
    first random one, and a nested ``Compose`` counts as random: caching would stop at it.
    """
    flat: list[Transform] = []
    for part in parts:
        if isinstance(part, Mapping):
            flat += chain(*part.values())
        elif isinstance(part, Compose):
            flat += chain(*part.transforms)
        elif isinstance(part, (list, tuple)):
            flat += chain(*part)
        else:
            flat.append(part)
    return flat


def task_transforms(task: str | Path, *parts: str, overrides: Mapping[str, Any] | None = None) -> list[Transform]:
    """The transforms of the overlay's ``parts`` in order, e.g. ``task_transforms("fundus", "preprocess", "normalization")``.

    Args:
        task: an overlay name in ``bundle/configs`` or an overlay's path.
        parts: config keys of pipeline items.
        overrides: config overrides, e.g. ``{"spatial_size": [64, 64], "augment#gin#prob": 1.0}``.
    """
    parser = load_config(task, overrides=overrides)
    return chain(*(parser.get_parsed_content(part) for part in parts))
