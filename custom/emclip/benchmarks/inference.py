"""Test-time steps of a trained bundle: each step alone and the chosen defaults, on the source
domain's validation split and on the unseen domains, per structure, against plain inference.

    python -m emclip.benchmarks.inference --task fundus --bundle-root <trained run> \\
        --dataset-dir ../shared/data/fundus --train-domains REFUGE --output inference_benchmark [--scales 0.5 2]

Network-side steps (mirroring ensemble ``tta``, ``adabn``, ``tent``, and ``refine`` for a task of 2D images)
each run the evaluator once over the source validation split and the evaluation domains; the
post-processing steps of the task overlay's ``postprocess`` dict (``pp_<step>``) are applied to
the plain predictions. The chosen defaults (``chosen``) keep
each network step whose source-validation mean Dice beats plain inference, then the
post-processing steps chosen on that variant's source-validation cases, as
``emclip.inference.choose_postprocessing`` does. Nothing is chosen on an unseen domain.
``--scales`` (2D images) also evaluates plain, refine and chosen on the unseen images zoomed about
their centre by each factor (2: the disc twice as large in the crop; 0.5: half, on a border of the
image's median colour), as domains ``<domain>@x<factor>``; ``--resize`` resizes the whole image by
each factor instead (domains ``<domain>@r<factor>``: another resolution, the same field of view). ``--task`` names an overlay of
``--config-dir`` or is the path of one.

Writes to ``--output``: ``inference_per_case.csv`` (variant, domain, case, class, dice, hd95, size_ratio,
seconds, uncertainty), ``inference_summary.csv`` / ``.md`` (per variant, domain and class: mean
Dice, the paired difference to plain with its bootstrap 95 % interval, median seconds per case, the
median size ratio (predicted over annotated size), the Spearman correlation of the uncertainty score with Dice), ``chosen.yaml`` (the chosen overlay).
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from emclip.benchmarks.report import write_csv
from emclip.configs import CONFIGS
from emclip.inference.choose_postprocessing import (
    choose_steps,
    collect_cases,
    evaluation_workflow,
    mean_dice,
    overlay_lines,
    parse_overrides,
    postprocess_steps,
    refine_applies,
    score_cases,
)
from emclip.reports import get_classes, median_size_ratio, paired_bootstrap, uncertainty_correlation

__all__ = ["NETWORK_STEPS", "main", "scaled_copy", "summarize_variants"]

# network-side steps: the overrides that switch each on
NETWORK_STEPS: dict[str, dict[str, Any]] = {
    "tta": {"tta#flips": True},
    # a contrast change of 1/1.5 and 1.5 either way: the span of the twelfth screen's intensity changes
    "gammas": {"tta#gammas": [0.67, 1.0, 1.5]},
    "adabn": {"adabn#enabled": True},
    "tent": {"tent#enabled": True},
    "refine": {"refine#enabled": True},
}
PLAIN = "plain"
# plain is one pass: every step off, whatever the task overlay's defaults (fundus has the flips and the two-pass mode)
ONE_PASS = {key: [1.0] if key == "tta#gammas" else False for step in NETWORK_STEPS.values() for key in step}
EVAL_DATA = "$@splits['val'] + @splits['eval']"


def scaled_copy(items: Sequence[Mapping[str, Any]], factor: float, root: Path, resize: bool = False) -> list[dict[str, Any]]:
    """Copies of 2D items zoomed by ``factor`` about the image centre, at the same size, or resized.

    Args:
        items: datalist items (``image``, ``label``, ``domain``; the label read by
            ``emclip.data.read_fundus_label`` with the item's ``mask_format``).
        factor: > 1 crops the centre and enlarges it; < 1 shrinks the image onto a canvas of its
            median colour (labels: background); the image keeps its mode (RGB, grayscale).
        root: folder for the copies.
        resize: resize the whole image by ``factor`` instead (``factor`` times the pixels on each
            side, the content unchanged): the disc keeps its share of the image.

    Returns:
        Datalist items of the copies, in domains ``<domain>@x<factor>`` (resized: ``@r<factor>``),
        masks in index encoding.
    """
    from emclip.data import read_fundus_label

    out = []
    for item in items:
        image = Image.open(item["image"])
        image = image.convert("RGB") if image.mode not in ("RGB", "L") else image
        label = Image.fromarray(read_fundus_label(item["label"], item.get("mask_format", "auto")).astype(np.uint8))
        w, h = image.size
        if resize:
            size = (max(1, round(w * factor)), max(1, round(h * factor)))
            image, label = image.resize(size, Image.BILINEAR), label.resize(size, Image.NEAREST)
        elif factor >= 1:
            box = (round(w / 2 - w / factor / 2), round(h / 2 - h / factor / 2), round(w / 2 + w / factor / 2), round(h / 2 + h / factor / 2))
            image, label = image.crop(box).resize((w, h), Image.BILINEAR), label.crop(box).resize((w, h), Image.NEAREST)
        else:
            size = (max(1, round(w * factor)), max(1, round(h * factor)))
            bands = len(image.getbands())
            fill = tuple(int(v) for v in np.median(np.asarray(image).reshape(-1, bands), axis=0))
            canvas, mask = Image.new(image.mode, (w, h), fill if bands > 1 else fill[0]), Image.new("L", (w, h), 0)
            corner = ((w - size[0]) // 2, (h - size[1]) // 2)
            canvas.paste(image.resize(size, Image.BILINEAR), corner)
            mask.paste(label.resize(size, Image.NEAREST), corner)
            image, label = canvas, mask
        domain = f"{item['domain']}@{'r' if resize else 'x'}{factor:g}"
        folder = root / domain
        folder.mkdir(parents=True, exist_ok=True)
        name = Path(item["image"]).stem + ".png"
        image.save(folder / name)
        label.save(folder / f"mask_{name}")
        out.append({"image": str(folder / name), "label": str(folder / f"mask_{name}"), "mask_format": "index", "domain": domain})
    return out


def _rows(variant: str, rows: Sequence[Mapping[str, Any]], uncertainty: Mapping[tuple[str, str], dict[str, float]] | None) -> list[dict[str, Any]]:
    """Tag per-case rows with their variant and, where known, the case's uncertainty score."""
    tagged = []
    for r in rows:
        scores = (uncertainty or {}).get((r["domain"], r["case"]))
        tagged.append({"variant": variant, **r, "uncertainty": scores[r["class"]] if scores else math.nan})
    return tagged


def summarize_variants(rows: Sequence[Mapping[str, Any]], task: str, source_domains: Sequence[str]) -> list[dict[str, Any]]:
    """Per variant, domain and class: mean Dice, the paired difference to ``plain`` with its
    bootstrap interval, median seconds per case, the median size ratio (predicted over annotated
    size) and the uncertainty-Dice Spearman correlation."""
    plain = {(r["domain"], r["case"], r["class"]): r["dice"] for r in rows if r["variant"] == PLAIN}
    summary = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        scored = [r for r in mine if not math.isnan(r["uncertainty"])]
        rho = {(e["domain"], e["class"]): e["spearman"] for e in uncertainty_correlation(scored, get_classes(task))} if scored else {}
        for domain in dict.fromkeys(r["domain"] for r in mine):
            for name in get_classes(task):
                cell = [r for r in mine if r["domain"] == domain and r["class"] == name]
                paired = [(r["dice"], plain[(domain, r["case"], name)]) for r in cell if (domain, r["case"], name) in plain]
                diff = paired_bootstrap(*zip(*paired)) if paired else {"mean_diff": math.nan, "low": math.nan, "high": math.nan}
                summary.append({
                    "variant": variant,
                    "domain": domain,
                    "split": "source-val" if domain in source_domains else "unseen",
                    "class": name,
                    "n": len(cell),
                    "dice": float(np.mean([r["dice"] for r in cell])),
                    "diff_vs_plain": diff["mean_diff"],
                    "ci_low": diff["low"],
                    "ci_high": diff["high"],
                    # the median: the first case of a run also pays the warm-up
                    "seconds_per_case": float(np.median([r["seconds"] for r in cell])),
                    "size_ratio_median": median_size_ratio(r["size_ratio"] for r in cell),
                    "uncertainty_spearman": rho.get((domain, name), math.nan),
                })
    return summary


def _markdown(summary: Sequence[Mapping[str, Any]], task: str, chosen: Mapping[str, Any], command: str) -> str:
    def signed(v: float, digits: int) -> str:
        return "n/a" if math.isnan(v) else f"{v:+.{digits}f}"

    lines = [
        f"# Test-time steps: {task}",
        "",
        f"Command: `{command}`",
        "",
        f"Chosen on the source validation split: network steps {chosen['network'] or 'none'}, "
        f"post-processing {[k for k, v in chosen['postprocess'].items() if v] or 'none'}."
        if chosen["source_split"] else "No source validation split: nothing was chosen, each step is only measured.",
        "",
        "| variant | domain | split | class | n | Dice | vs plain (95 % CI) | median s / case | size pred/ref (median) | rho(unc., Dice) |",
        "|:--|:--|:--|:--|--:|--:|--:|--:|--:|--:|",
    ]
    for e in summary:
        ci = "" if math.isnan(e["ci_low"]) else f" ({e['ci_low']:+.3f}, {e['ci_high']:+.3f})"
        lines.append(
            f"| {e['variant']} | {e['domain']} | {e['split']} | {e['class']} | {e['n']} | {e['dice']:.4f} | "
            f"{signed(e['diff_vs_plain'], 3)}{ci} | {e['seconds_per_case']:.3f} | "
            f"{'n/a' if math.isnan(e['size_ratio_median']) else format(e['size_ratio_median'], '.2f')} | {signed(e['uncertainty_spearman'], 2)} |"
        )
    lines += [
        "",
        "vs plain: mean per-case paired Dice difference to plain inference with its percentile bootstrap 95 % "
        "interval (emclip.reports.paired_bootstrap). s / case: median time of inference and post-processing per "
        "image or volume, data loading excluded. size pred/ref: the median over the cases of the predicted over the annotated size (below 1: under-segmented). rho: Spearman correlation of the uncertainty score with Dice (negative: it flags failures).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Command line entry point; returns the summary rows."""
    parser = argparse.ArgumentParser(prog="python -m emclip.benchmarks.inference", description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, help="a task overlay of --config-dir (fundus, cardiac) or the path of one")
    parser.add_argument("--bundle-root", required=True, help="the trained run's bundle_root (with models/<task>/model.pt)")
    parser.add_argument("--dataset-dir", required=True)
    parser.add_argument("--train-domains", nargs="+", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--config-dir", default=str(CONFIGS))
    parser.add_argument("--steps", nargs="*", default=None, help=f"network steps to measure (default: all of {list(NETWORK_STEPS)} the task has)")
    parser.add_argument("--scales", nargs="*", type=float, default=[], help="2D images: zoom factors of the unseen images")
    parser.add_argument("--resize", nargs="*", type=float, default=[], help="2D images: resize factors of the unseen images")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="other overrides of the training run")
    args = parser.parse_args(argv)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(args.steps or []) - set(NETWORK_STEPS))
    if unknown:
        raise SystemExit(f"--steps: unknown {unknown}; choose from {list(NETWORK_STEPS)}")
    base = {
        "bundle_root": args.bundle_root, "dataset_dir": args.dataset_dir, "train_domains": args.train_domains,
        "overlays_per_domain": 0, "uncertainty": True, **ONE_PASS, **parse_overrides(args.set),
    }
    pp_steps = postprocess_steps(args.task, base, args.config_dir)

    def run(name: str, extra: Mapping[str, Any], data: str | list = EVAL_DATA) -> tuple[list, Any]:
        # the plain predictions of every variant: the post-processing steps are applied to them
        overrides = {**base, **extra, "postprocess": {}, "output_dir": str(output / "runs" / name), "validate#dataset#data": data}
        workflow = evaluation_workflow(args.task, overrides, args.config_dir)
        return collect_cases(workflow, workflow.parser.get_parsed_content("task")), workflow

    def tagged(variant: str, cases: list, post: Mapping[str, bool] | None = None) -> list[dict[str, Any]]:
        unc = {(c.domain, c.case): c.uncertainty for c in cases if c.uncertainty}
        return _rows(variant, score_cases(cases, task, [pp_steps[n] for n, on in (post or {}).items() if on]), unc)

    cases = {}
    cases[PLAIN], workflow = run(PLAIN, {})
    task = workflow.parser.get_parsed_content("task")  # the config's name of the task (its reported classes)
    planar = refine_applies(workflow)  # refine and the zoomed copies are for 2D images
    steps = args.steps if args.steps is not None else [s for s in NETWORK_STEPS if planar or s != "refine"]
    if "refine" in steps and not planar:
        raise SystemExit(f"--steps: refine is for 2D images; {task} runs its network slice by slice")
    source = list(dict.fromkeys(item["domain"] for item in workflow.parser.get_parsed_content("splits")["val"]))
    rows = tagged(PLAIN, cases[PLAIN])
    for step in steps:
        cases[step], _ = run(step, NETWORK_STEPS[step])
        rows += tagged(step, cases[step])
    for step in pp_steps:
        rows += tagged(f"pp_{step}", cases[PLAIN], {step: True})

    def val(variant_cases: list) -> list:
        return [c for c in variant_cases if c.domain in source]

    if source:
        plain_val = mean_dice(score_cases(val(cases[PLAIN]), task), task)
        kept = [s for s in steps if mean_dice(score_cases(val(cases[s]), task), task) > plain_val]
        if len(kept) > 1:
            cases["chosen_network"], _ = run("chosen_network", {k: v for s in kept for k, v in NETWORK_STEPS[s].items()})
        network_cases = cases["chosen_network"] if len(kept) > 1 else cases[kept[0]] if kept else cases[PLAIN]
        post, trials = choose_steps(val(network_cases), task, pp_steps)
        rows += tagged("chosen", network_cases, post)
    else:  # choosing on an unseen domain is what this benchmark exists to avoid
        print("# no source validation split (val_fraction 0?): nothing is chosen, each step is only measured")
        kept, post, trials = [], {name: False for name in pp_steps}, []
    chosen_overrides = {k: v for s in kept for k, v in NETWORK_STEPS[s].items()}

    copies = [(f, False) for f in args.scales] + [(f, True) for f in args.resize] if planar else []
    for factor, resize in copies:
        scaled_items = scaled_copy(workflow.parser.get_parsed_content("splits")["eval"], factor, output / "scaled", resize)
        for variant, extra, pp in ((PLAIN, {}, None), ("refine", NETWORK_STEPS["refine"], None), ("chosen", chosen_overrides, post)):
            scaled, _ = run(f"{variant}_{'r' if resize else 'x'}{factor:g}", extra, scaled_items)
            rows += tagged(variant, scaled, pp)

    summary = summarize_variants(rows, task, source)
    command = "python -m emclip.benchmarks.inference " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    write_csv(rows, output / "inference_per_case.csv")
    write_csv(summary, output / "inference_summary.csv")
    chosen = {"network": kept, "postprocess": post, "trials": trials, "source_split": bool(source)}
    (output / "inference_summary.md").write_text(_markdown(summary, task, chosen, command), encoding="utf-8")
    overlay = [f"# chosen on the source validation split by: {command}"]
    overlay += [f"{k}: {str(v).lower()}" for k, v in chosen_overrides.items()]
    overlay += overlay_lines(post)
    (output / "chosen.yaml").write_text("\n".join(overlay) + "\n", encoding="utf-8")
    print((output / "inference_summary.md").read_text())
    return summary


if __name__ == "__main__":
    main()
