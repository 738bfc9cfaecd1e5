"""Single-source domain-generalization benchmark on real data: EM-CLIP, its ablations and MONAI's
U-Net, trained on one domain and evaluated on every other domain found under the data root.

    python -m emclip.benchmarks.dg --data-root ../shared/data --output bundle/docs/benchmarks [--quick]

Models, seeds, epochs and the source domains are in ``bundle/configs/benchmark.yaml``; its
``variants`` (``--variant NAME``; ``--quick`` is ``--variant quick``) change some of them. Each run is
the bundle's own training and evaluation (train.yaml + evaluate.yaml + the task overlay) in a
fresh process; the equivalent ``python -m monai.bundle`` commands are in each run's ``command.txt``.
Finished runs are kept in ``--work-dir`` and skipped when the command is run again, so an
interrupted benchmark continues where it stopped (an interrupted training resumes from its last
epoch checkpoint).

Writes to ``--output``: ``dg_runs.csv`` (one row per task, source, model, seed, domain and class:
mean Dice and HD95 over the cases), ``dg_summary.csv`` / ``dg_summary.md`` (mean and sample
standard deviation over the seeds, and mean training time), ``dg_dice_<task>.png``; with the
settings' ``compare`` pairs, ``dg_paired.csv`` / ``dg_paired.md`` (per-case Dice differences,
averaged over seeds, with a bootstrap 95% interval; a pair's optional third entry names a test-time
setting both are compared with); with ``scale_sweep``, every finished run is
also evaluated with its input zoomed (evaluate.yaml's ``input_zoom``) on the unseen domains and on
the source validation split, plainly and with each named test-time setting of ``scale_sweep``'s
``test_time`` for the run's task (evaluation overrides, e.g. fundus's two-pass refinement): ``dg_scale.csv``, ``dg_scale.md`` (per zoom, mean over the seeds), ``dg_scale_<task>.png`` and, with the ``val``
split, ``dg_val.md`` (per model, the mean Dice over the classes on the source validation split at
zoom 1: what a default is chosen on); with two or more test-time settings, ``dg_test_time.md``
(Dice at zoom 1 per model and class, a column per setting).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from emclip.data import build_datalist
from emclip.benchmarks.report import read_csv, write_csv
from emclip.configs import CONFIGS, bundle_command, meta_files, task_files
from emclip.reports import get_classes, median_size_ratio, paired_bootstrap, summarize
from emclip.reports.writers import SIZE_RATIO

__all__ = [
    "load_settings", "plan_runs", "run_one", "sweep_one", "collect", "collect_scale", "paired_rows",
    "summarize_seeds", "validation_table", "write_outputs",
]

SETTINGS = CONFIGS / "benchmark.yaml"
RUN_FILE = "result.json"
SCALE_FILE = "scale.json"
NO_TEST_TIME = "none"  # the test_time column of a plain evaluation


def load_settings(path: Path = SETTINGS, variant: str | None = None) -> dict[str, Any]:
    """Benchmark settings with the file's variant ``variant`` applied: any of its ``seeds``,
    ``models`` and ``ablations`` (subsets, by name), ``epochs`` and ``sources`` (per task) replace
    the defaults."""
    settings = yaml.safe_load(Path(path).read_text())
    settings.setdefault("ablations", {})
    settings.setdefault("ablation_seeds", settings["seeds"][:1])
    if variant is None:
        return settings
    if variant not in settings["variants"]:
        raise ValueError(f"{path}: no variant {variant!r}; the variants are {sorted(settings['variants'])}")
    v = settings["variants"][variant]
    settings["seeds"] = v.get("seeds", settings["seeds"])
    for group in ("models", "ablations"):
        settings[group] = {name: settings[group][name] for name in v.get(group, settings[group])}
    for task, epochs in v.get("epochs", {}).items():
        settings["tasks"][task]["overrides"]["epochs"] = epochs
    for task, sources in v.get("sources", {}).items():
        settings["tasks"][task]["sources"] = sources
    return settings


def plan_runs(settings: dict[str, Any], data_root: Path, work_dir: Path) -> list[dict[str, Any]]:
    """One entry per seed x task x source x model (``models`` with every seed, ``ablations`` with
    ``ablation_seeds``) for the tasks whose data folder exists, seeds outermost so that a benchmark
    stopped early still compares every model.

    A missing task folder or source domain is reported and skipped, never silently.
    """
    scenarios = []
    for task, spec in settings["tasks"].items():
        root = data_root / spec["data"]
        if not root.is_dir():
            print(f"[dg] skip {task}: no folder {root}", flush=True)
            continue
        found = sorted({item["domain"] for item in build_datalist(str(root), task)})
        for source in spec["sources"]:
            if source not in found:
                print(f"[dg] skip {task} source {source}: not among the domains found in {root}: {found}", flush=True)
            elif len(found) < 2:
                print(f"[dg] skip {task} source {source}: no other domain to evaluate in {root}", flush=True)
            else:
                scenarios.append((task, source, root, spec["overrides"]))
    runs = []
    for seed in settings["seeds"]:
        models = {**settings["models"], **(settings["ablations"] if seed in settings["ablation_seeds"] else {})}
        for task, source, root, task_overrides in scenarios:
            for model, model_overrides in models.items():
                overrides = {
                    **settings["overrides"],
                    **task_overrides,
                    **model_overrides,
                    "dataset_dir": str(root),
                    "train_domains": [source],
                    "seed": seed,
                    "bundle_root": str(work_dir / f"{task}_{source}" / model / f"seed{seed}"),
                    # one cache folder per task, shared by the runs of one preprocessing (emclip.data.keyed_cache_dir)
                    "train#dataset#cache_dir": str(work_dir / "cache" / task),
                }
                runs.append({"task": task, "source": source, "model": model, "seed": seed, "overrides": overrides})
    return runs


def _meta_and_configs(task: str, configs: list[str]) -> tuple[list[str], list[str]]:
    return [str(m) for m in meta_files(task)], [str(f) for f in task_files(configs, task)]


def _workflow(run: dict[str, Any], configs: list[str], kind: str, **overrides: Any):
    """Run one bundle workflow of ``run`` in this process; returns the finished workflow's parser."""
    from monai.bundle import ConfigWorkflow

    meta, files = _meta_and_configs(run["task"], configs)
    wf = ConfigWorkflow(
        config_file=files,
        meta_file=meta,
        logging_file=str(CONFIGS / "logging.conf"),
        run_id="training" if kind == "train" else "evaluating",
        workflow_type=kind,
        **{**run["overrides"], **overrides},
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    return wf.parser


def run_one(run: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one run in this process; returns times, parameter count and peak memory."""
    result: dict[str, Any] = {}
    for configs, kind in ((["train"], "train"), (["train", "evaluate"], "eval")):
        start = time.perf_counter()
        parser = _workflow(run, configs, kind)
        result[f"{kind}_s"] = round(time.perf_counter() - start, 1)
        if kind == "train":
            result["params"] = sum(p.numel() for p in parser.get_parsed_content("network").parameters())
    # ru_maxrss is in KiB on Linux; children are the data-loader workers
    result["peak_rss_mib"] = round(
        max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024, 1
    )
    return result


def _scale_dir(run: dict[str, Any], split: str, zoom: float, test_time: str = NO_TEST_TIME) -> Path:
    """Where an evaluation of the run is written; the unseen domains at zoom 1 without a test-time
    setting are the run's own evaluation."""
    if (split, zoom, test_time) == ("eval", 1.0, NO_TEST_TIME):
        return _run_dir(run) / "eval" / run["task"]
    folder = _run_dir(run) / "eval_scale"
    return (folder if test_time == NO_TEST_TIME else folder / test_time) / f"{split}_zoom{zoom:g}"


def _test_time(sweep: dict[str, Any], run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The run's named test-time settings: ``scale_sweep: test_time: {<task>: {<name>: overrides}}``,
    where an optional ``_models_`` list names the only models a setting applies to (TENT needs
    affine normalisation layers, which the U-Net's instance norms lack)."""
    settings = sweep.get("test_time", {}).get(run["task"], {})
    return {name: {k: v for k, v in overrides.items() if k != "_models_"} for name, overrides in settings.items()
            if run["model"] in overrides.get("_models_", [run["model"]])}


def _sweep_points(sweep: dict[str, Any], run: dict[str, Any]) -> list[tuple[str, float]]:
    """(test-time setting, zoom) pairs of a run's sweep of one split."""
    points = []
    for test_time in [NO_TEST_TIME, *_test_time(sweep, run)]:
        for zoom in sorted(set(sweep["zooms"]) | {1.0}):
            points.append((test_time, zoom))
    return points


def sweep_one(run: dict[str, Any], sweep: dict[str, Any]) -> dict[str, Any]:
    """Evaluate a trained run with its input zoomed by each of ``sweep["zooms"]`` on the splits of
    ``sweep["splits"]`` (``eval``: the unseen domains, ``val``: the source validation split, also
    at zoom 1), plainly and with each of ``sweep["test_time"]``'s named evaluation overrides (at zoom 1
    too); a split with no case is skipped and said, and an evaluation already written is kept."""
    done = []
    for split in sweep["splits"]:
        if split == "val" and run["overrides"].get("val_fraction", 0.1) == 0:
            print(f"[dg] {_run_dir(run)}: no source validation split (val_fraction 0): val sweep skipped", flush=True)
            continue
        for test_time, zoom in _sweep_points(sweep, run):
            folder = _scale_dir(run, split, zoom, test_time)
            if (folder / "metrics_per_case.csv").is_file():  # the run's own evaluation, or one written before
                continue
            overrides = {"input_zoom": float(zoom), "output_dir": str(folder), "overlays_per_domain": 0,
                         **_test_time(sweep, run).get(test_time, {})}
            if split == "val":
                overrides["validate#dataset#data"] = "$@splits['val']"
            _workflow(run, ["train", "evaluate"], "eval", **overrides)
            done.append([split, zoom, test_time])
    return {"evaluated": done}


def _run_dir(run: dict[str, Any]) -> Path:
    return Path(run["overrides"]["bundle_root"])


def _commands(run: dict[str, Any]) -> str:
    """The ``python -m monai.bundle`` commands equivalent to :func:`run_one`."""
    return "".join(
        shlex.join(bundle_command(workflow, configs, run["task"], **run["overrides"])) + "\n"
        for workflow, configs in (("training", ["train"]), ("evaluating", ["train", "evaluate"]))
    )


def execute(run: dict[str, Any], sweep: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ``run`` in a child process (skipped when its result exists), then its scale sweep when
    ``sweep`` is given (likewise); returns its result."""
    out = _run_dir(run)
    done, spec = out / RUN_FILE, out / "run.json"
    # a run folder left by other settings must not be mixed into these results
    if spec.is_file() and json.loads(spec.read_text()) != run:
        raise RuntimeError(f"{spec} was written by other benchmark settings; use another --work-dir or remove {out}")
    out.mkdir(parents=True, exist_ok=True)
    if not done.is_file():
        (out / "command.txt").write_text(_commands(run))
        spec.write_text(json.dumps(run))
        _child(out, ["--run-one", str(spec)])
    if sweep is not None and not _sweep_done(run, sweep):
        (out / "sweep.json").write_text(json.dumps(sweep))
        _child(out, ["--sweep-one", str(spec)])
    return json.loads(done.read_text())


def _sweep_done(run: dict[str, Any], sweep: dict[str, Any]) -> bool:
    path = _run_dir(run) / SCALE_FILE
    return path.is_file() and json.loads(path.read_text()).get("sweep") == sweep


def _child(out: Path, args: list[str]) -> None:
    with open(out / "log.txt", "a") as log:
        proc = subprocess.run([sys.executable, "-m", "emclip.benchmarks.dg", *args], stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"run {out} failed (exit {proc.returncode}); see {out / 'log.txt'}")


def collect(run: dict[str, Any], result: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of one finished run: mean Dice/HD95 per evaluated domain and class."""
    summary = summarize(_per_case(_run_dir(run) / "eval" / run["task"]), get_classes(run["task"]))
    rows = {}
    for entry in summary:
        if entry["domain"] == "all":
            continue
        key = (entry["domain"], entry["class"])
        row = rows.setdefault(
            key,
            {"task": run["task"], "source": run["source"], "model": run["model"], "seed": run["seed"],
             "domain": entry["domain"], "class": entry["class"], "n": entry["n"], **result},
        )
        row[entry["metric"]] = entry["mean"]
    return list(rows.values())


def _per_case(eval_dir: Path) -> list[dict[str, str]]:
    return read_csv(eval_dir / "metrics_per_case.csv")


def collect_scale(run: dict[str, Any], sweep: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of a run's scale sweep: mean Dice and median size ratio per split, test-time setting, zoom, domain and class
    (zoom 1 on the unseen domains without a setting is the run's own evaluation)."""
    rows = []
    for split in sweep["splits"]:
        for test_time, zoom in _sweep_points(sweep, run):
            folder = _scale_dir(run, split, zoom, test_time)
            if not (folder / "metrics_per_case.csv").is_file():
                continue
            cases = _per_case(folder)
            for entry in summarize(cases, get_classes(run["task"])):
                domain, name = entry["domain"], entry["class"]
                if domain != "all" and entry["metric"] == "dice":
                    size = median_size_ratio(c.get(SIZE_RATIO) or "nan" for c in cases if (c["domain"], c["class"]) == (domain, name))
                    rows.append({"task": run["task"], "source": run["source"], "model": run["model"], "seed": run["seed"],
                                 "test_time": test_time, "split": split, "zoom": zoom, "domain": domain,
                                 "class": name, "dice": entry["mean"], "size_ratio": size, "n": entry["n"]})
    return rows


def paired_rows(runs: list[dict[str, Any]], pairs: list[list[str]]) -> list[dict[str, Any]]:
    """For each ``[model, baseline]`` pair, task, source, domain and class: per-case Dice averaged
    over the seeds both models finished, then the paired bootstrap of ``model - baseline``.

    A third entry, ``[model, baseline, test_time]``, compares both models evaluated with that named
    setting of ``scale_sweep: test_time`` (at zoom 1 on the unseen domains) instead of their own
    evaluation, e.g. with a post-processing default chosen after they were trained."""
    cases: dict[tuple, dict[str, list[float]]] = {}
    test_times = {pair[2] if len(pair) > 2 else NO_TEST_TIME for pair in pairs}
    for run in runs:
        if not (_run_dir(run) / RUN_FILE).is_file():
            continue
        for test_time in test_times:
            folder = _scale_dir(run, "eval", 1.0, test_time)
            if not (folder / "metrics_per_case.csv").is_file():
                continue
            for row in _per_case(folder):
                key = (test_time, run["task"], run["source"], run["model"], row["domain"], row["class"], row["case"])
                cases.setdefault(key, {})[run["seed"]] = float(row["dice"])
    out = []
    for model, baseline, *setting in pairs:
        test_time = setting[0] if setting else NO_TEST_TIME
        groups: dict[tuple, tuple[list[float], list[float], set]] = {}
        for (t, task, source, m, domain, name, case), by_seed in cases.items():
            other = cases.get((t, task, source, baseline, domain, name, case))
            if t != test_time or m != model or other is None:
                continue
            seeds = sorted(set(by_seed) & set(other))
            if not seeds:
                continue
            a, b, used = groups.setdefault((task, source, domain, name), ([], [], set()))
            a.append(float(np.mean([by_seed[s] for s in seeds])))
            b.append(float(np.mean([other[s] for s in seeds])))
            used.update(seeds)
        for (task, source, domain, name), (a, b, used) in groups.items():
            stats = paired_bootstrap(a, b)
            out.append({"task": task, "source": source, "domain": domain, "class": name, "model": model,
                        "baseline": baseline, "test_time": test_time, "seeds": len(used), "model_dice": float(np.nanmean(a)),
                        "baseline_dice": float(np.nanmean(b)), **stats})
    return out


def paired_markdown(rows: list[dict[str, Any]]) -> str:
    """One table: model minus baseline, per-case mean difference and its 95% interval."""
    lines = ["| task | source -> domain | class | model - baseline | seeds | cases | model | baseline | difference [95% CI] |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        both = "" if r.get("test_time", NO_TEST_TIME) == NO_TEST_TIME else f" (both + {r['test_time']})"
        lines.append(f"| {r['task']} | {r['source']} -> {r['domain']} | {r['class']} | {r['model']} - {r['baseline']}{both} | "
                     f"{r['seeds']} | {r['n']} | {r['model_dice']:.3f} | {r['baseline_dice']:.3f} | "
                     f"{r['mean_diff']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}] |")
    return "\n".join(lines) + "\n"


def scale_table(rows: list[dict[str, Any]], metric: str = "dice") -> str:
    """Markdown: per task, source, model, test-time setting, split, domain and class, ``metric`` at
    each zoom (mean over the seeds; ``seeds`` lists the counts where they differ between zooms)
    and the largest distance from its value at zoom 1, either way (for Dice, the scale-robustness
    measure). Rows without the metric (NaN: a size ratio of an older evaluation) are left out."""
    rows = [r for r in rows if not math.isnan(r.get(metric, math.nan))]
    zooms = sorted({r["zoom"] for r in rows})
    cells: dict[tuple, dict[float, list[float]]] = {}
    for r in rows:
        key = (r["task"], r["source"], r["model"], r["test_time"], r["split"], r["domain"], r["class"])
        cells.setdefault(key, {}).setdefault(r["zoom"], []).append(r[metric])
    head = ["task", "source -> domain", "model", "test time", "split", "class", "seeds", *(f"x{z:g}" for z in zooms), "max abs diff to x1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (task, source, model, test_time, split, domain, name), by_zoom in cells.items():
        means = {z: float(np.mean(v)) for z, v in by_zoom.items()}
        spread = max((abs(d - means[1.0]) for z, d in means.items() if z != 1.0), default=math.nan) if 1.0 in means else math.nan
        seeds = sorted({len(v) for v in by_zoom.values()})
        row = [task, f"{source} -> {domain}", model, test_time, split, name, "/".join(map(str, seeds))]
        row += [f"{means[z]:.3f}" if z in means else "" for z in zooms] + ["" if math.isnan(spread) else f"{spread:.3f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def test_time_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: Dice at zoom 1 (mean over the seeds) per task, source, domain, split, model and
    class, a column per test-time setting (``none`` first); empty with fewer than two settings."""
    settings = list(dict.fromkeys([NO_TEST_TIME, *(r["test_time"] for r in rows)]))
    if len(settings) < 2:
        return ""
    cells: dict[tuple, dict[str, list[float]]] = {}
    for r in rows:
        if r["zoom"] == 1.0 and not math.isnan(r["dice"]):
            key = (r["task"], r["source"], r["domain"], r["split"], r["model"], r["class"])
            cells.setdefault(key, {}).setdefault(r["test_time"], []).append(r["dice"])
    head = ["task", "source -> domain", "split", "model", "class", "seeds", *settings]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (task, source, domain, split, model, name), by_setting in sorted(cells.items(), key=lambda c: c[0][:4]):
        seeds = "/".join(map(str, sorted({len(v) for v in by_setting.values()})))
        values = [f"{np.mean(by_setting[t]):.3f}" if t in by_setting else "" for t in settings]
        lines.append("| " + " | ".join([task, f"{source} -> {domain}", split, model, name, seeds, *values]) + " |")
    return "\n".join(lines) + "\n"


def validation_table(rows: list[dict[str, Any]], models: list[str]) -> str:
    """Markdown: the number a default is chosen on. Per task, source and test-time setting, the mean
    Dice over the classes on the source validation split at zoom 1 (each seed's mean over the
    classes, then the mean over the seeds), a column per model; empty without such rows."""
    means: dict[tuple, dict[str, dict[int, list[float]]]] = {}
    for r in rows:
        if r["split"] == "val" and r["zoom"] == 1.0 and not math.isnan(r["dice"]):
            key = (r["task"], r["source"], r["test_time"])
            means.setdefault(key, {}).setdefault(r["model"], {}).setdefault(r["seed"], []).append(r["dice"])
    if not means:
        return ""
    head = ["task", "source", "test time", *models]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (task, source, test_time), by_model in means.items():
        cells = [f"{np.mean([np.mean(v) for v in by_model[m].values()]):.3f}" if m in by_model else "n/a" for m in models]
        lines.append("| " + " | ".join([task, source, test_time, *cells]) + " |")
    return "\n".join(lines) + "\n"


def _plot_scale(rows: list[dict[str, Any]], task: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    part = [r for r in rows if r["task"] == task]
    panels = list(dict.fromkeys((r["split"], r["source"], r["domain"], r["class"]) for r in part))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.0), squeeze=False)
    for ax, (split, source, domain, name) in zip(axes[0], panels):
        for model, test_time in dict.fromkeys((r["model"], r["test_time"]) for r in part):
            points: dict[float, list[float]] = {}
            for r in part:
                if (r["split"], r["source"], r["domain"], r["class"], r["model"], r["test_time"]) == (
                        split, source, domain, name, model, test_time):
                    points.setdefault(r["zoom"], []).append(r["dice"])
            zooms = sorted(points)
            label = model if test_time == NO_TEST_TIME else f"{model} + {test_time}"
            ax.plot(zooms, [np.mean(points[z]) for z in zooms], marker="o", label=label,
                    linestyle="-" if test_time == NO_TEST_TIME else "--")
        ax.set_title(f"{source}->{domain} {name}" + (" (source val)" if split == "val" else ""), fontsize=8)
        ax.set_xlabel("input zoom")
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("Dice")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _mean_sd(values: list[float]) -> tuple[float, float]:
    arr = np.array([v for v in values if not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return math.nan, math.nan
    # one seed has no spread to report: NaN, not a zero that reads as "no variation"
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


def summarize_seeds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation (ddof=1; NaN for one seed) over seeds."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["source"], row["domain"], row["class"], row["model"]), []).append(row)
    summary = []
    for (task, source, domain, name, model), group in groups.items():
        dice, dice_sd = _mean_sd([r["dice"] for r in group])
        hd95, hd95_sd = _mean_sd([r["hd95"] for r in group])
        summary.append(
            {"task": task, "source": source, "domain": domain, "class": name, "model": model,
             "seeds": len(group), "dice_mean": dice, "dice_sd": dice_sd, "hd95_mean": hd95, "hd95_sd": hd95_sd,
             "train_s_mean": float(np.mean([r["train_s"] for r in group])), "params": group[0]["params"],
             "peak_rss_mib_max": max(r["peak_rss_mib"] for r in group)}
        )
    return summary


def _cell(entry: dict[str, Any], seeds: int) -> str:
    """``mean ± sd`` (the mean alone for one seed), with the seed count when it is not the table's."""
    text = f"{entry['dice_mean']:.3f}" if math.isnan(entry["dice_sd"]) else f"{entry['dice_mean']:.3f} ± {entry['dice_sd']:.3f}"
    return text if entry["seeds"] == seeds else f"{text} ({entry['seeds']} seed)"


def summary_markdown(summary: list[dict[str, Any]], models: list[str]) -> str:
    """One table per task and source: Dice mean ± sd per domain and class, a column per model."""
    lines = []
    for task, source in dict.fromkeys((s["task"], s["source"]) for s in summary):
        part = [s for s in summary if s["task"] == task and s["source"] == source]
        seeds = max(s["seeds"] for s in part)
        over = f"mean ± sd over {seeds} seeds" if seeds > 1 else "one seed"
        lines += [f"### {task}: trained on {source} (Dice, {over})", "",
                  "| domain | class | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
        for domain, name in dict.fromkeys((s["domain"], s["class"]) for s in part):
            cells = {s["model"]: s for s in part if s["domain"] == domain and s["class"] == name}
            text = [_cell(cells[m], seeds) if m in cells else "n/a" for m in models]
            lines.append(f"| {domain} | {name} | " + " | ".join(text) + " |")
        first = {s["model"]: s for s in part}
        lines.append("| training time (s) | | " + " | ".join(f"{first[m]['train_s_mean']:.0f}" if m in first else "n/a" for m in models) + " |")
        lines.append("| parameters | | " + " | ".join(f"{first[m]['params']:,}" if m in first else "n/a" for m in models) + " |")
        lines.append("")
    return "\n".join(lines)


def _plot(summary: list[dict[str, Any]], task: str, models: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    part = [s for s in summary if s["task"] == task]
    groups = list(dict.fromkeys((s["source"], s["domain"], s["class"]) for s in part))
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(groups)), 3.5))
    for i, model in enumerate(models):
        cells = {(s["source"], s["domain"], s["class"]): s for s in part if s["model"] == model}
        means = [cells[g]["dice_mean"] if g in cells else math.nan for g in groups]
        sds = [cells[g]["dice_sd"] if g in cells else 0.0 for g in groups]
        ax.bar(np.arange(len(groups)) + (i - (len(models) - 1) / 2) * width, means, width, yerr=sds, label=model, capsize=2)
    ax.set_xticks(np.arange(len(groups)), [f"{s}→{d}\n{c}" for s, d, c in groups], fontsize=8)
    ax.set_ylabel("Dice on the unseen domain")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncol=len(models))
    ax.set_title(f"{task}: single-source domain generalization")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(
    rows: list[dict[str, Any]],
    models: list[str],
    output: Path,
    header: str,
    paired: list[dict[str, Any]] | None = None,
    scale: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """dg_runs.csv, dg_summary.csv, dg_summary.md and one plot per task, and the paired and scale
    files when given; returns the summary."""
    output.mkdir(parents=True, exist_ok=True)
    if paired:
        write_csv(paired, output / "dg_paired.csv")
        (output / "dg_paired.md").write_text(header + "\n\n" + paired_markdown(paired))
    if scale:
        write_csv(scale, output / "dg_scale.csv")
        sizes = ("\n### Size ratio (predicted over annotated size, median over the cases; below 1: under-segmented)\n\n"
                 + scale_table(scale, SIZE_RATIO)) if any(not math.isnan(r.get(SIZE_RATIO, math.nan)) for r in scale) else ""
        (output / "dg_scale.md").write_text(scale_table(scale) + sizes, encoding="utf-8")
        by_setting = test_time_table(scale)
        if by_setting:
            (output / "dg_test_time.md").write_text(by_setting, encoding="utf-8")
        chosen_on = validation_table(scale, models)
        if chosen_on:
            (output / "dg_val.md").write_text(chosen_on, encoding="utf-8")
        for task in dict.fromkeys(r["task"] for r in scale):
            _plot_scale(scale, task, output / f"dg_scale_{task}.png")
    summary = summarize_seeds(rows)
    write_csv(rows, output / "dg_runs.csv")
    write_csv(summary, output / "dg_summary.csv")
    (output / "dg_summary.md").write_text(header + "\n\n" + summary_markdown(summary, models))
    for task in dict.fromkeys(s["task"] for s in summary):
        _plot(summary, task, models, output / f"dg_dice_{task}.png")
    return summary


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU model from /proc/cpuinfo (Linux) with its family and model numbers, else the machine
    type. The numbers matter: a virtual CPU may be named only by its maker ("AMD EPYC"), and two
    generations under one name give different training results for the same seed (other kernels)."""
    try:
        info = dict(line.split(":", 1) for line in cpuinfo.read_text().split("\n\n")[0].splitlines() if ":" in line)
    except OSError:
        return platform.machine()
    info = {k.strip(): v.strip() for k, v in info.items()}
    if "model name" not in info:
        return platform.machine()
    numbers = ", ".join(f"{k} {info[k]}" for k in ("cpu family", "model") if k in info)
    return f"{info['model name']} ({numbers})" if numbers else info["model name"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, help="folder with fundus/ and cardiac/MnMs/ (see benchmark.yaml)")
    parser.add_argument("--output", type=Path, default=Path("bundle/docs/benchmarks"))
    parser.add_argument("--work-dir", type=Path, default=Path("benchmark_runs"), help="runs, checkpoints and caches")
    parser.add_argument("--settings", type=Path, default=SETTINGS)
    parser.add_argument("--variant", help="a variant of the settings file (for example long: the reference epochs)")
    parser.add_argument("--quick", action="store_const", dest="variant", const="quick", help="--variant quick: a smoke run in minutes")
    parser.add_argument("--report-only", action="store_true", help="summarize the finished runs; run nothing")
    parser.add_argument("--run-one", type=Path, help=argparse.SUPPRESS)  # internal: one run in this process
    parser.add_argument("--sweep-one", type=Path, help=argparse.SUPPRESS)  # internal: one run's scale sweep
    args = parser.parse_args()
    if args.run_one:
        run = json.loads(args.run_one.read_text())
        result = run_one(run)
        (args.run_one.parent / RUN_FILE).write_text(json.dumps(result))
        return
    if args.sweep_one:
        run = json.loads(args.sweep_one.read_text())
        sweep = json.loads((args.sweep_one.parent / "sweep.json").read_text())
        result = {"sweep": sweep, **sweep_one(run, sweep)}
        (args.sweep_one.parent / SCALE_FILE).write_text(json.dumps(result))
        return
    if args.data_root is None or not args.data_root.is_dir():
        parser.error(f"--data-root: {args.data_root} is not a folder")
    settings = load_settings(args.settings, args.variant)
    work_dir = (args.work_dir / (args.variant or "full")).resolve()
    runs = plan_runs(settings, args.data_root.resolve(), work_dir)
    if not runs:
        parser.error(f"--data-root: no task data found under {args.data_root}")
    start = time.perf_counter()
    sweep = settings.get("scale_sweep")
    rows, scale, missing = [], [], 0
    for i, run in enumerate(runs, 1):
        t0 = time.perf_counter()
        if args.report_only and not (_run_dir(run) / RUN_FILE).is_file():
            missing += 1
            print(f"[dg] {i}/{len(runs)} {run['task']} {run['source']} {run['model']} seed {run['seed']}: not run", flush=True)
            continue
        result = json.loads((_run_dir(run) / RUN_FILE).read_text()) if args.report_only else execute(run, sweep)
        run_rows = collect(run, result)
        rows += run_rows
        if sweep is not None:
            scale += collect_scale(run, sweep)
        dice = ", ".join(f"{r['domain']} {r['class']} {r['dice']:.3f}" for r in run_rows)
        print(f"[dg] {i}/{len(runs)} {run['task']} {run['source']} {run['model']} seed {run['seed']}: "
              f"train {result['train_s']} s, eval {result['eval_s']} s ({time.perf_counter() - t0:.0f} s here) | {dice}", flush=True)
    if not rows:
        parser.error("no finished run to report")
    wall = time.perf_counter() - start
    header = (f"Measured by `python -m emclip.benchmarks.dg --data-root {args.data_root}"
              f"{f' --settings {args.settings}' if args.settings != SETTINGS else ''}"
              f"{f' --variant {args.variant}' if args.variant else ''}` on {cpu_name()}, "
              f"{os.cpu_count()} CPU cores, Python {platform.python_version()}; {len(runs) - missing} of {len(runs)} "
              f"planned runs; training and evaluation times per run are in dg_runs.csv.")
    paired = paired_rows(runs, settings.get("compare", []))
    write_outputs(rows, [*settings["models"], *settings["ablations"]], args.output, header, paired, scale)
    print(f"[dg] done in {wall / 60:.1f} min; results in {args.output}", flush=True)


if __name__ == "__main__":
    main()
