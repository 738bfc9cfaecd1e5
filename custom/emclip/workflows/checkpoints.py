"""Checkpoint handlers: per-epoch checkpoints with resume, and a model file even without validation.

Every file is written atomically (:func:`save_atomic`): a process killed while saving leaves the
previous file in place, never a truncated one.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from ignite.handlers.checkpoint import BaseSaveHandler
from monai.handlers import CheckpointSaver, ValidationHandler

from emclip.workflows.checks import ConfigError, load_weights

__all__ = ["last_checkpoint", "save_atomic", "AtomicCheckpointSaver", "EpochCheckpoints", "SourceValidation"]

logger = logging.getLogger("emclip.workflows")


def _main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)


def save_atomic(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it to ``path`` (atomic on one file system)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class _AtomicSaver(BaseSaveHandler):
    """Ignite save handler writing with :func:`save_atomic`; a fixed ``filename`` replaces itself, so it is never removed first."""

    def __init__(self, dirname: str, filename: str | None = None) -> None:
        self.dirname = dirname
        self.filename = filename

    def __call__(self, checkpoint: Any, filename: str, metadata: Any = None) -> None:
        if _main_process():
            save_atomic(checkpoint, os.path.join(self.dirname, self.filename or filename))

    def remove(self, filename: str) -> None:
        path = os.path.join(self.dirname, filename)
        if self.filename is None and _main_process() and os.path.exists(path):
            os.remove(path)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` (same arguments) writing atomically.

    MONAI's saver removes the previous file before writing the new one, and writes in place: a
    kill in between loses the best model. Here the new file is written beside it and renamed over it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                checkpoint.save_handler = _AtomicSaver(self.save_dir, getattr(checkpoint.save_handler, "filename", None))


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
    with ``resume`` continues after the last finished epoch and logs from which; a run whose
    checkpoint is already at ``max_epochs`` says so and ends. The new file is written atomically
    before the older one is removed, so a kill at any moment loses at most the epoch in progress.

    Args:
        ckpt_dir: folder of ``checkpoint_checkpoint_epoch=N.pt``.
        save_dict: the objects to save and restore, without the trainer.
        resume: load the newest checkpoint before training starts, if there is one (tensors are
            read on the CPU and copied into the objects, wherever they live).
    """

    def __init__(self, ckpt_dir: str, save_dict: dict[str, Any], resume: bool = True):
        self.ckpt_dir = ckpt_dir
        self.save_dict = save_dict
        self.resume = resume
        self.objects: dict[str, Any] = {}

    def attach(self, engine: Engine) -> None:
        self.objects = {**self.save_dict, "trainer": engine}
        path = last_checkpoint(self.ckpt_dir) if self.resume else None
        if path is not None:
            engine.add_event_handler(Events.STARTED, self._resume, path)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._save)

    def _resume(self, engine: Engine, path: str) -> None:
        checkpoint = load_weights(path, "ckpt_dir", "delete it, or start over with --resume False")
        max_epochs = engine.state.max_epochs  # the configured epochs win over the checkpoint's
        try:
            Checkpoint.load_objects(to_load=self.objects, checkpoint=checkpoint)
        except (KeyError, RuntimeError, TypeError, ValueError) as err:
            raise ConfigError(
                f"ckpt_dir: {path} does not fit this run ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                "it was written with other settings: delete it, or start over with --resume False"
            ) from err
        engine.state.max_epochs = max_epochs
        if engine.state.epoch >= max_epochs:
            logger.info(
                "training already finished: %s is epoch %d of epochs=%d; nothing left to do "
                "(raise --epochs to train longer, or --resume False to start over)",
                path, engine.state.epoch, max_epochs,
            )
        else:
            logger.info("resuming from epoch %d of %d (%s)", engine.state.epoch, max_epochs, path)

    def _save(self, engine: Engine) -> None:
        if not _main_process():
            return
        path = os.path.join(self.ckpt_dir, f"checkpoint_checkpoint_epoch={engine.state.epoch}.pt")
        save_atomic({k: getattr(obj, "module", obj).state_dict() for k, obj in self.objects.items()}, path)
        # older epochs, and the temporary file of a save that a kill cut short
        for old in glob.glob(os.path.join(self.ckpt_dir, "checkpoint_*.pt*")):
            if old != path:
                os.remove(old)


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
        if not _main_process():
            return
        net = getattr(self.network, "module", self.network)  # unwrap DDP
        # a plain state_dict, as CheckpointSaver writes for a single object
        save_atomic(net.state_dict(), self.path)
