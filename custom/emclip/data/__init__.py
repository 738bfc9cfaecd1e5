"""Data for EM-CLIP: readers, datalists and domain splits, transforms, style randomisation,
cached datasets and a synthetic multi-domain generator, for fundus (optic disc/cup) and cardiac
(M&Ms short-axis MRI) segmentation. Messages go to the ``emclip.data`` logger.

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
    "build_datalist": "datalist",
    "leave_one_domain_out": "datalist",
    "list_domains": "datalist",
    "load_datalist": "datalist",
    "save_datalist": "datalist",
    "split_domains": "datalist",
    "summarize": "datalist",
    "cache_nbytes": "datasets",
    "expand_slices": "datasets",
    "make_dataset": "datasets",
    "make_slice_dataset": "datasets",
    "training_dataset": "datasets",
    "FUNDUS_CLASSES": "fundus",
    "MASK_FORMATS": "fundus",
    "find_fundus_items": "fundus",
    "read_fundus_label": "fundus",
    "RandGIN": "style",
    "RandGINd": "style",
    "RandGINMixd": "style",
    "RandLocationScaled": "style",
    "write_fundus_photos": "synthetic",
    "write_synthetic": "synthetic",
    "AUGMENTATIONS": "transforms",
    "CLIP_MEAN": "transforms",
    "CLIP_STD": "transforms",
    "RandHueSaturationd": "transforms",
    "RepeatViewsd": "transforms",
    "ZoomInPlaned": "transforms",
    "augmentation": "transforms",
    "evaluation_transforms": "transforms",
    "normalization": "transforms",
    "preprocessing": "transforms",
    "training_transforms": "transforms",
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
