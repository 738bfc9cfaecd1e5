"""Per-case Dice and HD95 of each reported class, computed with MONAI's metric functions."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.metrics import compute_dice, compute_hausdorff_distance
from monai.utils import convert_to_numpy

from emclip.reports.classes import as_report_classes

__all__ = ["as_label_map", "case_metrics"]


def as_label_map(x: NdarrayOrTensor) -> np.ndarray:
    """Return an integer label map as a numpy array without its channel axis.

    Args:
        x: a label map of shape ``(H, W)``, ``(H, W, D)``, ``(1, H, W)`` or ``(1, H, W, D)``,
            torch or numpy. A leading axis of size 1 on a 3D or 4D array is the channel axis
            and is dropped (a volume of height 1 is not a use case; a single-slice volume is
            ``(H, W, 1)`` and keeps its shape).
    """
    arr = convert_to_numpy(x)
    if arr.ndim in (3, 4) and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D label map (optionally channel-first), got shape {tuple(arr.shape)}")
    return arr.astype(np.int64, copy=False)


def case_metrics(
    pred: NdarrayOrTensor,
    label: NdarrayOrTensor,
    classes: Mapping[str, Any],
    spacing: float | Sequence[float] | None = None,
) -> list[dict[str, float | str]]:
    """Dice, 95th-percentile Hausdorff distance and size ratio of every reported class of one case.

    The size ratio is the predicted over the annotated pixel (voxel) count: below 1 the class is
    under-segmented, whatever the overlap (NaN where the annotation is empty). A model that keeps
    the structure sizes of its training domain shows it on a domain with other sizes.

    Empty masks are scored by these rules:

    * prediction and ground truth both empty: Dice 1.0, HD95 0.0 (a correct "absent" call);
    * exactly one of them empty: Dice 0.0, HD95 NaN (no surface distance exists; summaries skip
      NaN values, so the HD95 mean of a class covers only the cases where it is defined).

    Args:
        pred: predicted integer label map, see :func:`as_label_map` for the accepted shapes.
        label: ground-truth integer label map of the same spatial shape.
        classes: the reported classes (a config's ``report_classes``, see
            :func:`emclip.reports.classes.as_report_classes`).
        spacing: voxel size per spatial axis (or one number for all axes), so that HD95 is in
            physical units (mm for NIfTI); ``None`` measures HD95 in pixels.

    Returns:
        One dict per class, in the order of ``classes``: ``{"class", "dice", "hd95", "size_ratio"}``.

    Raises:
        ValueError: on mismatched shapes or a spacing of the wrong length.
    """
    classes = as_report_classes(classes)
    pred_map, label_map = as_label_map(pred), as_label_map(label)
    if pred_map.shape != label_map.shape:
        raise ValueError(
            f"pred and label shapes differ: pred {tuple(pred_map.shape)} vs label {tuple(label_map.shape)}"
        )
    if spacing is not None and not isinstance(spacing, (int, float)):
        spacing = [float(s) for s in spacing]
        if len(spacing) != label_map.ndim:
            raise ValueError(f"spacing {spacing} has {len(spacing)} values for a {label_map.ndim}D label map")

    # One binary channel per class, batch of one: the (B, C, spatial) layout MONAI's metrics take.
    # Classes may overlap (fundus OD contains OC), so this is a multi-label stack, not a one-hot.
    # float64 keeps Dice exact for hand-checkable ratios (float32 would report 0.85 as 0.8500000238).
    pred_masks = torch.from_numpy(np.stack([np.isin(pred_map, c.labels) for c in classes.values()]))[None].double()
    label_masks = torch.from_numpy(np.stack([np.isin(label_map, c.labels) for c in classes.values()]))[None].double()

    # ignore_empty=False gives exactly the documented rules: both empty -> 1, one empty -> 0.
    dice = compute_dice(pred_masks, label_masks, include_background=True, ignore_empty=False)[0]

    pred_any = pred_masks[0].flatten(1).any(1)
    label_any = label_masks[0].flatten(1).any(1)
    hd95 = torch.where(pred_any | label_any, math.nan, 0.0).double()
    both = pred_any & label_any
    # Only classes present in both masks go to MONAI: it warns and returns inf/nan on empty ones.
    if both.any():
        hd95[both] = compute_hausdorff_distance(
            pred_masks[:, both], label_masks[:, both], include_background=True, percentile=95, spacing=spacing
        )[0].double()

    pred_size = pred_masks[0].flatten(1).sum(1)
    label_size = label_masks[0].flatten(1).sum(1)
    size_ratio = torch.where(label_any, pred_size / label_size.clamp(min=1), math.nan)
    return [
        {"class": name, "dice": float(dice[i]), "hd95": float(hd95[i]), "size_ratio": float(size_ratio[i])}
        for i, name in enumerate(classes)
    ]
