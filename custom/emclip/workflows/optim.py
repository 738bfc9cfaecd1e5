"""Optimiser parameter groups (a learning-rate multiplier per network part) and the LR schedule."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
import torch.nn as nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR

from emclip.networks import EMCLIP

__all__ = ["PARTS", "network_part", "no_weight_decay", "param_groups", "warmup_cosine"]

logger = logging.getLogger("emclip.workflows")

# EM-CLIP's parts by state_dict prefix(es); everything else (decoder, detail stem, pyramid and input
# adapters) is newly initialised and grouped with the decoder.
PARTS: dict[str, str | tuple[str, ...]] = {"image": "backbone.visual.", "text": "text.", "em": ("em.", "level_em."), "decoder": ""}


def network_part(name: str) -> str:
    """The part (a key of :data:`PARTS`) of an EM-CLIP parameter name."""
    return next(part for part, prefix in PARTS.items() if name.startswith(prefix))


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """True for norm weights, biases, gates and scales (tensors of at most one dimension) and for
    embeddings (positional, class and token embeddings): decaying them towards zero only distorts
    the features, as in CLIP's and DenseCLIP's training recipes."""
    return param.ndim <= 1 or any(part.endswith("embedding") for part in name.split("."))


def param_groups(
    network: nn.Module,
    lr: float,
    weight_decay: float,
    multipliers: Mapping[str, float] | None = None,
) -> list[dict]:
    """Optimiser parameter groups: one per network part and weight-decay setting.

    EM-CLIP's parameters are split into ``image`` (the CLIP image tower), ``text`` (the CLIP text
    tower, when it is trained), ``em`` (EM aggregation) and ``decoder`` (everything else); each part
    trains at ``lr * multipliers[part]``. Any other network (e.g. MONAI's U-Net in the benchmark) is
    one part at ``lr``. Parameters for which :func:`no_weight_decay` holds get no weight decay.
    Frozen parameters (``requires_grad`` off) and parts with multiplier 0 are left out. The groups
    (tensors, parameters, learning rate, weight decay) are logged.

    Args:
        network: the network, or a ``DistributedDataParallel`` wrapping it.
        lr: base learning rate.
        weight_decay: weight decay of the decayed groups.
        multipliers: learning-rate multiplier per part (``image``, ``text``, ``em``, ``decoder``);
            a missing part is 1.0.

    Raises:
        ValueError: a multiplier names an unknown part or is negative.
    """
    multipliers = dict(multipliers or {})
    unknown = sorted(set(multipliers) - set(PARTS))
    if unknown or any(float(m) < 0 for m in multipliers.values()):
        raise ValueError(
            f"lr_multipliers: {multipliers} must map parts {list(PARTS)} to multipliers >= 0"
            + (f" (unknown: {unknown})" if unknown else "")
        )
    network = getattr(network, "module", network)  # unwrap DDP
    split = isinstance(network, EMCLIP)
    groups: dict[tuple[str, bool], dict] = {}
    # the decoder first: MONAI's LrScheduleHandler prints the first group's learning rate
    order = {part: i for i, part in enumerate(("decoder", "em", "image", "text", "all"))}
    for name, param in network.named_parameters():
        if not param.requires_grad:
            continue
        part = network_part(name) if split else "all"
        scale = float(multipliers.get(part, 1.0)) if split else 1.0
        if scale == 0:
            continue
        decay = not no_weight_decay(name, param)
        group = groups.setdefault(
            (part, decay),
            {"name": f"{part}/{'decay' if decay else 'no_decay'}", "params": [], "lr": lr * scale,
             "weight_decay": weight_decay if decay else 0.0},
        )
        group["params"].append(param)
    if not groups:
        raise ValueError(f"lr_multipliers={multipliers}: no trainable parameter is left to optimise")
    ordered = [groups[key] for key in sorted(groups, key=lambda k: (order[k[0]], not k[1]))]
    for group in ordered:
        logger.info(
            "parameter group %s: %d tensors, %d parameters, lr %.3g, weight decay %.3g", group["name"],
            len(group["params"]), sum(p.numel() for p in group["params"]), group["lr"], group["weight_decay"],
        )
    return ordered


def warmup_cosine(
    optimizer: torch.optim.Optimizer, epochs: int, warmup_epochs: int = 0, warmup_start: float = 0.1
) -> LRScheduler:
    """Cosine annealing over ``epochs``, after an optional linear warm-up; stepped once per epoch.

    Args:
        optimizer: the optimiser (every group is scaled alike, so multipliers are kept).
        epochs: training epochs (the warm-up included).
        warmup_epochs: epochs of linear warm-up from ``warmup_start`` times each group's rate up to
            that rate; the cosine covers the epochs left. 0: cosine annealing over ``epochs`` alone.
        warmup_start: fraction of the learning rate in the first epoch.

    Raises:
        ValueError: ``warmup_epochs`` is negative or not below ``epochs``, or ``warmup_start`` is
            outside (0, 1].
    """
    if warmup_epochs == 0:
        return CosineAnnealingLR(optimizer, T_max=epochs)
    if not 0 < warmup_epochs < epochs:
        raise ValueError(f"warmup_epochs={warmup_epochs} must be 0 or between 1 and epochs - 1 (epochs={epochs})")
    if not 0 < warmup_start <= 1:
        raise ValueError(f"warmup_start={warmup_start} must be in (0, 1]: the first epoch's fraction of the rate")
    warmup = LinearLR(optimizer, start_factor=warmup_start, end_factor=1.0, total_iters=warmup_epochs)
    cosine = CosineAnnealingLR(optimizer, T_max=epochs - warmup_epochs)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_epochs])
