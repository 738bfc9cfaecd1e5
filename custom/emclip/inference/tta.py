"""Test-time ensembles: the mean of a prediction over every flip of the chosen spatial axes, and over
intensity curves (gammas) of the input."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch

__all__ = ["check_gammas", "flip_combinations", "flip_ensemble", "gamma_ensemble"]


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


def check_gammas(gammas: Sequence[float]) -> list[float]:
    """``gammas`` as floats; a clear error for an empty list or a gamma that is not positive."""
    values = [float(g) for g in gammas]
    if not values or any(not math.isfinite(g) or g <= 0 for g in values):
        raise ValueError(f"tta#gammas must be a non-empty list of positive numbers ([1.0]: one plain pass); got {list(gammas)}")
    return values


def gamma_ensemble(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, gammas: Sequence[float]) -> torch.Tensor:
    """Mean of ``predict`` over ``x`` with its intensities raised to each of ``gammas``.

    The curve acts on each image channel's own range: ``lo + (hi - lo) * ((x - lo) / (hi - lo)) ** g``
    with ``lo`` and ``hi`` the channel's minimum and maximum over the whole input (a volume, not a
    slice, so every slice of a case gets the same curve). On an image scaled to [0, 1] that is
    ``x ** g``, the change of contrast evaluate.yaml's ``input_gamma`` simulates; an affine
    normalisation before it (fundus: CLIP's mean and std) does not change it. A gamma of 1 is the
    input as it is.

    Args:
        predict: maps an input to an output of the same spatial shape (e.g. class probabilities).
        x: input ``(B, C, spatial)``.
        gammas: exponents; ``[1.0]`` runs ``predict`` once on ``x``.
    """
    gammas = check_gammas(gammas)
    dims = tuple(range(2, x.ndim))
    lo = x.amin(dim=dims, keepdim=True)
    span = (x.amax(dim=dims, keepdim=True) - lo).clamp(min=torch.finfo(x.dtype).tiny)
    unit = ((x - lo) / span).clamp(0.0, 1.0)
    total: torch.Tensor | None = None
    for g in gammas:
        out = predict(x if g == 1.0 else lo + span * unit**g)
        total = out if total is None else total + out
    return total / len(gammas)
