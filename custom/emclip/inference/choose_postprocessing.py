"""Choose the post-processing steps of a trained bundle on the SOURCE domain's validation split.

The candidates are the steps of the task overlay's ``postprocess`` dict, in its order. As nnU-Net
does, each one is kept only if it raises the mean Dice over the classes on top of the steps kept
before it; the network runs once and the steps are applied to its stored predictions. The choice
is written as a config overlay (``postprocess#<step>#_disabled_: true/false``) to add last to the
``--config_file`` list of evaluation and inference; for a task of 2D images (whose inferer takes
the two-pass refinement) it also holds ``refine#disc_fraction``, the median disc share of the
source training labels. Command line::

    python -m emclip.inference.choose_postprocessing --task fundus --bundle-root bundle \\
        --dataset-dir ../shared/data/fundus --train-domains REFUGE --output bundle/configs/chosen_fundus.yaml

``--task`` names an overlay of ``--config-dir`` or is the path of one. ``--set key=value`` passes
any other config override of the training run (``backbone``, ``spatial_size``, ...); the value is
read as YAML.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.data import MetaTensor
from monai.engines.utils import IterationEvents
from monai.transforms import Compose
from monai.utils import convert_to_numpy

from emclip.configs import CONFIGS, meta_files, overlay_file, parse_overrides, task_files
from emclip.inference.inferer import supports_refine
from emclip.inference.refine import measure_disc_fraction
from emclip.reports import as_label_map, case_metrics, get_classes
from emclip.reports.handler import case_from_filename

__all__ = [
    "Case",
    "choose_steps",
    "collect_cases",
    "evaluation_workflow",
    "main",
    "mean_dice",
    "parse_overrides",
    "overlay_lines",
    "postprocess_steps",
    "refine_applies",
    "score_cases",
]

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


def _files(task: str, config_dir: str | Path) -> tuple[list[str], list[str]]:
    """Config files (train + evaluate [+ task overlay]) and metadata files of ``task``.

    A packaged bundle's configs already hold their overlay, so a task without an overlay file in
    ``config_dir`` adds none.
    """
    overlay = overlay_file(task, config_dir)
    files = task_files(("train", "evaluate"), task if overlay.is_file() else None, config_dir)
    return [str(f) for f in files], [str(m) for m in meta_files(task, config_dir)]


def evaluation_workflow(task: str, overrides: Mapping[str, Any], config_dir: str | Path = CONFIGS) -> ConfigWorkflow:
    """The initialised evaluation workflow (train + evaluate [+ task overlay]) of ``config_dir``.

    Args:
        task: a task overlay's name in ``config_dir`` (``"fundus"``, ``"cardiac"``) or its path.
        overrides: config overrides (paths, domains, the training run's settings, test-time steps).
        config_dir: ``bundle/configs`` of the repository, or ``configs`` of a packaged bundle
            (whose configs already hold their task overlay).
    """
    files, meta = _files(task, config_dir)
    workflow = ConfigWorkflow(
        config_file=files, meta_file=meta, workflow_type="train", **dict(overrides)
    )
    workflow.initialize()
    return workflow


def postprocess_steps(task: str, overrides: Mapping[str, Any] | None = None, config_dir: str | Path = CONFIGS) -> dict[str, Callable]:
    """Every step of the task's ``postprocess`` config dict, built switched on, in its order.

    Args:
        task: as in :func:`evaluation_workflow`.
        overrides: config overrides (those of the training run, which the steps may name).
        config_dir: as in :func:`evaluation_workflow`.
    """
    files, meta = _files(task, config_dir)
    parser = ConfigParser()
    parser.read_config(files)
    parser.read_meta(meta)
    for key, value in (overrides or {}).items():
        parser[key] = value
    names = list(parser.get("postprocess") or {})
    for name in names:
        parser[f"postprocess#{name}#_disabled_"] = False
    return dict(parser.get_parsed_content("postprocess")) if names else {}


def refine_applies(workflow: ConfigWorkflow) -> bool:
    """Whether the workflow's task takes the two-pass refinement: its network runs on 2D images."""
    return supports_refine(workflow.parser.get_parsed_content("base_inferer"))


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


def score_cases(cases: Sequence[Case], task: str, steps: Sequence[Callable] = ()) -> list[dict[str, Any]]:
    """Per-case rows ``domain, case, class, dice, hd95, size_ratio, seconds`` after the post-processing ``steps``
    (dictionary transforms of ``pred``, as :func:`postprocess_steps` builds them); ``seconds`` adds
    the steps' own time to the case's."""
    chain = Compose(list(steps))
    rows = []
    for c in cases:
        start = time.perf_counter()
        pred = convert_to_numpy(chain({"pred": c.pred[None]})["pred"])[0] if steps else c.pred
        seconds = c.seconds + time.perf_counter() - start
        for m in case_metrics(pred, c.label, get_classes(task), spacing=c.spacing):
            rows.append({"domain": c.domain, "case": c.case, **m, "seconds": seconds})
    return rows


def mean_dice(rows: Sequence[Mapping[str, Any]], task: str) -> float:
    """Mean over the classes of the mean Dice over the cases."""
    return float(np.mean([np.mean([r["dice"] for r in rows if r["class"] == name]) for name in get_classes(task)]))


def choose_steps(cases: Sequence[Case], task: str, steps: Mapping[str, Callable]) -> tuple[dict[str, bool], list[dict[str, Any]]]:
    """Greedy nnU-Net style choice: keep a step if it raises :func:`mean_dice` over the kept ones.

    Args:
        cases: the evaluated cases (raw predictions).
        task: task name (its reported classes).
        steps: step name to transform, tried in this order (:func:`postprocess_steps`).

    Returns:
        The chosen switches (every step of ``steps``) and one record per tried step:
        ``{"step", "dice_without", "dice_with", "kept"}``.
    """
    chosen = {name: False for name in steps}
    best = mean_dice(score_cases(cases, task), task)
    trials = []
    for name in steps:
        candidate = {**chosen, name: True}
        value = mean_dice(score_cases(cases, task, [steps[n] for n, on in candidate.items() if on]), task)
        kept = value > best
        trials.append({"step": name, "dice_without": best, "dice_with": value, "kept": kept})
        if kept:
            chosen, best = candidate, value
    return chosen, trials


def overlay_lines(chosen: Mapping[str, bool]) -> list[str]:
    """Config overrides switching each post-processing step on or off."""
    return [f"postprocess#{name}#_disabled_: {str(not on).lower()}" for name, on in chosen.items()]


def _overlay_text(chosen: Mapping[str, bool], trials: Sequence[Mapping[str, Any]], n: int, fraction: float | None, command: str) -> str:
    lines = [
        f"# Chosen on the source validation split ({n} cases) by: {command}",
        "# step: mean Dice over the classes without -> with it (kept when it rises)",
        *(f"#   {t['step']}: {t['dice_without']:.4f} -> {t['dice_with']:.4f}{' kept' if t['kept'] else ''}" for t in trials),
        *overlay_lines(chosen),
    ]
    if fraction is not None:
        lines += ["# median disc share of the source training labels", f"refine#disc_fraction: {fraction:.4f}"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point; returns the chosen steps, the trials and the disc fraction."""
    parser = argparse.ArgumentParser(prog="python -m emclip.inference.choose_postprocessing", description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, help="a task overlay of --config-dir (fundus, cardiac) or the path of one")
    parser.add_argument("--bundle-root", required=True, help="the trained run's bundle_root (with models/<task>/model.pt)")
    parser.add_argument("--dataset-dir", required=True)
    parser.add_argument("--train-domains", nargs="+", required=True, help="the source domain(s) it was trained on")
    parser.add_argument("--output", required=True, help="config overlay to write (YAML)")
    parser.add_argument("--config-dir", default=str(CONFIGS), help="bundle/configs, or a packaged bundle's configs")
    parser.add_argument("--work-dir", default=None,
                        help="reports of the raw predictions (default: <bundle-root>/eval/<task>_source_val)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="other overrides of the training run")
    args = parser.parse_args(argv)
    output = Path(args.output)
    overrides = {
        "bundle_root": args.bundle_root,
        "dataset_dir": args.dataset_dir,
        "train_domains": args.train_domains,
        "output_dir": args.work_dir or str(Path(args.bundle_root) / "eval" / f"{Path(args.task).stem}_source_val"),
        "overlays_per_domain": 0,
        **parse_overrides(args.set),
    }
    steps = postprocess_steps(args.task, overrides, args.config_dir)
    # the raw predictions: no step in the workflow, they are applied to its stored predictions
    workflow = evaluation_workflow(args.task, {**overrides, "postprocess": {}, "validate#dataset#data": SOURCE_VAL}, args.config_dir)
    task = workflow.parser.get_parsed_content("task")
    cases = collect_cases(workflow, task)
    chosen, trials = choose_steps(cases, task, steps)
    fraction = None
    if refine_applies(workflow):
        fraction = measure_disc_fraction([item["label"] for item in workflow.parser.get_parsed_content("splits")["train"]])
    command = "python -m emclip.inference.choose_postprocessing " + " ".join(argv if argv is not None else sys.argv[1:])
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(_overlay_text(chosen, trials, len(cases), fraction, command), encoding="utf-8")
    for t in trials:
        print(f"{t['step']}: {t['dice_without']:.4f} -> {t['dice_with']:.4f}{' kept' if t['kept'] else ''}")
    print(f"wrote {output}")
    return {"postprocess": chosen, "trials": trials, "disc_fraction": fraction}


if __name__ == "__main__":
    main()
