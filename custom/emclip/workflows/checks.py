"""Configuration checks that fail before any training or evaluation starts, naming the key."""

from __future__ import annotations

import os
import pickle
import sys
import zipfile
from typing import Any, Callable, Sequence

import torch

from emclip.data import DataError, sort_items, split_domains

__all__ = ["check_command_line", "check_dataset_dir", "check_task", "select_splits", "check_checkpoint", "check_metadata", "describe_file", "load_weights"]


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key."""


def check_dataset_dir(dataset_dir: str) -> str:
    """Return ``dataset_dir`` if it is a folder, else raise naming the key."""
    if not os.path.isdir(dataset_dir):
        raise ConfigError(f"dataset_dir: {dataset_dir!r} is not a folder (override it with --dataset_dir)")
    return dataset_dir


# Python Fire, which parses `python -m monai.bundle run` overrides, reads these as text, and a
# non-empty text counts as true in a config expression: `--refine#enabled false` would switch it on.
_FIRE_TEXT = {"false": "False", "true": "True", "null": "None"}


def check_command_line(argv: Sequence[str] | None = None) -> None:
    """Raise naming the key when a command-line override is spelt ``false``, ``true`` or ``null``
    (Fire keeps those as text) instead of ``False``, ``True`` or ``None``. ``_disabled_`` keys are
    exempt: MONAI reads their text itself. Without ``argv``, the process's own arguments when it is
    ``python -m monai.bundle`` (a bundle run from Python or MONAI Label has no such overrides)."""
    if argv is None:
        if not sys.argv[0].endswith(os.path.join("monai", "bundle", "__main__.py")):
            return
        argv = sys.argv[1:]
    args = list(argv)
    for i, arg in enumerate(args):
        if not arg.startswith("--"):
            continue
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 == len(args) or args[i + 1].startswith("--"):
                continue
            value = args[i + 1]
        fix = _FIRE_TEXT.get(value.strip())
        if fix is not None and not key.endswith("_disabled_"):
            raise ConfigError(
                f"{key}: the command line reads {value!r} as the text {value!r}, which a config expression "
                f"takes as true; write --{key} {fix}"
            )


def check_task(task: str | None) -> None:
    """Raise when no task overlay followed the workflow config (it names the task and its pipeline)."""
    if not task:
        raise ConfigError(
            "task: no task overlay in --config_file; add bundle/configs/fundus.yaml, cardiac.yaml or task_2d.yaml "
            "(or your own overlay, see 'Add your own task' in the README) after the workflow configs"
        )


def check_metadata(meta: dict[str, Any], num_classes: int, in_channels: int) -> None:
    """Raise naming ``meta_file`` when the bundle metadata describes other input channels or classes than the
    configs (a metadata file of the other task); metadata without those entries is not checked."""
    data_format = meta.get("network_data_format", {}) if isinstance(meta, dict) else {}
    found = {
        "in_channels": data_format.get("inputs", {}).get("image", {}).get("num_channels", in_channels),
        "num_classes": data_format.get("outputs", {}).get("pred", {}).get("num_channels", num_classes),
    }
    if found != {"in_channels": in_channels, "num_classes": num_classes}:
        raise ConfigError(
            f"meta_file: the metadata describes {found['in_channels']} input channels and {found['num_classes']} "
            f"classes but the configs have in_channels={in_channels}, num_classes={num_classes}; fundus takes "
            "bundle/configs/metadata.json, cardiac adds bundle/configs/metadata_cardiac.json"
        )


def select_splits(
    dataset_dir: str,
    find_items: Callable[[str], list[dict]],
    train_domains: str | Sequence[str],
    eval_domains: str | Sequence[str] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    train_splits: str | Sequence[str] | None = None,
) -> dict[str, list[dict]]:
    """The items ``find_items(dataset_dir)`` lists, split into ``train``/``val`` (source domains) and ``eval``.

    Args:
        dataset_dir: the data folder.
        find_items: the overlay's ``datalist`` reader (a callable taking the folder).
        train_domains, eval_domains, val_fraction, seed, train_splits: see ``emclip.data.split_domains``.

    Errors name the config key: ``dataset_dir`` (a missing folder, or the reader's ``DataError``: no
    items in the layout it expects, an image without its label, ...), ``train_domains`` /
    ``eval_domains`` (unknown or empty domain selection, with the domains found).
    """
    try:
        items = sort_items(find_items(check_dataset_dir(dataset_dir)))
    except DataError as err:
        raise DataError(f"dataset_dir {dataset_dir!r}: {err}") from err
    try:
        return split_domains(items, train_domains, eval_domains, val_fraction, seed, train_splits)
    except ValueError as err:
        raise ConfigError(f"train_domains={train_domains!r}, eval_domains={eval_domains!r}: {err}") from err


def describe_file(path: str) -> str:
    """Size and what a file looks like (empty, a PyTorch zip archive, a pickle, text, other bytes), for messages."""
    size = os.path.getsize(path)
    if size == 0:
        return "0 bytes: an empty file"
    with open(path, "rb") as f:
        head = f.read(256)
    if head.startswith(b"PK\x03\x04"):
        kind = "a PyTorch zip archive" if zipfile.is_zipfile(path) else "the start of a zip archive, truncated (no end record)"
    elif head[:1] == b"\x80":
        kind = "a Python pickle (the legacy torch.save format)"
    else:
        text = head.decode("utf-8", errors="replace")
        if "\ufffd" not in text and all(c.isprintable() or c in "\n\r\t" for c in text) and text.strip():
            kind = f"text starting with {text.strip().splitlines()[0][:40]!r}"
        else:
            kind = f"binary data starting with {head[:8].hex(' ')}"
    return f"{size} bytes: {kind}"


def load_weights(path: str, key: str = "ckpt_path", hint: str = "point --ckpt_path at a model.pt written by training") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, or a ``ConfigError`` that says what the file is.

    Args:
        path: the checkpoint file.
        key: the config key that named it, first in the message.
        hint: what to do, last in the message.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for damaged files (EOFError, RuntimeError, ...)
        error = err
    found = describe_file(path)
    if "PyTorch zip" in found or "pickle" in found:
        if isinstance(error, pickle.UnpicklingError) and "Weights only" in str(error):
            # PyTorch suggests switching weights_only off: that would unpickle (and run) arbitrary code
            reason = "it holds Python objects other than tensors and plain containers, which are not loaded (weights_only=True)"
        else:
            reason = f"a damaged checkpoint ({type(error).__name__}: {str(error).split('. ')[0]})"
    elif "truncated" in found:
        reason = "a truncated checkpoint (the write was cut short)"
    else:
        reason = "not a PyTorch checkpoint"
    raise ConfigError(f"{key}: {path}: {reason}; the file is {found}; {hint}")


def check_checkpoint(ckpt_path: str, num_classes: int, network: torch.nn.Module | None = None) -> str:
    """Return ``ckpt_path`` if it holds a state_dict (plain or under ``"model"``) that fits, else raise naming
    the key and saying what the file holds.

    EM-CLIP checkpoints are checked for ``num_classes`` (their ``text.embeddings`` has one row per
    class); with ``network``, every checkpoint's tensor names and shapes are compared with the
    network's (a baseline U-Net checkpoint fits a U-Net ``network_def``).

    Args:
        ckpt_path: the checkpoint file.
        num_classes: the configured number of classes.
        network: the network the weights are for (unwrapped from DDP).
    """
    if not os.path.isfile(ckpt_path):
        raise ConfigError(f"ckpt_path: no checkpoint at {ckpt_path!r} (train first or override --ckpt_path)")
    state = load_weights(ckpt_path)
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        found = f"a {type(state).__name__}" if not isinstance(state, dict) else f"a dict with keys {sorted(map(str, state))[:5]}"
        raise ConfigError(
            f"ckpt_path: {ckpt_path!r} holds {found}, not a state_dict (a dict of tensors, or one under 'model'); "
            "point --ckpt_path at a model.pt written by training"
        )
    text = state.get("text.embeddings")
    if text is not None and text.shape[0] != num_classes:
        raise ConfigError(
            f"ckpt_path: {ckpt_path!r} was trained for {text.shape[0]} classes but num_classes={num_classes}; "
            "use the task overlay the checkpoint was trained with"
        )
    if network is not None:
        _check_fits(ckpt_path, state, getattr(network, "module", network).state_dict())
    return ckpt_path


def _check_fits(ckpt_path: str, state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    missing = [k for k in expected if k not in state]
    # a fine-tuned text tower is skipped by a network without one: its embeddings are in the buffer
    unexpected = [k for k in state if k not in expected and not k.startswith("text.text_model.")]
    shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or shapes):
        return
    details = []
    if missing:
        details.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
    if unexpected:
        details.append(f"{len(unexpected)} not in the network (e.g. {unexpected[0]!r})")
    if shapes:
        k = shapes[0]
        details.append(f"{len(shapes)} of another shape (e.g. {k!r}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)})")
    matching = len(expected) - len(missing) - len(shapes)
    raise ConfigError(
        f"ckpt_path: {ckpt_path!r} does not fit network_def: {matching} of the network's {len(expected)} tensors "
        f"match; {', '.join(details)}; use the backbone and network_def settings it was trained with"
    )
