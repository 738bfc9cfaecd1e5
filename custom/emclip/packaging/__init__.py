"""Package the EM-CLIP bundle per task as a self-contained MONAI Model Zoo style folder and zip.

The packaged configs are generated from ``bundle/configs`` (the one source of truth): the task
overlay is folded into every workflow config and the paths are made relative to ``bundle_root``.
The custom code travels in ``scripts/``: see :data:`SCRIPTS_INIT` for how it is imported.
"""

from emclip.packaging import bundle
from emclip.packaging.bundle import *  # noqa: F401,F403 - the public names listed in bundle.__all__

__all__ = list(bundle.__all__)
