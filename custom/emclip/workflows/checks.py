"""Configuration checks that fail before any training or evaluation starts, naming the key."""

from __future__ import annotations

import os
from typing import Sequence

import torch

from emclip.data import build_datalist, split_domains

__all__ = ["check_dataset_dir", "select_splits", "check_checkpoint"]


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key."""


def check_dataset_dir(dataset_dir: str) -> str:
    """Return ``dataset_dir`` if it is a folder, else raise naming the key."""
    if not os.path.isdir(dataset_dir):
        raise ConfigError(f"dataset_dir: {dataset_dir!r} is not a folder (override it with --dataset_dir)")
    return dataset_dir


def select_splits(
    dataset_dir: str,
    task: str,
    train_domains: str | Sequence[str],
    eval_domains: str | Sequence[str] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    train_splits: str | Sequence[str] | None = None,
) -> dict[str, list[dict]]:
    """Datalist of ``dataset_dir`` split into ``train``/``val`` (source domains) and ``eval``.

    Errors name the config key: ``dataset_dir`` (missing folder or no data), ``train_domains`` /
    ``eval_domains`` (unknown or empty domain selection, with the domains found).
    """
    items = build_datalist(check_dataset_dir(dataset_dir), task)
    if not items:
        raise ConfigError(f"dataset_dir: no {task} image/label pairs found under {dataset_dir!r}")
    try:
        return split_domains(items, train_domains, eval_domains, val_fraction, seed, train_splits)
    except ValueError as err:
        raise ConfigError(f"train_domains={train_domains!r}, eval_domains={eval_domains!r}: {err}") from err


def check_checkpoint(ckpt_path: str, num_classes: int) -> str:
    """Return ``ckpt_path`` if it holds a state_dict (plain or under ``"model"``), else raise naming
    the key. EM-CLIP checkpoints are also checked for ``num_classes`` (their ``text.embeddings``
    has one row per class); other networks (a baseline U-Net) are checked by ``load_state_dict``."""
    if not os.path.isfile(ckpt_path):
        raise ConfigError(f"ckpt_path: no checkpoint at {ckpt_path!r} (train first or override --ckpt_path)")
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise ConfigError(f"ckpt_path: {ckpt_path!r} is not a state_dict (a dict of tensors, or one under 'model')")
    text = state.get("text.embeddings")
    if text is not None and text.shape[0] != num_classes:
        raise ConfigError(
            f"ckpt_path: {ckpt_path!r} was trained for {text.shape[0]} classes but num_classes={num_classes}; "
            "use the task overlay the checkpoint was trained with"
        )
    return ckpt_path
