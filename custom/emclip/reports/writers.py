"""Summaries of per-case metrics and the report files written from them (CSV, Markdown, plots)."""

from __future__ import annotations

import csv
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from emclip.reports.classes import as_report_classes

__all__ = [
    "median_size_ratio",
    "ALL_DOMAINS",
    "PER_CASE_COLUMNS",
    "SUMMARY_COLUMNS",
    "UNCERTAINTY",
    "safe_filename",
    "summarize",
    "summary_markdown",
    "uncertainty_correlation",
    "uncertainty_markdown",
    "write_reports",
]

ALL_DOMAINS = "all"
PER_CASE_COLUMNS = ("domain", "case", "class", "dice", "hd95")
SUMMARY_COLUMNS = ("domain", "class", "metric", "mean", "std", "median", "n")
_METRICS = ("dice", "hd95")
# optional per-case columns: predicted / annotated size (emclip.reports.metrics.case_metrics; reports
# written before it lack it), the case's uncertainty score of the class (emclip.inference.uncertainty_scores)
SIZE_RATIO = "size_ratio"
UNCERTAINTY = "uncertainty"
OPTIONAL_COLUMNS = (SIZE_RATIO, UNCERTAINTY)
CORRELATION_COLUMNS = ("domain", "class", "spearman", "n")


def safe_filename(name: str) -> str:
    """Turn a domain or case name into a file name: characters other than letters, digits,
    ``-``, ``_`` and ``.`` become ``_`` (so that e.g. ``site/A`` cannot escape its folder).

    Args:
        name: the name to sanitise.
    """
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", str(name)).strip(".")
    return cleaned or "_"


