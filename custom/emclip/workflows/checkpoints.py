"""Checkpoint handlers: per-epoch checkpoints with resume, and a model file even without validation."""

from __future__ import annotations

import glob
import logging
import os
import re
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader, CheckpointSaver, ValidationHandler

__all__ = ["last_checkpoint", "EpochCheckpoints", "SourceValidation"]

logger = logging.getLogger("emclip.workflows")


def last_checkpoint(ckpt_dir: str, prefix: str = "checkpoint") -> str | None:
    """The ``<prefix>_*epoch=N.pt`` file in ``ckpt_dir`` with the largest N, or ``None``."""
    found = []
    for path in glob.glob(os.path.join(ckpt_dir, f"{prefix}_*.pt")):
        match = re.search(r"epoch=(\d+)", os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


class EpochCheckpoints:
    """Save a checkpoint after every epoch and, with ``resume``, continue from the newest one.

    The checkpoint holds ``save_dict`` (model, optimizer, LR scheduler, ...) plus the trainer
    itself (epoch and iteration counters), which is added at ``attach`` time so that the config
    needs no reference from the trainer's handlers back to the trainer. Re-running the same command
    with ``resume`` continues after the last finished epoch; only the newest file is kept.

    Args:
        ckpt_dir: folder of ``checkpoint_*epoch=N.pt``.
        save_dict: the objects to save and restore, without the trainer.
        resume: load the newest checkpoint before training starts, if there is one.
        map_location: device for loading.
    """

    def __init__(self, ckpt_dir: str, save_dict: dict[str, Any], resume: bool = True, map_location: Any = "cpu"):
        self.ckpt_dir = ckpt_dir
        self.save_dict = save_dict
        self.resume = resume
        self.map_location = map_location

    def attach(self, engine: Engine) -> None:
        objects = {**self.save_dict, "trainer": engine}
        path = last_checkpoint(self.ckpt_dir) if self.resume else None
        if path is not None:
            logger.info("resuming from %s", path)
            CheckpointLoader(load_path=path, load_dict=objects, map_location=self.map_location).attach(engine)
        CheckpointSaver(
            self.ckpt_dir, objects, file_prefix="checkpoint", save_interval=1, n_saved=1, epoch_level=True
        ).attach(engine)
        # the saver only rotates its own files; the one a resumed run started from is pruned here
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._prune)

    def _prune(self, engine: Engine) -> None:
        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return
        newest = last_checkpoint(self.ckpt_dir)
        for path in glob.glob(os.path.join(self.ckpt_dir, "checkpoint_*.pt")):
            if path != newest:
                os.remove(path)


class SourceValidation(ValidationHandler):
    """``ValidationHandler`` that copes with an empty validation split.

    With few labelled subjects (e.g. in MONAI Label) the validation split can be empty; then the
    network's weights are saved to ``<ckpt_dir>/<filename>`` after every epoch instead, so a model
    file exists as it would with validation.

    Args:
        validator: the validation evaluator.
        interval: epochs between validations.
        ckpt_dir: folder of the fallback model file.
        network: the network whose ``state_dict`` is saved.
        filename: fallback file name.
    """

    def __init__(self, validator: Any, interval: int, ckpt_dir: str, network: torch.nn.Module, filename: str = "model.pt"):
        super().__init__(interval=interval, validator=validator, epoch_level=True)
        self.path = os.path.join(ckpt_dir, filename)
        self.network = network

    def attach(self, engine: Engine) -> None:
        if len(self.validator.data_loader) > 0:
            super().attach(engine)
            return
        logger.warning("the validation split is empty: saving %s after every epoch instead", self.path)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._save)

    def _save(self, engine: Engine) -> None:
        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        net = getattr(self.network, "module", self.network)  # unwrap DDP
        # a plain state_dict, as CheckpointSaver writes for a single object
        torch.save(net.state_dict(), self.path)
