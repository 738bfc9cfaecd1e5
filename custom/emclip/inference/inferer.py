"""One inferer for every test-time step: structure-centred refinement, AdaBN, TENT and the mirroring
and intensity ensembles."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.data import MetaTensor
from monai.inferers import Inferer, SimpleInferer, SliceInferer
from monai.utils import convert_to_dst_type

from emclip.inference.refine import DiscRefiner
from emclip.inference.tent import case_statistics, tent_adaptation
from emclip.inference.tta import check_gammas, flip_ensemble, gamma_ensemble

__all__ = ["TestTimeInferer", "supports_refine"]


def supports_refine(inferer: Inferer) -> bool:
    """Whether the two-pass :class:`DiscRefiner` applies to a task whose network runs as ``inferer``:
    it crops 2D images, so not volumes run slice by slice (``SliceInferer``)."""
    return not isinstance(inferer, SliceInferer)


class TestTimeInferer(Inferer):
    """Wrap an inferer so that it returns softmax probabilities, with optional test-time steps.

    Per call (one case with batch size 1): AdaBN re-estimates the batch norms' statistics on the
    input, then TENT adapts the normalisation layers to it (both undone afterwards), the disc
    refiner runs its two passes, and each network pass is the mean softmax over the mirrored inputs
    and the intensity curves. Without any step it is ``softmax(inferer(x))``, whose argmax is the
    plain prediction's.

    Args:
        inferer: the inner inferer (default ``SimpleInferer``; ``SliceInferer`` for volumes).
        flips: mirroring ensemble over the in-plane axes (4 passes in 2D).
        flip_axes: spatial axes to mirror (0 = first spatial axis); ``None``: every spatial axis
            except a ``SliceInferer``'s slice axis.
        gammas: intensity ensemble, the mean over the input raised to each gamma on its own range
            (:func:`~emclip.inference.tta.gamma_ensemble`); ``[1.0]``: the input as it is. With
            ``flips`` every curve is mirrored too.
        adabn: batch norms normalise with the case's own statistics (one extra pass per case);
            with ``tent_batch_statistics`` TENT's per-batch statistics take over during TENT.
        tent_steps: TENT steps per case; 0 switches it off.
        tent_lr: TENT's Adam learning rate.
        tent_batch_statistics: batch norms use the case's statistics during TENT.
        refine: a :class:`DiscRefiner` for the two-pass mode of 2D images, or ``None``.
    """

    def __init__(
        self,
        inferer: Inferer | None = None,
        flips: bool = False,
        flip_axes: Sequence[int] | None = None,
        gammas: Sequence[float] = (1.0,),
        adabn: bool = False,
        tent_steps: int = 0,
        tent_lr: float = 1e-3,
        tent_batch_statistics: bool = True,
        refine: DiscRefiner | None = None,
    ) -> None:
        super().__init__()
        self.inferer = inferer if inferer is not None else SimpleInferer()
        if refine is not None and not supports_refine(self.inferer):
            raise ValueError("refine: the two-pass mode is for 2D images, not SliceInferer volumes")
        self.flips = flips
        self.flip_axes = flip_axes
        self.gammas = check_gammas(gammas)
        self.adabn = adabn
        self.tent_steps = int(tent_steps)
        self.tent_lr = tent_lr
        self.tent_batch_statistics = tent_batch_statistics
        self.refine = refine

    def _axes(self, x: torch.Tensor) -> list[int]:
        """Tensor dimensions mirrored for input ``x`` (batch and channel first)."""
        if not self.flips:
            return []
        spatial = range(x.ndim - 2)
        if self.flip_axes is not None:
            chosen = list(self.flip_axes)
        elif isinstance(self.inferer, SliceInferer):
            chosen = [a for a in spatial if a != self.inferer.spatial_dim]
        else:
            chosen = list(spatial)
        bad = [a for a in chosen if a not in spatial]
        if bad:
            raise ValueError(f"tta: flip axes {bad} out of range for {x.ndim - 2} spatial axes")
        return [2 + a for a in chosen]

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Class probabilities ``(B, K, spatial)`` in the input's geometry.

        Args:
            inputs: the network input; a ``MetaTensor``'s file names name the cases in messages.
            network: the network.
            args, kwargs: passed to the inner inferer.
        """
        x = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs

        def softmax(t: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.inferer(t, network, *args, **kwargs).float(), dim=1)

        def mirrored(t: torch.Tensor) -> torch.Tensor:
            return flip_ensemble(softmax, t, self._axes(t))

        def predict(t: torch.Tensor) -> torch.Tensor:
            return gamma_ensemble(mirrored, t, self.gammas)

        with contextlib.ExitStack() as adaptations:
            if self.adabn or self.tent_steps > 0:
                # the adaptations use what the network sees first: the whole input, or the refiner's first pass
                first = x if self.refine is None else self.refine.first_pass_input(x)
                if self.adabn:
                    adaptations.enter_context(case_statistics(network, first, softmax))
                if self.tent_steps > 0:
                    adaptations.enter_context(tent_adaptation(
                        network, first, softmax, self.tent_steps, self.tent_lr, self.tent_batch_statistics))
            if self.refine is None:
                probs = predict(x)
            else:
                probs = self.refine(x, predict, _names(inputs))
        return convert_to_dst_type(probs, inputs)[0] if isinstance(inputs, MetaTensor) else probs


def _names(x: torch.Tensor) -> list[str] | None:
    """File names of a collated ``MetaTensor`` batch, if it has them."""
    names = getattr(x, "meta", {}).get("filename_or_obj")
    if names is None:
        return None
    return [str(n) for n in names] if isinstance(names, (list, tuple)) else [str(names)]
