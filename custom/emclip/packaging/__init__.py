"""Package the EM-CLIP bundle per task as a self-contained MONAI Model Zoo style folder and zip.

The packaged configs are generated from ``bundle/configs`` (the one source of truth): the task
overlay is folded into every workflow config and the paths are made relative to ``bundle_root``.
The custom code travels in ``scripts/``: see :data:`SCRIPTS_INIT` for how it is imported.
"""

from emclip.packaging.bundle import (
    BUNDLE_NAMES,
    REQUIRED_FILES,
    SCRIPTS_INIT,
    build_bundle,
    package,
    packaged_configs,
    packaged_metadata,
    verify_minimal,
)

__all__ = [
    "BUNDLE_NAMES",
    "REQUIRED_FILES",
    "SCRIPTS_INIT",
    "build_bundle",
    "package",
    "packaged_configs",
    "packaged_metadata",
    "verify_minimal",
]
