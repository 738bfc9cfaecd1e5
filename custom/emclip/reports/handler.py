"""Ignite handler that scores every evaluated case and writes the reports at the end of the epoch."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.data import MetaTensor
from monai.utils import convert_to_numpy

from emclip.reports.classes import as_report_classes
from emclip.reports.metrics import as_label_map, case_metrics
from emclip.reports.overlay import save_overlay
from emclip.reports.writers import ALL_DOMAINS, safe_filename, summarize, summary_markdown, write_reports

__all__ = ["MetricsReportHandler", "case_from_filename"]

logger = logging.getLogger("emclip.reports")

_ARCHIVE_SUFFIXES = (".gz", ".bz2", ".xz", ".zip")


def case_from_filename(filename: Any) -> str:
    """A case name: the file name without folder and extension (``.nii.gz`` counts as one extension).

    Args:
        filename: a path.
    """
    path = Path(str(filename))
    if path.suffix in _ARCHIVE_SUFFIXES:
        path = path.with_suffix("")
    return path.stem


class MetricsReportHandler:
    """Per-case Dice/HD95 of each reported class, written as CSV, Markdown, plots and overlays.

    Attach it to an evaluator (e.g. MONAI's ``SupervisedEvaluator`` with ``decollate=True``, the
    default) whose postprocessing turns ``pred`` into a label map. Events:

    * ``EPOCH_STARTED``: forget the previous run's cases (an evaluator runs once per validation).
    * ``ITERATION_COMPLETED``: score each item of ``engine.state.output`` with
      :func:`~emclip.reports.metrics.case_metrics` and save the first ``overlays_per_domain``
      overlays of each domain to ``<output_dir>/overlays/<domain>/<case>.png``.
    * ``EPOCH_COMPLETED``: gather the rows of all ranks, set ``engine.state.metrics`` (below),
      and on rank 0 call :func:`~emclip.reports.writers.write_reports` and log the Markdown
      summary on the ``emclip.reports`` logger. This runs at epoch end rather than at
      ``COMPLETED`` so that a ``CheckpointSaver`` listed after this handler, which saves on
      ``EPOCH_COMPLETED``, can use the metrics as its ``key_metric_name``.

    ``engine.state.metrics`` receives ``dice_<class>`` and ``hd95_<class>`` (means over all cases
    of all domains, NaN-skipping as in :func:`~emclip.reports.writers.summarize`) and
    ``dice_mean`` (mean of the per-class Dice means).

    Each output item is a dict. ``pred`` may be a label map ``(1, H, W[, D])`` or a one-hot /
    probability map ``(C, H, W[, D])`` (argmax over C when C > 1); ``label`` is a label map.
    HD95 uses the spacing of ``label`` when it is a ``MetaTensor`` (its ``pixdim``), else pixels.
    A key missing from the output item is looked up in the matching item of
    ``engine.state.batch`` (MONAI keeps input-only keys such as ``domain`` there). Without a
    domain the case counts as ``"unknown"``; without a case name it is the label's file name
    (``meta["filename_or_obj"]``), else a running number.

    In a distributed run (``torch.distributed`` initialised, world size > 1) each rank scores its
    own cases, the rows are gathered with ``all_gather_object``, rows repeated by a padding
    sampler (same domain, case and class) are dropped, and only rank 0 writes files; overlays
    come from rank 0's cases.

    Args:
        output_dir: folder for the reports.
        classes: the reported classes, the config's ``report_classes`` (see
            :func:`emclip.reports.classes.as_report_classes`).
        task: a task name for the report titles.
        overlays_per_domain: overlays kept per domain; 0 disables them.
        pred_key: key of the prediction in each output item.
        label_key: key of the ground truth.
        image_key: key of the image drawn under the overlays; items without it, or whose image
            grid differs from the label's (warned once per run), get no overlay.
        domain_key: key of the domain name (a string).
        case_key: key of the case name (a string).
        uncertainty_key: key of a per-pixel uncertainty map (``emclip.inference.PredictiveEntropyd``,
            in the label's geometry); items that have it get an ``uncertainty`` score per class
            (``emclip.inference.uncertainty_scores``) and the reports its correlation with Dice.
        log_summary: log the Markdown summary table (off for per-epoch validation, where the
            metrics line of ``StatsHandler`` is enough).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        classes: Mapping[str, Any],
        task: str | None = None,
        overlays_per_domain: int = 3,
        pred_key: str = "pred",
        label_key: str = "label",
        image_key: str = "image",
        domain_key: str = "domain",
        case_key: str = "case",
        uncertainty_key: str = "uncertainty",
        log_summary: bool = True,
    ) -> None:
        # checked at construction, not after a whole evaluation
        self.classes = as_report_classes(classes)
        self.output_dir = Path(output_dir)
        self.task = task
        self.overlays_per_domain = overlays_per_domain
        self.pred_key = pred_key
        self.label_key = label_key
        self.image_key = image_key
        self.domain_key = domain_key
        self.case_key = case_key
        self.uncertainty_key = uncertainty_key
        self.log_summary = log_summary
        self.reset()

    def attach(self, engine: Engine) -> None:
        """Register the handler's callbacks on ``engine``.

        Args:
            engine: an Ignite engine, typically a MONAI evaluator.
        """
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the collected rows and overlays (called at every epoch start).

        Args:
            engine: unused; present for the Ignite callback signature.
        """
        self.rows: list[dict[str, Any]] = []
        self.overlays: dict[str, list[Path]] = {}
        self._shape_warned = False

    def iteration_completed(self, engine: Engine) -> None:
        """Score every item of ``engine.state.output`` and save overlays.

        Args:
            engine: the engine whose ``state.output`` is a list of per-item dicts.
        """
        items = engine.state.output
        if not isinstance(items, (list, tuple)):
            raise TypeError(
                f"engine.state.output must be a list of per-item dicts (decollated), got {type(items).__name__}; "
                "with a MONAI evaluator keep decollate=True"
            )
        batch = engine.state.batch
        batch_items = batch if isinstance(batch, (list, tuple)) and len(batch) == len(items) else [{}] * len(items)
        for item, batch_item in zip(items, batch_items):
            extra = batch_item if isinstance(batch_item, Mapping) else {}
            self._score_item(item, extra)

    def _score_item(self, item: Mapping[str, Any], extra: Mapping[str, Any]) -> None:
        """Append the rows of one case and save its overlay while the domain's quota lasts."""

        def lookup(key: str) -> Any:
            return item[key] if key in item else extra.get(key)

        label = lookup(self.label_key)
        pred = lookup(self.pred_key)
        if label is None or pred is None:
            raise KeyError(f"output item lacks {self.label_key!r} or {self.pred_key!r}; keys: {sorted(item)}")
        label_map = as_label_map(label)
        pred_arr = convert_to_numpy(pred)
        # The label fixes the spatial rank, which tells a channel axis from a spatial one.
        if pred_arr.ndim == label_map.ndim + 1:
            pred_arr = pred_arr.argmax(0) if pred_arr.shape[0] > 1 else pred_arr[0]

        domain = lookup(self.domain_key)
        domain = "unknown" if domain is None else str(domain)
        case = lookup(self.case_key)
        if case is None and isinstance(label, MetaTensor) and "filename_or_obj" in label.meta:
            case = case_from_filename(label.meta["filename_or_obj"])
        if case is None:
            # Ranks number their unnamed cases separately; the rank prefix keeps them apart.
            index = len(self.rows) // len(self.classes)
            case = f"rank{dist.get_rank()}_case_{index}" if self._is_distributed() else f"case_{index}"
        case = str(case)

        spacing = None
        if isinstance(label, MetaTensor):
            pixdim = convert_to_numpy(label.pixdim, dtype=np.float64)
            # A 2D image's affine is still 4x4, so pixdim may carry a third, unused value.
            spacing = pixdim[: label_map.ndim].tolist() if pixdim.size >= label_map.ndim else None

        metrics = case_metrics(pred_arr, label_map, self.classes, spacing=spacing)
        uncertainty = lookup(self.uncertainty_key)
        if uncertainty is not None:
            from emclip.inference.uncertainty import uncertainty_scores  # the inference package imports reports

            scores = uncertainty_scores(uncertainty, pred_arr, self.classes)
            metrics = [{**m, "uncertainty": scores[m["class"]]} for m in metrics]
        self.rows.extend({"domain": domain, "case": case, **m} for m in metrics)

        image = lookup(self.image_key)
        if image is None or not self._is_rank0() or len(self.overlays.get(domain, [])) >= self.overlays_per_domain:
            return
        # The network input may be resampled while the label is in original geometry (e.g. after
        # Invertd); an overlay is optional, so such a case is skipped rather than failing the run.
        if tuple(image.shape[-label_map.ndim :]) != label_map.shape:
            if not self._shape_warned:
                logger.warning(
                    "no overlays where image and label grids differ, e.g. %s/%s: image %s, label %s",
                    domain, case, tuple(image.shape), label_map.shape,
                )
                self._shape_warned = True
            return
        title = f"{domain} / {case}: Dice " + ", ".join(f"{m['class']} {m['dice']:.3f}" for m in metrics)
        path = self.output_dir / "overlays" / safe_filename(domain) / f"{safe_filename(case)}.png"
        self.overlays.setdefault(domain, []).append(save_overlay(image, label_map, pred_arr, path, self.classes, title))

    @staticmethod
    def _is_distributed() -> bool:
        return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    def _is_rank0(self) -> bool:
        return not self._is_distributed() or dist.get_rank() == 0

    def _gathered_rows(self) -> list[dict[str, Any]]:
        """All ranks' rows; a padding sampler's repeats (same domain, case, class) kept once."""
        if not self._is_distributed():
            return list(self.rows)
        per_rank: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(per_rank, self.rows)
        unique: dict[tuple[str, str, str], dict[str, Any]] = {}
        for rows in per_rank:
            for row in rows:
                unique.setdefault((row["domain"], row["case"], row["class"]), row)
        return list(unique.values())

    def epoch_completed(self, engine: Engine) -> None:
        """Set the summary metrics on the engine and, on rank 0, write and log the reports.

        Args:
            engine: the engine whose ``state.metrics`` receives ``dice_<class>``,
                ``hd95_<class>`` and ``dice_mean``.
        """
        rows = self._gathered_rows()
        summary = summarize(rows, self.classes)
        metrics = {f"{e['metric']}_{e['class']}": e["mean"] for e in summary if e["domain"] == ALL_DOMAINS}
        dice_means = [metrics[f"dice_{name}"] for name in self.classes]
        finite = [m for m in dice_means if not math.isnan(m)]
        metrics["dice_mean"] = sum(finite) / len(finite) if finite else math.nan
        engine.state.metrics.update(metrics)
        if not self._is_rank0():
            return
        write_reports(rows, self.output_dir, self.classes, overlays=self.overlays, task=self.task)
        n_cases = len(rows) // len(dice_means)
        table = "\n" + summary_markdown(summary, self.classes, self.task) if self.log_summary else ""
        logger.info("%d cases, reports in %s%s", n_cases, self.output_dir, table)
