import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EMCLIP_DATA_ROOT", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_net(num_classes: int = 3, backbone: str = "cpu-resnet", **kwargs):
    """A small EM-CLIP for fast tests."""
    from emclip.networks import EMCLIP

    kwargs.setdefault("prompts", "fundus" if num_classes == 3 else "cardiac")
    kwargs.setdefault("em_bases", 8)
    kwargs.setdefault("decoder_channels", 32)
    return EMCLIP(num_classes, backbone=backbone, **kwargs)
