"""EM-CLIP: vision-language semantic aggregation for generalizable medical image segmentation."""

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBPACKAGES = ("benchmarks", "data", "export", "inference", "losses", "networks", "reports", "workflows")
__all__ = list(_SUBPACKAGES)


def __getattr__(name: str) -> Any:
    # Subpackages load on first use, so that bundle configs need only `$import emclip`.
    if name in _SUBPACKAGES:
        return importlib.import_module(f"emclip.{name}")
    raise AttributeError(f"module 'emclip' has no attribute {name!r}")
