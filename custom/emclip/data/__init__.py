"""Data for EM-CLIP: readers (fundus, M&Ms cardiac MRI, any 2D task in the generic layout),
datalists and domain splits, transforms, style randomisation, cached datasets and a synthetic
multi-domain generator. The task overlays assemble the pipeline from these; ``task_transforms``
reads it back in Python. Messages go to the ``emclip.data`` logger.

Names are imported from their submodules on first use, so that the command line modules
(``python -m emclip.data.datalist`` / ``.synthetic``) start without
importing MONAI twice or importing one another.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "CARDIAC_CLASSES": "cardiac",
    "find_cardiac_items": "cardiac",
    "labelled_slices": "cardiac",
    "read_info_csv": "cardiac",
    "DataError": "common",
    "IMAGE_SUFFIXES": "common",
    "build_datalist": "datalist",
    "leave_one_domain_out": "datalist",
    "list_domains": "datalist",
    "load_datalist": "datalist",
    "save_datalist": "datalist",
    "sort_items": "datalist",
    "split_domains": "datalist",
    "summarize": "datalist",
    "cache_nbytes": "datasets",
    "expand_slices": "datasets",
    "keyed_cache_dir": "datasets",
    "make_dataset": "datasets",
    "make_slice_dataset": "datasets",
    "reference_landmarks": "landmarks",
    "FUNDUS_CLASSES": "fundus",
    "MASK_FORMATS": "fundus",
    "find_fundus_items": "fundus",
    "read_fundus_label": "fundus",
    "find_2d_items": "generic",
    "chain": "pipeline",
    "task_transforms": "pipeline",
    "RandGIN": "style",
    "RandGINd": "style",
    "RandGINMixd": "style",
    "RandLocationScaled": "style",
    "write_fundus_photos": "synthetic",
    "write_synthetic": "synthetic",
    "CLIP_MEAN": "transforms",
    "CLIP_STD": "transforms",
    "CheckLabelsd": "transforms",
    "CheckSameShaped": "transforms",
    "ImageMode": "transforms",
    "LoadFundusLabeld": "transforms",
    "RandHueSaturationd": "transforms",
    "ReadImaged": "transforms",
    "SelectFramed": "transforms",
    "StandardizeLandmarksd": "transforms",
    "RepeatViewsd": "transforms",
    "ZoomInPlaned": "transforms",
    "LANDMARK_PERCENTILES": "transforms",
    "histogram_landmarks": "transforms",
    "to_rgb": "transforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
