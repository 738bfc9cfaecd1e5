"""Inference inputs and outputs."""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.data import MetaTensor
from monai.transforms import EnsureChannelFirstd, MapTransform, Transform
from monai.utils import convert_to_dst_type

from emclip.data.common import IMAGE_SUFFIXES
from emclip.data.transforms import LoadFundusLabeld, ReadImaged, SelectFramed

__all__ = ["list_inputs", "original_label", "EncodeFundusMaskd"]

logger = logging.getLogger("emclip.workflows")

_VOLUME_SUFFIXES = (".nii.gz", ".nii")


def _is_label_file(name: str) -> bool:
    stem = name.split(".")[0]
    return stem.endswith("_gt") or "-Disc-" in name or "-Cup-" in name


def list_inputs(input_dir: str, task: str) -> list[dict[str, str]]:
    """Inference items ``{"image": path}`` for one file or every image of a folder (sorted).

    Label files in the folder (``*_gt.nii.gz``, RIM-ONE ``-Disc-``/``-Cup-`` masks) are skipped and
    counted in the log; anything else with another suffix is skipped and counted too.
    """
    suffixes = IMAGE_SUFFIXES if task == "fundus" else _VOLUME_SUFFIXES
    if os.path.isfile(input_dir):
        return [{"image": input_dir}]
    if not os.path.isdir(input_dir):
        raise FileNotFoundError(f"input_dir: {input_dir!r} is neither a file nor a folder")
    items, labels, other = [], 0, 0
    for name in sorted(os.listdir(input_dir)):
        path = os.path.join(input_dir, name)
        if not os.path.isfile(path) or not name.lower().endswith(suffixes):
            other += 1
        elif _is_label_file(name):
            labels += 1
        else:
            items.append({"image": path})
    if labels or other:
        logger.info("input_dir %s: %d images, skipped %d label files and %d other entries", input_dir, len(items), labels, other)
    if not items:
        raise FileNotFoundError(f"input_dir: no {task} images ({', '.join(suffixes)}) in {input_dir!r}")
    return items


def original_label(task: str, key: str = "label") -> list[Transform]:
    """Load a label map in its original geometry (no resampling), for metrics after ``Invertd``."""
    if task == "fundus":
        return [LoadFundusLabeld(key)]
    return [ReadImaged(key), EnsureChannelFirstd(key), SelectFramed(key)]


class EncodeFundusMaskd(MapTransform):
    """Map fundus labels {0 background, 1 rim, 2 cup} to the release encoding {255, 128, 0}.

    Args:
        keys: label keys.
        enabled: pass labels through unchanged when ``False`` (a config switch).
    """

    def __init__(self, keys: Any, enabled: bool = True, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.enabled = enabled
        self.lut = torch.tensor([255, 128, 0], dtype=torch.uint8)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.enabled:
            for key in self.key_iterator(d):
                label = d[key]
                index = label.as_tensor() if isinstance(label, MetaTensor) else torch.as_tensor(label)
                # convert_to_dst_type keeps the MetaTensor's metadata, which the image writer needs
                d[key] = convert_to_dst_type(self.lut[index.long()], label, dtype=torch.uint8)[0]
        return d
