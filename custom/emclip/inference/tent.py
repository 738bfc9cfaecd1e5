"""Test-time adaptation of the normalisation layers to one case, undone when the case is done.

- AdaBN (Li et al., "Adaptive batch normalization for practical domain adaptation", Pattern
  Recognition 2018): the batch norms' running statistics are re-estimated on the case itself, so a
  scanner whose intensities differ from the source's is normalised with its own statistics.
- TENT (Wang et al., ICLR 2021): a few entropy-minimisation steps on the affine parameters of the
  normalisation layers.

Every parameter, buffer and flag of the layers touched is restored after the case, so cases never
leak into each other.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator

import torch
import torch.nn as nn

__all__ = ["NORM_TYPES", "case_statistics", "entropy", "norm_layers", "tent_adaptation"]

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.LayerNorm,
)


def entropy(probs: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Shannon entropy (nats) of probability vectors along ``dim``; 0 log 0 counts as 0."""
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim)


def norm_layers(network: nn.Module) -> list[nn.Module]:
    """The normalisation layers of ``network`` that have an affine weight."""
    return [m for m in network.modules() if isinstance(m, NORM_TYPES) and getattr(m, "weight", None) is not None]


@contextlib.contextmanager
def _restored(layers: list[nn.Module]) -> Iterator[None]:
    """On exit, every parameter, buffer, mode and momentum of ``layers`` as it was on entry."""
    saved = [(copy.deepcopy(m.state_dict()), m.training, getattr(m, "momentum", None)) for m in layers]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (state, mode, momentum) in zip(layers, saved):
                m.load_state_dict(state)
                m.train(mode)
                if hasattr(m, "momentum"):
                    m.momentum = momentum


@contextlib.contextmanager
def case_statistics(network: nn.Module, x: torch.Tensor, forward: Callable[[torch.Tensor], object]) -> Iterator[None]:
    """Inside the block, ``network``'s batch norms normalise with the statistics of ``x`` (AdaBN).

    One ``forward(x)`` with the batch norms in training mode and a cumulative average
    (``momentum=None``) replaces their running statistics by the mean over every batch the inner
    inferer forms from the case (each batch of slices of a volume); they are then back in eval
    mode, so every slice is normalised with the whole case's statistics, not with its own batch's.
    Layers without running statistics, and networks without batch norm (instance norms already use
    each image's own statistics), are unchanged.

    Args:
        network: the network, in eval mode.
        x: the case's network input.
        forward: runs ``network`` on ``x`` the way the prediction will (e.g. slice by slice).
    """
    layers = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    with _restored(layers):
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with torch.no_grad():
            forward(x)
        for m in layers:
            m.eval()
        yield


@contextlib.contextmanager
def tent_adaptation(
    network: nn.Module,
    x: torch.Tensor,
    predict: Callable[[torch.Tensor], torch.Tensor],
    steps: int = 1,
    lr: float = 1e-3,
    batch_statistics: bool = True,
) -> Iterator[None]:
    """Adapt ``network`` to ``x`` on entry; restore it on exit.

    Inside the block the network keeps its adapted state (so the case's final prediction uses it);
    batch-norm layers then normalise with the case's own statistics when ``batch_statistics``.

    Args:
        network: the network, in eval mode.
        x: the case's network input.
        predict: maps ``x`` to class probabilities through ``network`` (differentiably).
        steps: Adam steps on the mean per-pixel entropy.
        lr: Adam learning rate.
        batch_statistics: batch-norm layers use the statistics of ``x`` (as TENT does) instead of
            their running averages.

    Raises:
        ValueError: ``network`` has no normalisation layer with affine parameters.
    """
    layers = norm_layers(network)
    if not layers:
        raise ValueError("tent: the network has no normalisation layer with affine parameters to adapt")
    grads = {p: p.requires_grad for p in network.parameters()}
    params = [p for m in layers for p in (m.weight, getattr(m, "bias", None)) if p is not None]
    try:
        with _restored(layers):
            for p in grads:
                p.requires_grad_(False)
            for p in params:
                p.requires_grad_(True)
            if batch_statistics:
                for m in layers:
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.train()
            optimizer = torch.optim.Adam(params, lr=lr)
            with torch.enable_grad():
                for _ in range(steps):
                    loss = entropy(predict(x).float()).mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
            yield
    finally:
        for p, flag in grads.items():
            p.grad = None
            p.requires_grad_(flag)
