"""Training progress in the log: epoch, iteration, loss and ETA."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from ignite.engine import Engine, Events

__all__ = ["ProgressLogger"]


class ProgressLogger:
    """Log ``epoch e/E iteration i/I loss x ETA h:mm:ss`` every ``interval`` iterations.

    The ETA extrapolates the mean iteration time of this run over the iterations left, so it
    stays meaningful after a resume.

    Args:
        interval: iterations between two lines (the last iteration of an epoch always logs).
        name: logger name.
    """

    def __init__(self, interval: int = 10, name: str = "emclip.train"):
        self.interval = interval
        self.logger = logging.getLogger(name)
        self._start = 0.0
        self._first = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)

    def _started(self, engine: Engine) -> None:
        self._start = time.perf_counter()
        self._first = engine.state.iteration

    def _iteration(self, engine: Engine) -> None:
        state = engine.state
        per_epoch = state.epoch_length or 1
        in_epoch = (state.iteration - 1) % per_epoch + 1
        if in_epoch % self.interval and in_epoch != per_epoch:
            return
        done = state.iteration - self._first
        left = state.max_epochs * per_epoch - state.iteration
        eta = timedelta(seconds=round((time.perf_counter() - self._start) / max(done, 1) * left))
        output = state.output[0] if isinstance(state.output, list) else state.output
        loss = float(output["loss"]) if isinstance(output, dict) and "loss" in output else float("nan")
        self.logger.info(
            "epoch %d/%d iteration %d/%d loss %.4f ETA %s", state.epoch, state.max_epochs, in_epoch, per_epoch, loss, eta
        )
