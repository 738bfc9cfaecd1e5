"""Exponential moving average of the network's weights, for validation and the saved model.

Averaging the weights along the training trajectory is reported to find flatter minima that hold up better on
unseen domains than the last iterate (SWAD, Cha et al., NeurIPS 2021); on two M&Ms subjects it did not
(docs/benchmarks.md, eighth screen), so it is off by default.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn
from ignite.engine import Engine, Events

from emclip.workflows.checks import ConfigError

__all__ = ["WeightAverage"]


class WeightAverage:
    """Keep an exponential moving average of ``network`` and update it after every training step.

    ``network`` (this object's attribute) is what validation, the best ``model.pt`` and the
    evaluation use: the averaged copy when ``decay > 0``, else the trained network itself, so that
    ``decay: 0`` is exactly the training without averaging. Batch-norm statistics are averaged like
    the weights, so the copy needs no pass over the data; integer buffers (batch counters) are copied.
    The copy never trains: it is frozen and kept out of the optimiser.

    The decay ramps up as ``min(decay, (1 + t) / (10 + t))`` at step ``t`` (the trainer's
    iteration), so the random initial weights are forgotten within the first steps instead of
    lingering for ``1 / (1 - decay)`` steps; resuming continues the ramp from the restored iteration.

    Args:
        network: the trained network (a ``DistributedDataParallel`` wrapper is unwrapped).
        decay: weight of the running average at each step, in [0, 1); 0 switches averaging off.

    Raises:
        ConfigError: ``decay`` is outside [0, 1).
    """

    def __init__(self, network: nn.Module, decay: float = 0.0):
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"weight_average_decay: {decay} is not in [0, 1); 0 switches the weight average off, 0.999 is typical")
        self.decay = float(decay)
        self.trained = getattr(network, "module", network)
        self.network = copy.deepcopy(self.trained).requires_grad_(False) if self.decay > 0 else self.trained

    def attach(self, engine: Engine) -> None:
        if self.decay > 0:
            engine.add_event_handler(Events.ITERATION_STARTED(once=1), self.restart)
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    @torch.no_grad()
    def restart(self, engine: Engine | None = None) -> None:
        """Start the average from the trained weights as the first step begins: weights loaded by the
        engine's start handlers (MONAI Label's fine-tuning from the current model, a pretrained
        checkpoint) came after the copy was taken. A resumed run starts past step 1 and keeps the
        average its checkpoint restored."""
        self.network.load_state_dict(self.trained.state_dict())

    @torch.no_grad()
    def __call__(self, engine: Engine) -> None:
        t = engine.state.iteration
        decay = min(self.decay, (1 + t) / (10 + t))
        averaged = self.network.state_dict()
        for name, value in self.trained.state_dict().items():
            if value.is_floating_point():
                averaged[name].lerp_(value, 1.0 - decay)
            else:
                averaged[name].copy_(value)

    def state_dict(self) -> dict[str, Any]:
        """The averaged weights (empty when averaging is off: the trained network is saved already)."""
        return self.network.state_dict() if self.decay > 0 else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.decay > 0:
            self.network.load_state_dict(state)
