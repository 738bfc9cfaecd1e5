"""The reference of the intensity landmark standardisation (``preprocess#standardize``), from the
training images.

    python -m emclip.data.landmarks --task cardiac --dataset-dir ../shared/data/cardiac/MnMs --train-domains B

Runs the overlay's ``preprocess`` up to its ``standardize`` step on the training split (training's
own ``splits``, with the same ``--val-fraction`` and ``--seed``, so validation subjects do not shape
it), takes each image's intensities at the step's ``percentiles``
and prints their mean over the images as the ``intensity_landmarks`` override; ``--output`` also
writes it as JSON. ``--set`` passes training's overrides of the steps before it (``spacing``,
``spatial_size``: the cardiac step sees the cropped field of view). The landmarks belong to the
trained model: evaluation and inference use the same. In a training config the same reference is
``$emclip.data.reference_landmarks('cardiac', @splits['train'], {'spacing': @spacing, 'spatial_size': @spatial_size})``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["STEP", "reference_landmarks", "main"]

STEP = "standardize"  # the preprocess key of the standardisation step


def reference_landmarks(task: str | Path, items: Sequence[dict], overrides: Mapping[str, Any] | None = None) -> list[float]:
    """Mean over ``items`` of each image's intensities at the ``standardize`` step's percentiles,
    measured on what reaches that step.

    Args:
        task: an overlay name in ``bundle/configs`` or an overlay's path; its ``preprocess`` has a
            ``standardize`` step (enabled or not).
        items: datalist items of the training images.
        overrides: other config overrides (``spacing``, ...).

    Raises:
        KeyError: the overlay's ``preprocess`` has no ``standardize`` step.
    """
    from monai.transforms import Compose

    from emclip.configs import load_config
    from emclip.data.pipeline import chain
    from emclip.data.transforms import LANDMARK_PERCENTILES, StandardizeLandmarksd, histogram_landmarks

    parser = load_config(task, overrides=overrides)
    steps = list(parser["preprocess"])
    if STEP not in steps:
        raise KeyError(f"preprocess#{STEP}: the overlay {task} has no such step; add a "
                       f"{StandardizeLandmarksd.__name__} under preprocess ({', '.join(steps)})")
    percentiles = parser.get_parsed_content(f"preprocess#{STEP}#percentiles", default=LANDMARK_PERCENTILES)
    for later in steps[steps.index(STEP):]:
        parser[f"preprocess#{later}#_disabled_"] = True
    preprocess = Compose(chain(parser.get_parsed_content("preprocess")))
    keys = parser[f"preprocess#{STEP}#keys"]
    key = keys if isinstance(keys, str) else keys[0]
    marks = [histogram_landmarks(preprocess(dict(item))[key], percentiles) for item in items]
    return [round(float(v), 5) for v in np.mean(marks, axis=0)]


def main(argv: Sequence[str] | None = None) -> list[float]:
    """Command line entry point; returns the landmarks."""
    from emclip.data.datalist import _validation_subjects, build_datalist
    from emclip.inference.choose_postprocessing import parse_overrides

    parser = argparse.ArgumentParser(prog="python -m emclip.data.landmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, help="task overlay: cardiac, fundus, task_2d or an overlay's path")
    parser.add_argument("--dataset-dir", required=True, help="the task's data folder (training's dataset_dir)")
    parser.add_argument("--train-domains", nargs="+", required=True, help="the domains the model trains on")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="as in training: these subjects are left out")
    parser.add_argument("--seed", type=int, default=0, help="as in training: the seed of the validation split")
    parser.add_argument("--output", type=Path, default=None, help="also write {intensity_landmarks: [...]} as JSON")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="training's other overrides that shape the preprocessing, e.g. spacing=1.5 'spatial_size=[224,224]'")
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.set)
    except ValueError as err:
        parser.error(str(err))
    items = build_datalist(args.dataset_dir, args.task)
    source = [it for it in items if it["domain"] in args.train_domains]
    if not source:
        parser.error(f"--train-domains: none of {args.train_domains} in {args.dataset_dir} "
                     f"(domains: {sorted({it['domain'] for it in items})})")
    held_out = _validation_subjects(source, args.val_fraction, args.seed)
    train = [it for it in source if (it["domain"], it["subject"]) not in held_out]
    landmarks = reference_landmarks(args.task, train, {**overrides, "dataset_dir": str(args.dataset_dir)})
    if args.output is not None:
        args.output.write_text(json.dumps({"intensity_landmarks": landmarks}) + "\n", encoding="utf-8")
    print(f"{len(train)} training images; train with: --intensity_landmarks '{json.dumps(landmarks)}' "
          f"'--preprocess#{STEP}#_disabled_' false")
    return landmarks


if __name__ == "__main__":
    main()
