"""Does the source validation split rank trained models as the unseen domain does?

    python -m emclip.benchmarks.selection --screens bundle/docs/benchmarks/cardiac_screen/* \\
        --output bundle/docs/benchmarks/cardiac_screen/selection

Every default is chosen on the source domain's validation split, so a recipe that generalises
better can only be found if that split orders models as an unseen domain would. This reads
finished ``emclip.benchmarks.dg`` outputs (folders with a ``dg_scale.csv`` holding the ``val``
split and a ``dg_runs.csv``), pairs each run's Dice on the source validation split (evaluation
defaults, zoom 1; or, with ``--val-test-time mean``, its mean over the test-time settings the
split was evaluated with, a stressed validation where those settings are appearance shifts) with
its Dice on every unseen domain, per class and as the mean over the classes, and reports per task, source, domain and class the Spearman rank correlation over the runs with a
bootstrap 95% interval (runs resampled). Runs that appear in several folders with the same numbers
(a baseline trained again on the same CPU type reproduces itself) count once.

Writes ``selection.csv`` (one row per run, domain and class) and ``selection.md``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata, spearmanr

from emclip.benchmarks.report import read_csv, write_csv

__all__ = ["collect_pairs", "correlations", "main"]

MEAN = "mean"
NONE = "none"


def collect_pairs(folders: Sequence[Path], val_test_time: str = NONE) -> list[dict[str, Any]]:
    """One row per distinct run, unseen domain and class (and the class mean): ``val`` and ``unseen`` Dice.

    Args:
        folders: ``emclip.benchmarks.dg`` output folders.
        val_test_time: ``none``: the run's Dice on the validation split with the evaluation
            defaults; ``mean``: its mean over every test-time setting the split was evaluated with
            (a stressed validation: an appearance shift per setting), runs with only the defaults
            left out.
    """
    if val_test_time not in (NONE, MEAN):
        raise ValueError(f"val_test_time: {val_test_time!r} is not {NONE!r} or {MEAN!r}")
    rows, seen = [], set()
    for folder in folders:
        scale, runs = folder / "dg_scale.csv", folder / "dg_runs.csv"
        if not (scale.is_file() and runs.is_file()):
            continue
        settings: dict[tuple, dict[str, dict[str, float]]] = {}
        for r in read_csv(scale):
            if r["split"] == "val" and float(r["zoom"]) == 1.0:
                run = (r["task"], r["source"], r["model"], r["seed"])
                settings.setdefault(run, {}).setdefault(r["test_time"], {})[r["class"]] = float(r["dice"])
        val = {}
        for run, by_setting in settings.items():
            if NONE not in by_setting or (val_test_time == MEAN and len(by_setting) < 2):
                continue
            chosen = [by_setting[NONE]] if val_test_time == NONE else list(by_setting.values())
            val[run] = {c: float(np.mean([d[c] for d in chosen])) for c in by_setting[NONE]}
        unseen: dict[tuple, dict[str, float]] = {}
        for r in read_csv(runs):
            if r["domain"] != r["source"]:
                key = (r["task"], r["source"], r["model"], r["seed"], r["domain"])
                unseen.setdefault(key, {})[r["class"]] = float(r["dice"])
        for (task, source, model, seed, domain), by_class in unseen.items():
            on_val = val.get((task, source, model, seed))
            if on_val is None or set(on_val) != set(by_class):
                continue
            numbers = tuple(round(v, 6) for c in sorted(by_class) for v in (on_val[c], by_class[c]))
            if (task, source, domain, numbers) in seen:
                continue
            seen.add((task, source, domain, numbers))
            on_val, by_class = ({**d, MEAN: float(np.mean(list(d.values())))} for d in (on_val, by_class))
            for name in by_class:
                rows.append({"screen": folder.name, "task": task, "source": source, "domain": domain, "model": model,
                             "seed": int(seed), "class": name, "val": on_val[name], "unseen": by_class[name]})
    return rows


def correlations(rows: Sequence[dict[str, Any]], resamples: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """Per task, source, domain and class: runs, Spearman's rho and its percentile bootstrap interval."""
    groups: dict[tuple, list[tuple[float, float]]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["source"], r["domain"], r["class"]), []).append((r["val"], r["unseen"]))
    rng = np.random.default_rng(seed)
    out = []
    for (task, source, domain, name), points in groups.items():
        x, y = np.array(points).T
        rho = spearmanr(x, y).statistic if len(points) > 2 else float("nan")
        draws = _bootstrap_spearman(x, y, rng, resamples) if len(points) > 2 else np.empty(0)
        low, high = np.percentile(draws, [2.5, 97.5]) if draws.size else (float("nan"), float("nan"))
        out.append({"task": task, "source": source, "domain": domain, "class": name, "runs": len(points),
                    "spearman": float(rho), "low": float(low), "high": float(high)})
    return out


def _bootstrap_spearman(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """Spearman's rho of ``resamples`` resamples of the runs at once (Pearson of the average ranks);
    a resample of one repeated run has no ranking and is left out."""
    i = rng.integers(0, len(x), (resamples, len(x)))
    rx, ry = (rankdata(v[i], axis=1) for v in (x, y))
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    norm = np.sqrt((rx**2).sum(1) * (ry**2).sum(1))
    ok = norm > 0
    return (rx * ry).sum(1)[ok] / norm[ok]


def markdown(table: Sequence[dict[str, Any]]) -> str:
    head = ["task", "source -> domain", "class", "runs", "Spearman [95% CI]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        lines.append(f"| {r['task']} | {r['source']} -> {r['domain']} | {r['class']} | {r['runs']} | "
                     f"{r['spearman']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}] |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--screens", type=Path, nargs="+", required=True, help="emclip.benchmarks.dg output folders")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--val-test-time", choices=[NONE, MEAN], default=NONE,
                        help="none: the validation Dice with the evaluation defaults; mean: averaged over the folder's test-time settings")
    args = parser.parse_args(argv)
    rows = collect_pairs(sorted(args.screens), args.val_test_time)
    if not rows:
        parser.error("--screens: no folder has both dg_scale.csv (with the val split) and dg_runs.csv")
    table = correlations(rows)
    args.output.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.output / "selection.csv")
    screens = sorted({r["screen"] for r in rows})
    stressed = [] if args.val_test_time == NONE else ["--val-test-time", args.val_test_time]
    command = " ".join(["python -m emclip.benchmarks.selection --screens", *map(str, args.screens), *stressed, "--output", str(args.output)])
    (args.output / "selection.md").write_text(
        f"Measured by `{command}`; the runs of {len(screens)} of its folders ({', '.join(screens)}).\n\n"
        + markdown(table), encoding="utf-8")
    print(markdown(table))


if __name__ == "__main__":
    main()
