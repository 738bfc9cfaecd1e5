"""Mirroring ensemble: the mean of a prediction over every flip of the chosen spatial axes."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch

__all__ = ["flip_combinations", "flip_ensemble"]


def flip_combinations(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of ``axes``, the empty one (no flip) first: ``2 ** len(axes)`` tuples."""
    return [combo for k in range(len(axes) + 1) for combo in itertools.combinations(tuple(axes), k)]


def flip_ensemble(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, axes: Sequence[int]) -> torch.Tensor:
    """Mean of ``predict`` over all flips of ``x`` along ``axes``, each output flipped back.

    Args:
        predict: maps an input to an output with the same spatial axes (e.g. class probabilities).
        x: input tensor.
        axes: tensor dimensions to mirror; ``[]`` runs ``predict`` once.
    """
    total: torch.Tensor | None = None
    combos = flip_combinations(axes)
    for combo in combos:
        out = predict(torch.flip(x, combo) if combo else x)
        out = torch.flip(out, combo) if combo else out
        total = out if total is None else total + out
    return total / len(combos)
