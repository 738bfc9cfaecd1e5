"""How bright each domain's labelled structures are after the bundle's preprocessing.

    python -m emclip.benchmarks.intensity --task cardiac --dataset-dir ../shared/data/cardiac/MnMs \\
        --output bundle/docs/benchmarks/cardiac_screen/appearance [--set KEY=VALUE ...]

A network trained on one scanner meets another's contrast. The task's ``preprocess`` scales every
image to [0, 1] the same way, but what lands where in that range still differs: a vendor whose
images hold brighter tissue outside the heart gets a darker heart. This measures it before anything
is trained: per case, the mean preprocessed intensity inside each reported class and in the
background (label 0); per domain, the mean and sample standard deviation over its cases and the
ratio to the first domain's mean. ``--set`` changes the preprocessing (for example the landmark
standardisation, ``preprocess#standardize``). Writes ``intensity.csv`` (per case) and ``intensity.md``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from monai.transforms import Compose

from emclip.benchmarks.report import write_csv
from emclip.configs import load_config, parse_overrides
from emclip.data import chain, sort_items
from emclip.reports import as_report_classes

__all__ = ["case_intensities", "domain_table", "main"]

BACKGROUND = "background"


def case_intensities(task: str | Path, dataset_dir: str | Path, overrides: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per case and class (and the background): ``domain, case, class, mean, pixels``.

    Args:
        task: an overlay name in ``bundle/configs`` or an overlay's path.
        dataset_dir: the task's data folder (what training's ``dataset_dir`` is).
        overrides: other config overrides (``spacing``, ``spatial_size``, ...).
    """
    parser = load_config(task, overrides={"dataset_dir": str(dataset_dir), **(overrides or {})})
    items = sort_items(parser.get_parsed_content("datalist")(str(dataset_dir)))
    preprocess = Compose(chain(parser.get_parsed_content("preprocess")))
    classes = {name: spec.labels for name, spec in as_report_classes(parser.get_parsed_content("report_classes")).items()}
    rows = []
    for item in items:
        out = preprocess(dict(item))
        image, label = np.asarray(out["image"]), np.asarray(out["label"])[0]
        for name, labels in {BACKGROUND: (0,), **classes}.items():
            inside = np.isin(label, labels)
            if inside.any():  # a class the case does not show has no intensity
                rows.append({"domain": item["domain"], "case": Path(item["image"]).name, "class": name,
                             "mean": float(image[:, inside].mean()), "pixels": int(inside.sum())})
    return rows


def domain_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: per class and domain, the cases, the mean over them (sample sd) and its ratio to
    the first domain's mean of the class."""
    cells: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        cells.setdefault(r["class"], {}).setdefault(r["domain"], []).append(r["mean"])
    lines = ["| class | domain | cases | mean intensity | ratio to the first domain |", "|---|---|---|---|---|"]
    for name, by_domain in cells.items():
        first = None
        for domain, values in by_domain.items():
            mean = float(np.mean(values))
            first = mean if first is None else first
            sd = f" ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else ""
            lines.append(f"| {name} | {domain} | {len(values)} | {mean:.3f}{sd} | {mean / first:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, help="an overlay of bundle/configs (cardiac, fundus) or an overlay's path")
    parser.add_argument("--dataset-dir", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides of the preprocessing, e.g. 'preprocess#standardize#_disabled_=false'")
    args = parser.parse_args(argv)
    if not args.dataset_dir.is_dir():
        parser.error(f"--dataset-dir: {args.dataset_dir} is not a folder")
    try:
        overrides = parse_overrides(args.set)
    except ValueError as err:
        parser.error(str(err))
    rows = case_intensities(args.task, args.dataset_dir, overrides)
    args.output.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.output / "intensity.csv")
    command = " ".join(["python -m emclip.benchmarks.intensity", *(argv if argv is not None else sys.argv[1:])])
    (args.output / "intensity.md").write_text(f"Measured by `{command}`; per case, the mean of the preprocessed "
                                               f"image inside the class.\n\n" + domain_table(rows), encoding="utf-8")
    print(domain_table(rows))


if __name__ == "__main__":
    main()
