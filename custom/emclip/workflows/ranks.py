"""Logging on one process of a distributed run: rank 0 logs, the other ranks train silently."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch.distributed as dist
from monai.handlers import StatsHandler, TensorBoardStatsHandler

from emclip.workflows.progress import ProgressLogger

__all__ = ["LOGGING_HANDLERS", "is_rank_zero", "rank_zero_handlers"]

# handlers that only log: the console and TensorBoard would get one copy per rank
LOGGING_HANDLERS = (StatsHandler, TensorBoardStatsHandler, ProgressLogger)


def is_rank_zero() -> bool:
    """Whether this process is rank 0, or the only one.

    Before the process group is initialised the launcher's ``RANK`` tells (``torchrun`` sets it),
    so that a config expression gives the same answer whenever it is evaluated.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def rank_zero_handlers(handlers: Sequence[Any]) -> list[Any]:
    """``handlers`` on rank 0; on the other ranks without the logging ones (:data:`LOGGING_HANDLERS`).

    Selecting by type rather than by position in the config's list keeps an overlay valid when
    the base config adds or reorders handlers. A TensorBoard handler opens its event file when it
    is built, so a config also gives it ``_disabled_: "$not emclip.workflows.is_rank_zero()"``:
    this filter then only meets it on rank 0.
    """
    if is_rank_zero():
        return list(handlers)
    return [h for h in handlers if not isinstance(h, LOGGING_HANDLERS)]
