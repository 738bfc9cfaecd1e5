import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EMCLIP_DATA_ROOT", REPO.parent / "shared" / "data"))


def chained(excinfo: pytest.ExceptionInfo, kind: type[BaseException]) -> str:
    """Message of the first ``kind`` error in an exception chain (MONAI wraps errors raised in
    transforms and config expressions)."""
    err: BaseException | None = excinfo.value
    while err is not None and not isinstance(err, kind):
        err = err.__cause__ or err.__context__
    assert err is not None, f"no {kind.__name__} in {excinfo.value!r}"
    return str(err)


def data_error(excinfo: pytest.ExceptionInfo) -> str:
    """Message of the ``DataError`` in an exception chain."""
    from emclip.data import DataError

    return chained(excinfo, DataError)


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


def preprocessing(task: str, **overrides):
    """The task overlay's ``preprocess`` transforms with config overrides (an int ``spatial_size`` is square)."""
    from emclip.data import task_transforms

    size = overrides.get("spatial_size")
    if isinstance(size, int):
        overrides["spatial_size"] = [size, size]
    elif size is not None:
        overrides["spatial_size"] = list(size)
    return task_transforms(task, "preprocess", overrides=overrides)
