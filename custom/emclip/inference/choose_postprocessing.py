"""Choose the post-processing steps of a trained bundle on the SOURCE domain's validation split.

As nnU-Net does, each step (in the order of ``emclip.inference.STEPS``) is kept only if it raises
the mean Dice over the classes on top of the steps kept before it; the network runs once and the
steps are applied to its stored predictions. The choice is written as a config overlay to add last
to the ``--config_file`` list of evaluation and inference; for fundus it also holds
``refine#disc_fraction``, the median disc share of the source training labels. Command line::

    python -m emclip.inference.choose_postprocessing --task fundus --bundle-root bundle \\
        --dataset-dir ../shared/data/fundus --train-domains REFUGE --output bundle/configs/chosen_fundus.yaml

``--set key=value`` passes any other config override of the training run (``backbone``,
``spatial_size``, ...); the value is read as YAML.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from ignite.engine import Engine, Events
from monai.bundle import ConfigWorkflow
from monai.data import MetaTensor
from monai.engines.utils import IterationEvents
from monai.utils import convert_to_numpy

from emclip.inference.postprocess import STEPS, TASK_STEPS, postprocess
from emclip.inference.refine import measure_disc_fraction
from emclip.reports import as_label_map, case_metrics, get_classes
from emclip.reports.handler import case_from_filename

__all__ = ["Case", "choose_steps", "collect_cases", "evaluation_workflow", "main", "mean_dice", "parse_overrides", "score_cases"]

REPO_CONFIGS = Path(__file__).resolve().parents[3] / "bundle" / "configs"
SOURCE_VAL = "$@splits['val']"


@dataclass
class Case:
    """One evaluated case: its prediction and label (original geometry), spacing and timing.

    Attributes:
        domain: domain name. case: case name. pred, label: label maps without channel axis.
        spacing: voxel size for HD95, or ``None``. seconds: inference and postprocessing time
        (see :func:`collect_cases`).
        uncertainty: per-class uncertainty scores, when the run computed them.
    """

    domain: str
    case: str
    pred: np.ndarray
    label: np.ndarray
    spacing: list[float] | None
    seconds: float
    uncertainty: dict[str, float] | None = None


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``key=value`` strings to config overrides, each value read as YAML.

    Raises:
        ValueError: a pair without ``=``.
    """
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set {pair!r}: expected key=value, e.g. spatial_size=[256,256]")
        overrides[key] = yaml.safe_load(value)
    return overrides


def evaluation_workflow(task: str, overrides: Mapping[str, Any], config_dir: str | Path = REPO_CONFIGS) -> ConfigWorkflow:
    """The initialised evaluation workflow (train + evaluate [+ task overlay]) of ``config_dir``.

    Args:
        task: ``"fundus"`` or ``"cardiac"``.
        overrides: config overrides (paths, domains, the training run's settings, test-time steps).
        config_dir: ``bundle/configs`` of the repository, or ``configs`` of a packaged bundle
            (whose configs already hold their task overlay).
    """
    config_dir = Path(config_dir)
    files = [config_dir / "train.yaml", config_dir / "evaluate.yaml"]
    if (config_dir / f"{task}.yaml").is_file():
        files.append(config_dir / f"{task}.yaml")
    meta = [config_dir / "metadata.json"]
    if task == "cardiac" and (config_dir / "metadata_cardiac.json").is_file():
        meta.append(config_dir / "metadata_cardiac.json")
    workflow = ConfigWorkflow(
        config_file=[str(f) for f in files], meta_file=[str(m) for m in meta], workflow_type="train", **dict(overrides)
    )
    workflow.initialize()
    return workflow


def collect_cases(workflow: ConfigWorkflow, task: str) -> list[Case]:
    """Run the workflow's evaluator once and keep every case's prediction, label and timing.

    The time of a case runs from the start of its iteration to the end of the evaluator's
    postprocessing: the inferer with its test-time steps, the argmax, the inversion to the input's
    geometry; not data loading nor the metrics.
    """
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    if len(evaluator.data_loader) == 0:
        raise ValueError("no case to evaluate: the selected split is empty (for the source validation split raise val_fraction)")
    cases: list[Case] = []
    clock: dict[str, float] = {}

    def on_start(engine: Engine) -> None:
        clock["start"] = time.perf_counter()

    def on_model(engine: Engine) -> None:
        # MODEL_COMPLETED handlers run in order: the evaluator's postprocessing, then this one
        clock["seconds"] = time.perf_counter() - clock["start"]

    def on_complete(engine: Engine) -> None:
        seconds = clock["seconds"] / len(engine.state.output)
        for item, extra in zip(engine.state.output, engine.state.batch):
            label = item["label"]
            pred = as_label_map(item["pred"])
            spacing = None
            if isinstance(label, MetaTensor):
                pixdim = convert_to_numpy(label.pixdim, dtype=np.float64)
                spacing = pixdim[: pred.ndim].tolist() if pixdim.size >= pred.ndim else None
            uncertainty = None
            if "uncertainty" in item:
                from emclip.inference.uncertainty import uncertainty_scores

                uncertainty = uncertainty_scores(item["uncertainty"], pred, get_classes(task))
            name = label.meta["filename_or_obj"] if isinstance(label, MetaTensor) else f"case_{len(cases)}"
            cases.append(Case(str(item.get("domain", extra.get("domain"))), case_from_filename(name),
                              pred.astype(np.uint8), as_label_map(label).astype(np.uint8), spacing, seconds, uncertainty))

    evaluator.add_event_handler(Events.ITERATION_STARTED, on_start)
    evaluator.add_event_handler(IterationEvents.MODEL_COMPLETED, on_model)
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, on_complete)
    evaluator.run()
    return cases


