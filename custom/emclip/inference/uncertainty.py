"""Predictive uncertainty: a per-pixel entropy map and per-case, per-class scores."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import CastToTyped, MapTransform, SaveImaged, ScaleIntensityRanged, SqueezeDimd, Transform
from monai.utils import convert_to_dst_type, convert_to_numpy

from emclip.inference.tent import entropy
from emclip.reports.classes import as_report_classes

__all__ = ["EIGHT_BIT_EXTS", "PredictiveEntropyd", "predictive_entropy", "uncertainty_outputs", "uncertainty_scores"]


def predictive_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy of channel-first class probabilities ``(C, ...)`` over ``log C``: ``(1, ...)`` in [0, 1].

    Args:
        probs: class probabilities (softmax, or a mean of softmax outputs such as TTA's).

    Raises:
        ValueError: the channels do not sum to 1 (e.g. logits).
    """
    p = torch.as_tensor(probs).float()
    if p.shape[0] < 2 or not torch.allclose(p.sum(0), torch.ones((), device=p.device), atol=1e-3):
        raise ValueError(
            "uncertainty needs class probabilities (channels summing to 1) from emclip.inference.TestTimeInferer, "
            f"got {p.shape[0]} channel(s) summing to {float(p.sum(0).mean()):.3f} on average"
        )
    return (entropy(p, dim=0) / math.log(p.shape[0])).clamp(0.0, 1.0)[None]  # rounding can exceed 1


class PredictiveEntropyd(MapTransform):
    """Add the :func:`predictive_entropy` map of ``keys`` under ``output_key`` (before the argmax).

    Args:
        keys: the probability key (one).
        output_key: key of the map; it keeps the probabilities' metadata, so ``Invertd`` maps it
            back to the input's geometry like the prediction.
        enabled: do nothing when ``False`` (the ``uncertainty`` config switch).
    """

    def __init__(self, keys: KeysCollection, output_key: str = "uncertainty", enabled: bool = True, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.output_key = output_key
        self.enabled = enabled

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.enabled:
            for key in self.key_iterator(d):
                d[self.output_key] = convert_to_dst_type(predictive_entropy(d[key]), d[key], dtype=torch.float32)[0]
        return d


def uncertainty_scores(uncertainty: NdarrayOrTensor, pred: np.ndarray, classes: Mapping[str, Any]) -> dict[str, float]:
    """Per-class score of one case: the mean uncertainty over the pixels predicted as the class.

    A class predicted nowhere scores 1.0, the largest value: a missing structure is a failure to flag.

    Args:
        uncertainty: the case's map, ``([1,] spatial)``, in the geometry of ``pred``.
        pred: the predicted label map ``(spatial)``.
        classes: the reported classes (see :func:`emclip.reports.classes.as_report_classes`).
    """
    u = convert_to_numpy(uncertainty).astype(np.float64)
    u = u[0] if u.ndim == pred.ndim + 1 else u
    if u.shape != pred.shape:
        raise ValueError(f"uncertainty map {u.shape} and prediction {pred.shape} differ in shape")
    scores = {}
    for name, spec in as_report_classes(classes).items():
        region = np.isin(pred, spec.labels)
        scores[name] = float(u[region].mean()) if region.any() else 1.0
    return scores


# formats that hold 8-bit images only: the map is scaled to 0..255
EIGHT_BIT_EXTS = (".png", ".jpg", ".jpeg", ".bmp")


def uncertainty_outputs(output_dir: str, output_ext: str = ".nii.gz", key: str = "uncertainty") -> list[Transform]:
    """Transforms that write the map as a second output ``<name>_uncertainty`` in the input's
    geometry: in an 8-bit image format (:data:`EIGHT_BIT_EXTS`) scaled to 0..255 (255 = maximal
    entropy), otherwise (NIfTI) in float with the input's affine.

    Args:
        output_dir: folder of the predictions.
        output_ext: file format of the map (the config's ``uncertainty_ext``), e.g. ``".png"``, ``".nii.gz"``.
        key: key of the map (after ``Invertd``).
    """
    common = {"output_dir": output_dir, "output_postfix": "uncertainty", "resample": False, "separate_folder": False}
    if output_ext.lower() in EIGHT_BIT_EXTS:
        return [
            SqueezeDimd(key, dim=0),
            ScaleIntensityRanged(key, a_min=0.0, a_max=1.0, b_min=0.0, b_max=255.0, clip=True),
            CastToTyped(key, dtype=torch.uint8),
            SaveImaged(key, output_ext=output_ext, output_dtype=torch.uint8, scale=None, writer="PILWriter", **common),
        ]
    return [SaveImaged(key, output_ext=output_ext, output_dtype=np.float32, **common)]
