"""Visual check of one case: ground-truth and predicted class outlines drawn over the image."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from monai.config import NdarrayOrTensor
from monai.utils import convert_to_numpy

from emclip.reports.classes import as_report_classes
from emclip.reports.metrics import as_label_map

__all__ = ["save_overlay"]

# Saturated hues that stay visible on both grey MR slices and red-orange fundus photographs.
_COLOURS = ("#00e5ff", "#ffea00", "#ff00ff", "#76ff03")


def _display_image(image: NdarrayOrTensor, spatial_ndim: int) -> np.ndarray:
    """Channel-last float image in [0, 1]: ``(H, W[, D], 3)`` for RGB, ``(H, W[, D])`` otherwise."""
    arr = convert_to_numpy(image).astype(np.float64)
    if arr.ndim == spatial_ndim:
        arr = arr[None]
    if arr.ndim != spatial_ndim + 1:
        raise ValueError(
            f"image of shape {arr.shape} does not match a {spatial_ndim}D label map (expected (C, spatial) or spatial)"
        )
    # Three channels are shown as RGB; otherwise the first channel is shown in grey.
    arr = np.moveaxis(arr, 0, -1) if arr.shape[0] == 3 else arr[0]
    # Images arrive normalised in arbitrary ways (CLIP mean/std, z-score); min-max is enough to look at.
    low, high = np.nanmin(arr), np.nanmax(arr)
    return (arr - low) / (high - low) if high > low else np.zeros_like(arr)


def save_overlay(
    image: NdarrayOrTensor,
    label: NdarrayOrTensor,
    pred: NdarrayOrTensor,
    path: str | os.PathLike,
    classes: Mapping[str, Any],
    title: str | None = None,
) -> Path:
    """Save a PNG with the ground truth (left) and the prediction (right) outlined on the image.

    Each reported class gets one colour, drawn as a contour over a light fill; a legend names the
    classes. Volumes ``(H, W, D)`` are shown at the slice along the last axis with the most
    ground-truth foreground (the prediction's if the ground truth is empty, the middle slice if
    both are empty). Arrays are drawn as stored: axis 0 runs down the rows.

    Args:
        image: the input image, ``(C, H, W[, D])`` or ``(H, W[, D])``; three channels are drawn as
            RGB, otherwise the first channel in grey; any intensity range (rescaled to [0, 1]).
        label: ground-truth integer label map, see :func:`emclip.reports.metrics.as_label_map`.
        pred: predicted integer label map with the same spatial shape.
        path: PNG file to write; parent folders are created.
        classes: the reported classes drawn (see :func:`emclip.reports.classes.as_report_classes`).
        title: optional figure title, e.g. the domain, case and scores.

    Returns:
        The written path.
    """
    label_map, pred_map = as_label_map(label), as_label_map(pred)
    if label_map.shape != pred_map.shape:
        raise ValueError(f"pred and label shapes differ: pred {pred_map.shape} vs label {label_map.shape}")
    picture = _display_image(image, label_map.ndim)
    if picture.shape[: label_map.ndim] != label_map.shape:
        raise ValueError(f"image spatial shape {picture.shape[: label_map.ndim]} differs from label {label_map.shape}")
    if label_map.ndim == 3:
        per_slice = (label_map > 0).sum((0, 1))
        if not per_slice.any():
            per_slice = (pred_map > 0).sum((0, 1))
        z = int(per_slice.argmax()) if per_slice.any() else label_map.shape[2] // 2
        label_map, pred_map, picture = label_map[..., z], pred_map[..., z], picture[:, :, z]

    classes = as_report_classes(classes)
    colours = [_COLOURS[i % len(_COLOURS)] for i in range(len(classes))]
    height, width = label_map.shape
    fig = Figure(figsize=(2 * 4.0 * width / max(height, width) + 0.4, 4.0 * height / max(height, width) + 1.0))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for ax, name, mask_source in zip(axes, ("Ground truth", "Prediction"), (label_map, pred_map)):
        ax.imshow(picture, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        for colour, spec in zip(colours, classes.values()):
            mask = np.isin(mask_source, spec.labels)
            if not mask.any():  # contour() warns on a constant array
                continue
            fill = ListedColormap([colour])
            ax.imshow(np.ma.masked_where(~mask, mask), cmap=fill, alpha=0.25, interpolation="nearest")
            ax.contour(mask.astype(np.float32), levels=[0.5], colors=[colour], linewidths=1.5)
        ax.set_title(name, fontsize=10)
        ax.set_axis_off()
    handles = [
        Line2D([], [], color=colour, linewidth=2, label=f"{name} ({spec.long_name})")
        for colour, (name, spec) in zip(colours, classes.items())
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.86 if title else 0.93, bottom=0.1, wspace=0.04)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out
