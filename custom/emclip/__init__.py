"""EM-CLIP: vision-language semantic aggregation for generalizable medical image segmentation."""

import importlib
import importlib.metadata
import os
import re
import sys
from typing import Any

__version__ = "0.1.0"

_SUBPACKAGES = ("benchmarks", "data", "export", "inference", "losses", "networks", "reports", "workflows")
__all__ = [*_SUBPACKAGES, "MINIMUM_VERSIONS", "UnsupportedVersionError", "check_versions"]

# The oldest releases the code runs with (setup.cfg's install_requires states the same; a test
# checks): open_clip 2.32 is the first whose Transformer has `forward_intermediates`.
MINIMUM_VERSIONS = {"monai": "1.4", "open_clip_torch": "2.32"}


class UnsupportedVersionError(ImportError):
    """An installed dependency is older than EM-CLIP supports."""


def _release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string (``1.6.1rc1`` -> ``(1, 6, 1)``)."""
    match = re.match(r"\d+(\.\d+)*", version)
    return tuple(int(p) for p in match.group(0).split(".")) if match else ()


def check_versions(minimum: dict[str, str] = MINIMUM_VERSIONS) -> None:
    """Refuse installed distributions older than ``minimum`` with a one-line message.

    Args:
        minimum: distribution name -> oldest supported version. A distribution that is not
            installed is left to its own import error.

    Raises:
        UnsupportedVersionError: naming the package, both versions and the pip command.
    """
    for dist, oldest in minimum.items():
        try:
            found = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        if _release(found) < _release(oldest):
            raise UnsupportedVersionError(
                f"EM-CLIP needs {dist} >= {oldest}, found {found}: run pip install '{dist}>={oldest}'"
            )


def _run_by_bundle_cli() -> bool:
    """Whether this process is ``python -m monai.bundle ...``."""
    return sys.argv[0].replace(os.sep, "/").endswith("monai/bundle/__main__.py")


# here, because every bundle config imports emclip before anything of it runs
try:
    check_versions()
except UnsupportedVersionError as err:
    # MONAI's `$import` turns an import error into a stub that fails later, deep in the config's
    # evaluation; on the command line the run stops here instead, with the one line
    if _run_by_bundle_cli():
        raise SystemExit(f"error: {err}") from None
    raise


def __getattr__(name: str) -> Any:
    # Subpackages load on first use, so that bundle configs need only `$import emclip`.
    if name in _SUBPACKAGES:
        return importlib.import_module(f"emclip.{name}")
    raise AttributeError(f"module 'emclip' has no attribute {name!r}")