def score_cases(cases: Sequence[Case], task: str, steps: Mapping[str, bool] | None = None) -> list[dict[str, Any]]:
    """Per-case rows ``domain, case, class, dice, hd95, seconds`` after the post-processing ``steps``;
    ``seconds`` adds the steps' own time to the case's."""
    rows = []
    for c in cases:
        start = time.perf_counter()
        pred = postprocess(c.pred, task, steps)
        seconds = c.seconds + time.perf_counter() - start
        for m in case_metrics(pred, c.label, get_classes(task), spacing=c.spacing):
            rows.append({"domain": c.domain, "case": c.case, **m, "seconds": seconds})
    return rows


def mean_dice(rows: Sequence[Mapping[str, Any]], task: str) -> float:
    """Mean over the classes of the mean Dice over the cases."""
    return float(np.mean([np.mean([r["dice"] for r in rows if r["class"] == name]) for name in get_classes(task)]))


def choose_steps(cases: Sequence[Case], task: str) -> tuple[dict[str, bool], list[dict[str, Any]]]:
    """Greedy nnU-Net style choice: keep a step if it raises :func:`mean_dice` over the kept ones.

    Returns:
        The chosen switches (every step of :data:`STEPS`) and one record per tried step:
        ``{"step", "dice_without", "dice_with", "kept"}``.
    """
    chosen = {name: False for name in STEPS}
    best = mean_dice(score_cases(cases, task, chosen), task)
    trials = []
    for name in TASK_STEPS[task]:
        candidate = {**chosen, name: True}
        value = mean_dice(score_cases(cases, task, candidate), task)
        kept = value > best
        trials.append({"step": name, "dice_without": best, "dice_with": value, "kept": kept})
        if kept:
            chosen, best = candidate, value
    return chosen, trials


def _overlay_text(task: str, chosen: Mapping[str, bool], trials: Sequence[Mapping[str, Any]], n: int, fraction: float | None, command: str) -> str:
    lines = [
        f"# Chosen on the source validation split ({n} cases) by: {command}",
        "# step: mean Dice over the classes without -> with it (kept when it rises)",
        *(f"#   {t['step']}: {t['dice_without']:.4f} -> {t['dice_with']:.4f}{' kept' if t['kept'] else ''}" for t in trials),
        "postprocess:",
        *(f"  {name}: {str(on).lower()}" for name, on in chosen.items()),
    ]
    if fraction is not None:
        lines += ["# median disc share of the source training labels", f"refine#disc_fraction: {fraction:.4f}"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point; returns the chosen steps, the trials and the disc fraction."""
    parser = argparse.ArgumentParser(prog="python -m emclip.inference.choose_postprocessing", description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=("fundus", "cardiac"))
    parser.add_argument("--bundle-root", required=True, help="the trained run's bundle_root (with models/<task>/model.pt)")
    parser.add_argument("--dataset-dir", required=True)
    parser.add_argument("--train-domains", nargs="+", required=True, help="the source domain(s) it was trained on")
    parser.add_argument("--output", required=True, help="config overlay to write (YAML)")
    parser.add_argument("--config-dir", default=str(REPO_CONFIGS), help="bundle/configs, or a packaged bundle's configs")
    parser.add_argument("--work-dir", default=None,
                        help="reports of the raw predictions (default: <bundle-root>/eval/<task>_source_val)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="other overrides of the training run")
    args = parser.parse_args(argv)
    output = Path(args.output)
    overrides = {
        "bundle_root": args.bundle_root,
        "dataset_dir": args.dataset_dir,
        "train_domains": args.train_domains,
        "output_dir": args.work_dir or str(Path(args.bundle_root) / "eval" / f"{args.task}_source_val"),
        "overlays_per_domain": 0,
        **parse_overrides(args.set),
        "postprocess": {name: False for name in STEPS},
        "validate#dataset#data": SOURCE_VAL,
    }
    workflow = evaluation_workflow(args.task, overrides, args.config_dir)
    cases = collect_cases(workflow, args.task)
    chosen, trials = choose_steps(cases, args.task)
    fraction = None
    if args.task == "fundus":
        fraction = measure_disc_fraction([item["label"] for item in workflow.parser.get_parsed_content("splits")["train"]])
    command = "python -m emclip.inference.choose_postprocessing " + " ".join(argv if argv is not None else sys.argv[1:])
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(_overlay_text(args.task, chosen, trials, len(cases), fraction, command), encoding="utf-8")
    for t in trials:
        print(f"{t['step']}: {t['dice_without']:.4f} -> {t['dice_with']:.4f}{' kept' if t['kept'] else ''}")
    print(f"wrote {output}")
    return {"postprocess": chosen, "trials": trials, "disc_fraction": fraction}


if __name__ == "__main__":
    main()
