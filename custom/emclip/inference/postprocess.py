"""Anatomy-aware post-processing of predicted label maps, each step a switch.

Fundus (label maps {0 background, 1 disc rim, 2 cup}; the disc is rim plus cup):

* ``largest_component``: the disc is its largest connected component; cup pixels in the removed
  fragments go with them;
* ``fill_holes``: holes of the disc become rim, holes of the cup become cup;
* ``cup_in_disc``: the cup is its largest component inside the largest disc component; other cup
  pixels become rim (they stay disc).

Cardiac (3D label maps {0, 1 LV, 2 MYO, 3 RV}, slices along the last axis), per volume:

* ``largest_component``: each class keeps its largest 3D connected component, the rest is
  background;
* ``fill_holes``: holes in the LV cavity, slice by slice, become LV (a hole is open in 3D at the
  basal and apical slices, so it is only enclosed in-plane);
* ``cup_in_disc``: fundus only.

Components are connected through faces, edges and corners. No step adds foreground outside the
raw prediction except filled holes.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type, convert_to_numpy
from scipy import ndimage

__all__ = ["STEPS", "TASK_STEPS", "AnatomyPostprocessd", "check_steps", "fill_holes", "largest_component", "postprocess"]

STEPS: tuple[str, ...] = ("largest_component", "fill_holes", "cup_in_disc")
# the steps each task has, in the order they are applied and chosen
TASK_STEPS: dict[str, tuple[str, ...]] = {"fundus": STEPS, "cardiac": ("largest_component", "fill_holes")}


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a boolean mask (an all-False mask stays empty).

    Args:
        mask: boolean array of any rank; neighbours share a face, an edge or a corner.
    """
    labels, count = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, bool))
    if count <= 1:
        return mask.astype(bool, copy=True)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == int(np.argmax(sizes)) + 1


def fill_holes(mask: np.ndarray, slice_axis: int | None = None) -> np.ndarray:
    """Fill the holes of a boolean mask, in the whole array or in each slice along ``slice_axis``.

    Args:
        mask: boolean array.
        slice_axis: fill each 2D slice along this axis separately; ``None``: the whole array.
    """
    if slice_axis is None:
        return ndimage.binary_fill_holes(mask)
    moved = np.moveaxis(mask, slice_axis, -1)
    filled = np.stack([ndimage.binary_fill_holes(moved[..., k]) for k in range(moved.shape[-1])], axis=-1)
    return np.moveaxis(filled, -1, slice_axis)


def check_steps(task: str, steps: Mapping[str, bool] | None) -> dict[str, bool]:
    """The switches of ``task``'s steps, every known step present (missing ones off).

    Args:
        task: ``"fundus"`` or ``"cardiac"``.
        steps: step name to on/off, e.g. the ``postprocess`` config value.

    Raises:
        ValueError: an unknown task or step name, or a step switched on that ``task`` lacks.
    """
    if task not in TASK_STEPS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASK_STEPS)}")
    steps = dict(steps or {})
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        raise ValueError(f"postprocess: unknown step(s) {unknown}; known: {list(STEPS)}")
    unsupported = [name for name, on in steps.items() if on and name not in TASK_STEPS[task]]
    if unsupported:
        raise ValueError(f"postprocess: {unsupported} apply to fundus only; switch them off for {task}")
    return {name: bool(steps.get(name, False)) for name in STEPS}


def _fundus(label: np.ndarray, steps: dict[str, bool]) -> np.ndarray:
    disc, cup = label > 0, label == 2
    if steps["largest_component"]:
        disc = largest_component(disc)
        cup &= disc
    if steps["fill_holes"]:
        # a hole of the cup is enclosed by the cup, hence inside the filled disc
        disc, cup = fill_holes(disc), fill_holes(cup)
    if steps["cup_in_disc"]:
        cup = largest_component(cup & largest_component(disc))
    return np.where(cup, 2, np.where(disc, 1, 0)).astype(label.dtype)


def _cardiac(label: np.ndarray, steps: dict[str, bool]) -> np.ndarray:
    out = label.copy()
    if steps["largest_component"]:
        for value in (1, 2, 3):
            mask = out == value
            out[mask & ~largest_component(mask)] = 0
    if steps["fill_holes"]:
        out[fill_holes(out == 1, slice_axis=-1)] = 1
    return out


def postprocess(label: NdarrayOrTensor, task: str, steps: Mapping[str, bool] | None) -> NdarrayOrTensor:
    """Apply the switched-on steps to one label map.

    Args:
        label: integer label map, optionally channel-first with one channel: fundus ``([1,] H, W)``,
            cardiac ``([1,] H, W, slices)``; torch or numpy (the result has the same type and metadata).
        task: ``"fundus"`` or ``"cardiac"``.
        steps: step name to on/off (see :data:`STEPS`).
    """
    switches = check_steps(task, steps)
    if not any(switches.values()):
        return label
    arr = convert_to_numpy(label)
    spatial = 2 if task == "fundus" else 3
    if arr.ndim not in (spatial, spatial + 1) or (arr.ndim == spatial + 1 and arr.shape[0] != 1):
        raise ValueError(f"{task} post-processing needs a {spatial}D label map, optionally with one channel first, got {arr.shape}")
    squeezed = arr[0] if arr.ndim == spatial + 1 else arr
    result = (_fundus if task == "fundus" else _cardiac)(np.rint(squeezed).astype(np.int64), switches)
    result = result[None] if arr.ndim == spatial + 1 else result
    return convert_to_dst_type(result.astype(arr.dtype), label)[0]


class AnatomyPostprocessd(MapTransform):
    """Dictionary transform of :func:`postprocess` (the ``postprocess`` config value).

    Args:
        keys: label-map keys.
        task: ``"fundus"`` or ``"cardiac"``.
        steps: step name to on/off; all off passes the labels through.
    """

    def __init__(self, keys: KeysCollection, task: str, steps: Mapping[str, bool] | None = None, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.task = task
        self.steps = check_steps(task, steps)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = postprocess(d[key], self.task, self.steps)
        return d
