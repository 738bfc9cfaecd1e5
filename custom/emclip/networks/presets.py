"""Small open_clip model configs that train from scratch on two CPU cores.

Any open_clip model name (``ViT-B-16``, ``RN50``, ...) is also a valid backbone; these presets add
names for config dicts in open_clip's format (``embed_dim``, ``vision_cfg``, ``text_cfg``).
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["PRESETS", "get_preset"]

# The small text tower keeps CLIP's tokenizer (vocab 49408, context 77) so that one prompt file
# and one tokenizer serve every backbone.
_SMALL_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2}

# Sized to train on two CPU cores: step times per preset and input size are in
# bundle/docs/benchmarks.md (python -m emclip.benchmarks.speed).
PRESETS: dict[str, dict[str, Any]] = {
    "cpu-resnet": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 256, "layers": [1, 1, 1, 1], "width": 16, "patch_size": None},
        "text_cfg": _SMALL_TEXT,
    },
    "cpu-vit": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 256, "layers": 4, "width": 192, "patch_size": 16, "head_width": 64},
        "text_cfg": _SMALL_TEXT,
    },
}


def get_preset(name: str) -> dict[str, Any] | None:
    """Return a copy of the config dict of preset ``name``, or ``None`` if it is not a preset."""
    return copy.deepcopy(PRESETS[name]) if name in PRESETS else None