def _check_rows(rows: Iterable[Mapping[str, Any]], classes: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Validate per-case rows and normalise their types (str names, float metrics)."""
    classes = as_report_classes(classes)
    checked = []
    for row in rows:
        missing = [k for k in PER_CASE_COLUMNS if k not in row]
        if missing:
            raise ValueError(f"row {dict(row)} lacks keys {missing}; rows need {list(PER_CASE_COLUMNS)}")
        if row["class"] not in classes:
            raise ValueError(f"class {row['class']!r} is not a reported class ({', '.join(classes)})")
        if str(row["domain"]) == ALL_DOMAINS:
            raise ValueError(f"domain name {ALL_DOMAINS!r} is reserved for the summary over all domains")
        entry = {
            "domain": str(row["domain"]),
            "case": str(row["case"]),
            "class": str(row["class"]),
            "dice": float(row["dice"]),
            "hd95": float(row["hd95"]),
        }
        entry.update({k: float(row[k]) for k in OPTIONAL_COLUMNS if k in row})
        checked.append(entry)
    for key in OPTIONAL_COLUMNS:
        if any(key in r for r in checked) and not all(key in r for r in checked):
            raise ValueError(f"some rows have a {key!r} value and others not; give it for every case or none")
    return checked


def median_size_ratio(values: Iterable[float | str]) -> float:
    """Median of per-case size ratios, NaN ones (empty annotations, or a report written before the
    ratio) skipped; NaN when none is left. The median, since a few tiny annotations make the mean of
    a ratio heavy-tailed."""
    finite = [v for v in map(float, values) if not math.isnan(v)]
    return float(np.median(finite)) if finite else math.nan


def _optional(checked: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The optional columns the (checked, consistent) rows have."""
    return tuple(k for k in OPTIONAL_COLUMNS if checked and k in checked[0])


def summarize(rows: Iterable[Mapping[str, Any]], classes: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Mean, standard deviation, median and count of each metric per domain and class.

    NaN values (HD95 when exactly one of prediction and ground truth is empty) are skipped: ``n``
    counts the non-NaN values, and mean/std are NaN when ``n == 0``. ``std`` is the population
    standard deviation (numpy's default, ``ddof=0``), so it is 0.0 for a single case.

    Args:
        rows: per-case rows with keys ``domain, case, class, dice, hd95``.
        classes: the reported classes (see :func:`emclip.reports.classes.as_report_classes`); they
            fix the class order, and a row of another class is rejected.

    Returns:
        One ``{"domain", "class", "metric", "mean", "std", "median", "n"}`` dict per domain x class x
        metric (``dice``, ``hd95``, and ``size_ratio`` and ``uncertainty`` when the rows have them), domains in order of first appearance followed by ``"all"`` (every case).
    """
    checked = _check_rows(rows, classes)
    domains = list(dict.fromkeys(r["domain"] for r in checked)) + [ALL_DOMAINS]
    metrics = _METRICS + _optional(checked)
    summary = []
    for domain in domains:
        in_domain = [r for r in checked if domain in (ALL_DOMAINS, r["domain"])]
        for name in as_report_classes(classes):
            for metric in metrics:
                values = np.array([r[metric] for r in in_domain if r["class"] == name], dtype=np.float64)
                values = values[~np.isnan(values)]
                n = int(values.size)
                summary.append(
                    {
                        "domain": domain,
                        "class": name,
                        "metric": metric,
                        "mean": float(values.mean()) if n else math.nan,
                        "std": float(values.std()) if n else math.nan,
                        "median": float(np.median(values)) if n else math.nan,
                        "n": n,
                    }
                )
    return summary


def _mean_std(entry: Mapping[str, Any], digits: int) -> str:
    """``mean ± std`` text of a summary entry, ``n/a`` when it has no values."""
    if entry["n"] == 0:
        return "n/a"
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}"


def summary_markdown(summary: Sequence[Mapping[str, Any]], classes: Mapping[str, Any], task: str | None = None) -> str:
    """Render a :func:`summarize` result as a Markdown table with one row per domain and class.

    Args:
        summary: the output of :func:`summarize`.
        classes: the reported classes, for their order and long names.
        task: a task name for the title.
    """
    classes = as_report_classes(classes)
    by_key = {(e["domain"], e["class"], e["metric"]): e for e in summary}
    sized = any(e["metric"] == SIZE_RATIO for e in summary)
    lines = [
        "# Segmentation metrics" + (f": {task}" if task else ""),
        "",
        "| Domain | Class | Dice mean ± std | HD95 mean ± std |" + (" size pred/ref median |" if sized else "") + " n |",
        "|:--|:--|--:|--:|" + ("--:|" if sized else "") + "--:|",
    ]
    for domain in dict.fromkeys(e["domain"] for e in summary):
        for name, spec in classes.items():
            dice, hd95 = by_key[(domain, name, "dice")], by_key[(domain, name, "hd95")]
            hd95_text = _mean_std(hd95, 2)
            if hd95["n"] < dice["n"]:
                hd95_text += f" (n={hd95['n']})"
            size_text = ""
            if sized:
                size = by_key[(domain, name, SIZE_RATIO)]
                size_text = f" {size['median']:.3f} |" if size["n"] else " n/a |"
            lines.append(
                f"| {domain} | {name} ({spec.long_name}) | {_mean_std(dice, 4)} | {hd95_text} |{size_text} {dice['n']} |"
            )
    lines += [
        "",
        "n: number of cases. std: population standard deviation (ddof=0)."
        + (" size pred/ref: the median over the cases of the predicted over the annotated pixels (voxels), below 1 "
           "under-segmented (the median, as in the benchmarks: a few tiny annotations make the mean of a ratio "
           "heavy-tailed); cases with an empty annotation are left out of it." if sized else ""),
        "HD95 is in the units of the voxel spacing (mm for NIfTI volumes; pixels when no spacing is known). "
        "A case where exactly one of prediction and ground truth is empty has Dice 0 and no HD95; "
        "such cases are left out of the HD95 mean, whose own count is then shown in parentheses. "
        "A case where both are empty scores Dice 1 and HD95 0.",
    ]
    return "\n".join(lines) + "\n"


def uncertainty_correlation(rows: Iterable[Mapping[str, Any]], classes: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Spearman rank correlation of the per-case uncertainty score with Dice, per domain and class.

    A useful score is negative here: the less certain cases are the worse ones. Fewer than three
    cases, or a constant score or Dice, give NaN.

    Args:
        rows: per-case rows with an ``uncertainty`` value.
        classes: the reported classes.

    Returns:
        One ``{"domain", "class", "spearman", "n"}`` dict per domain (then ``"all"``) and class.
    """
    from scipy.stats import spearmanr

    checked = _check_rows(rows, classes)
    if checked and UNCERTAINTY not in checked[0]:
        raise ValueError(f"rows have no {UNCERTAINTY!r} score to correlate with Dice")
    result = []
    for domain in list(dict.fromkeys(r["domain"] for r in checked)) + [ALL_DOMAINS]:
        for name in as_report_classes(classes):
            pairs = np.array(
                [(r[UNCERTAINTY], r["dice"]) for r in checked if r["class"] == name and domain in (ALL_DOMAINS, r["domain"])],
                dtype=np.float64,
            ).reshape(-1, 2)
            pairs = pairs[~np.isnan(pairs).any(1)]
            constant = len(pairs) and (np.ptp(pairs[:, 0]) == 0 or np.ptp(pairs[:, 1]) == 0)
            rho = math.nan if len(pairs) < 3 or constant else float(spearmanr(pairs[:, 0], pairs[:, 1])[0])
            result.append({"domain": domain, "class": name, "spearman": rho, "n": int(len(pairs))})
    return result


def uncertainty_markdown(correlation: Sequence[Mapping[str, Any]], classes: Mapping[str, Any]) -> str:
    """Markdown section of an :func:`uncertainty_correlation` result.

    Args:
        correlation: the output of :func:`uncertainty_correlation`.
        classes: the reported classes (long names).
    """
    classes = as_report_classes(classes)
    lines = [
        "## Uncertainty against Dice",
        "",
        "| Domain | Class | Spearman rho (uncertainty, Dice) | n |",
        "|:--|:--|--:|--:|",
    ]
    for e in correlation:
        rho = "n/a" if math.isnan(e["spearman"]) else f"{e['spearman']:.3f}"
        lines.append(f"| {e['domain']} | {e['class']} ({classes[e['class']].long_name}) | {rho} | {e['n']} |")
    lines += [
        "",
        "uncertainty: mean normalised predictive entropy over the pixels predicted as the class "
        "(1.0 where the class is predicted nowhere). A negative rho means the score flags the failures.",
    ]
    return "\n".join(lines) + "\n"


def _plot_dice(summary: Sequence[Mapping[str, Any]], domain: str, task: str | None, path: Path) -> None:
    """Bar plot of the mean Dice per class of one domain, with std error bars."""
    entries = [e for e in summary if e["domain"] == domain and e["metric"] == "dice"]
    # Values go into the tick labels, where error bars cannot cover them; n/a marks absent data.
    ticks = [f"{e['class']}\n{e['mean']:.3f}" if e["n"] else f"{e['class']}\nn/a" for e in entries]
    means = [e["mean"] if e["n"] else 0.0 for e in entries]
    stds = [e["std"] if e["n"] else 0.0 for e in entries]
    # A bare Figure on the Agg canvas: no pyplot global state, safe in headless and threaded runs.
    fig = Figure(figsize=(1.2 + 1.1 * len(entries), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.bar(ticks, means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel("Dice")
    ax.set_title(f"{task}: {domain}" if task else domain)
    fig.savefig(path, dpi=100)


def write_reports(
    rows: Iterable[Mapping[str, Any]],
    output_dir: str | os.PathLike,
    classes: Mapping[str, Any],
    overlays: Mapping[str, Sequence[str | os.PathLike]] | None = None,
    task: str | None = None,
) -> dict[str, Any]:
    """Write the per-case and summary metric files and a Dice bar plot per domain.

    Files under ``output_dir``: ``metrics_per_case.csv`` (``domain,case,class,dice,hd95``, then
    ``size_ratio`` and ``uncertainty`` when the rows have them, with ``uncertainty_correlation.csv`` and a Markdown
    section of :func:`uncertainty_correlation`),
    ``metrics_summary.csv`` (``domain,class,metric,mean,std,median,n``, see :func:`summarize`),
    ``metrics_summary.md`` and ``plots/dice_<domain>.png`` for every domain and ``all``.
    NaN is written as ``nan``.

    Args:
        rows: per-case rows with keys ``domain, case, class, dice, hd95``.
        output_dir: folder to write into; created if missing.
        classes: the reported classes (order and long names), see
            :func:`emclip.reports.classes.as_report_classes`.
        overlays: optional overlay image paths per domain (as written by
            :func:`emclip.reports.overlay.save_overlay`); they are linked from the Markdown report.
        task: a task name for the titles of the report and the plots.

    Returns:
        ``{"per_case_csv": Path, "summary_csv": Path, "summary_md": Path, "plots": {domain: Path}}``,
        plus ``"correlation_csv"`` when the rows have an uncertainty score.
    """
    out = Path(output_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    classes = as_report_classes(classes)
    checked = _check_rows(rows, classes)
    summary = summarize(checked, classes)
    paths: dict[str, Any] = {
        "per_case_csv": out / "metrics_per_case.csv",
        "summary_csv": out / "metrics_summary.csv",
        "summary_md": out / "metrics_summary.md",
        "plots": {},
    }
    scored = UNCERTAINTY in _optional(checked)
    tables = [
        ("per_case_csv", PER_CASE_COLUMNS + _optional(checked), checked),
        ("summary_csv", SUMMARY_COLUMNS, summary),
    ]
    markdown = summary_markdown(summary, classes, task)
    if scored:
        correlation = uncertainty_correlation(checked, classes)
        paths["correlation_csv"] = out / "uncertainty_correlation.csv"
        tables.append(("correlation_csv", CORRELATION_COLUMNS, correlation))
        markdown += "\n" + uncertainty_markdown(correlation, classes)
    for key, columns, table in tables:
        with open(paths[key], "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(table)

    if overlays:
        markdown += "\n## Overlays\n"
        for domain, files in overlays.items():
            markdown += f"\n### {domain}\n\n"
            markdown += "".join(
                f"![{domain} {Path(p).stem}]({Path(os.path.relpath(p, out)).as_posix()})\n" for p in files
            )
    paths["summary_md"].write_text(markdown, encoding="utf-8")

    for domain in dict.fromkeys(e["domain"] for e in summary):
        plot = out / "plots" / f"dice_{safe_filename(domain)}.png"
        _plot_dice(summary, domain, task, plot)
        paths["plots"][domain] = plot
    return paths
