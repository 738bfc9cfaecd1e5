"""Evaluation reports: per-case and per-domain Dice/HD95, CSV/Markdown/plot files, overlays and
an Ignite handler that produces them during evaluation."""

from __future__ import annotations

from emclip.reports.classes import ReportClass, as_report_classes, classes_from_channel_def, get_classes
from emclip.reports.handler import MetricsReportHandler
from emclip.reports.metrics import as_label_map, case_metrics
from emclip.reports.overlay import save_overlay
from emclip.reports.stats import paired_bootstrap
from emclip.reports.writers import (
    median_size_ratio,
    safe_filename,
    summarize,
    summary_markdown,
    uncertainty_correlation,
    uncertainty_markdown,
    write_reports,
)

__all__ = [
    "median_size_ratio",
    "ReportClass",
    "as_report_classes",
    "classes_from_channel_def",
    "get_classes",
    "MetricsReportHandler",
    "as_label_map",
    "case_metrics",
    "save_overlay",
    "paired_bootstrap",
    "safe_filename",
    "summarize",
    "summary_markdown",
    "uncertainty_correlation",
    "uncertainty_markdown",
    "write_reports",
]
