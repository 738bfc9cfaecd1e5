"""Datalists: build one for a data root, select domains, split by subject, save and load JSON.

Command line::

    python -m emclip.data.datalist --task fundus --root /path/to/fundus --output fundus.json
    python -m emclip.data.datalist --task cardiac --root /path/to/MnMs --output mnms.json \\
        --train-domains A --val-fraction 0.1 --seed 0
    python -m emclip.data.datalist --task fundus --root /path/to/fundus --check

``--check`` reads every image and label once and lists every problem found (see
``datasets.ItemScreen``), then exits with status 1 if any is an error; training runs the same
screening while it fills its cache.

The JSON holds the full list under ``"all"`` (absolute paths, so MONAI's
``load_decathlon_datalist(file, data_list_key="all")`` reads it too), the per-domain counts, and
with ``--train-domains`` also ``"training"``, ``"validation"`` and ``"testing"`` lists.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any
from pathlib import Path

from emclip.configs import load_config

from emclip.data.cardiac import labelled_slices
from emclip.data.common import DataError

__all__ = [
    "build_datalist",
    "sort_items",
    "leave_one_domain_out",
    "list_domains",
    "load_datalist",
    "main",
    "save_datalist",
    "split_domains",
    "summarize",
]


def sort_items(items: Iterable[dict]) -> list[dict]:
    """Items in datalist order: by domain, split, image file and frame."""
    return sorted(items, key=lambda it: (it["domain"], it["split"], str(it["image"]), it.get("frame", 0)))


def build_datalist(root: str | Path, task: str | Path, **options: Any) -> list[dict]:
    """List every labelled item of a data root with the task overlay's ``datalist`` reader.

    Args:
        root: data root in the layout the reader expects (fundus: one folder per domain; cardiac:
            searched recursively; ``task_2d``: ``<domain>/<split>/{image,label}``).
        task: an overlay name in ``bundle/configs`` or an overlay's path.
        options: the reader's own options, overriding the overlay's (e.g. fundus ``mask_format``,
            cardiac ``csv_path``, ``missing_label="skip"`` to count and log an image without label).

    Returns:
        Items with ``image``, ``label``, ``domain``, ``subject``, ``split`` (cardiac also ``phase``
        and ``frame``), sorted by domain, split and file.
    """
    find = load_config(task).get_parsed_content("datalist")
    return sort_items(find(root, **options))


def list_domains(items: Iterable[dict]) -> list[str]:
    """Sorted domain names of ``items``."""
    return sorted({it["domain"] for it in items})


def _as_list(domains: str | Sequence[str] | None) -> list[str]:
    if domains is None:
        return []
    return [domains] if isinstance(domains, str) else list(domains)


def split_domains(
    items: Sequence[dict],
    train_domains: str | Sequence[str],
    eval_domains: str | Sequence[str] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    train_splits: str | Sequence[str] | None = None,
) -> dict[str, list[dict]]:
    """Split items into source-domain training/validation and unseen-domain evaluation sets.

    Single source: one training domain. Leave-one-domain-out: all but one (see
    ``leave_one_domain_out``). Validation takes ``val_fraction`` of the subjects of each training
    domain (at least one when the fraction is positive and the domain has two or more subjects),
    chosen with ``seed``; all items of a subject stay in the same set.

    Args:
        items: datalist items.
        train_domains: source domain name(s).
        eval_domains: unseen domain name(s); default: every domain not used for training. They
            contribute all their splits.
        val_fraction: fraction of source subjects held out for validation, in ``[0, 1)``.
        seed: seed of the subject shuffle.
        train_splits: split names of the source domains to use (e.g. ``"train"``); default all.

    Returns:
        ``{"train": [...], "val": [...], "eval": [...]}``.

    Raises:
        ValueError: unknown domains (named, with the domains found), an empty selection, a domain
            both in training and evaluation, or a bad fraction.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    found = list_domains(items)
    train = _as_list(train_domains)
    evaluate = [d for d in found if d not in train] if eval_domains is None else _as_list(eval_domains)
    unknown = sorted(set(train + evaluate) - set(found))
    if unknown:
        raise ValueError(f"unknown domain(s) {unknown}; domains found: {found}")
    if not train:
        raise ValueError(f"no training domain selected; domains found: {found}")
    if not evaluate:
        raise ValueError(f"no evaluation domain selected (training uses {train}); domains found: {found}")
    both = sorted(set(train) & set(evaluate))
    if both:
        raise ValueError(f"domain(s) {both} selected for both training and evaluation; domains found: {found}")
    splits = _as_list(train_splits)
    source = [it for it in items if it["domain"] in train and (not splits or it["split"] in splits)]
    if not source:
        raise ValueError(f"no items in training domains {train} with splits {splits}; domains found: {found}")
    val_subjects = _validation_subjects(source, val_fraction, seed)
    return {
        "train": [it for it in source if (it["domain"], it["subject"]) not in val_subjects],
        "val": [it for it in source if (it["domain"], it["subject"]) in val_subjects],
        "eval": [it for it in items if it["domain"] in evaluate],
    }


def _validation_subjects(items: Sequence[dict], fraction: float, seed: int) -> set[tuple[str, str]]:
    """Pick ``fraction`` of the subjects of each domain, deterministically for a seed."""
    subjects: dict[str, set[str]] = defaultdict(set)
    for it in items:
        subjects[it["domain"]].add(it["subject"])
    chosen: set[tuple[str, str]] = set()
    for domain, names in sorted(subjects.items()):
        ordered = sorted(names)
        random.Random(f"{seed}:{domain}").shuffle(ordered)  # string seeds are stable across runs
        count = round(fraction * len(ordered))
        if fraction > 0 and len(ordered) > 1:
            count = min(max(count, 1), len(ordered) - 1)
        chosen.update((domain, s) for s in ordered[:count])
    return chosen


def leave_one_domain_out(items: Sequence[dict], held_out: str, **kwargs: object) -> dict[str, list[dict]]:
    """``split_domains`` training on every domain but ``held_out`` and evaluating on it."""
    found = list_domains(items)
    if held_out not in found:
        raise ValueError(f"unknown domain(s) [{held_out!r}]; domains found: {found}")
    return split_domains(items, [d for d in found if d != held_out], held_out, **kwargs)


def summarize(items: Sequence[dict], count_slices: bool = False) -> dict[str, dict[str, int]]:
    """Per-domain counts: ``images`` and ``subjects``; with ``count_slices`` (cardiac) also
    ``slices`` and ``labelled_slices``, read from the label files."""
    counts: dict[str, dict[str, int]] = {}
    subjects: dict[str, set[str]] = defaultdict(set)
    for it in items:
        entry = counts.setdefault(it["domain"], {"images": 0, "subjects": 0})
        entry["images"] += 1
        subjects[it["domain"]].add(it["subject"])
        if count_slices:
            labelled, total = labelled_slices(it["label"], it.get("frame", -1))
            entry["slices"] = entry.get("slices", 0) + total
            entry["labelled_slices"] = entry.get("labelled_slices", 0) + len(labelled)
    for domain, names in subjects.items():
        counts[domain]["subjects"] = len(names)
    return dict(sorted(counts.items()))


def save_datalist(path: str | Path, items: Sequence[dict], **extra: object) -> None:
    """Write ``{"all": items, **extra}`` as JSON (``extra`` e.g. task, counts, training lists)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**extra, "all": list(items)}, indent=1) + "\n")


def load_datalist(path: str | Path, key: str = "all") -> list[dict]:
    """Read the ``key`` list of a datalist JSON written by ``save_datalist``."""
    data = json.loads(Path(path).read_text())
    if key not in data:
        raise KeyError(f"datalist {path} has no {key!r} list; it has {sorted(data)}")
    return data[key]


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line entry point; returns what it wrote."""
    parser = argparse.ArgumentParser(prog="python -m emclip.data.datalist", description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, help="task overlay: fundus, cardiac, task_2d or an overlay's path")
    parser.add_argument("--root", required=True, help="data root")
    parser.add_argument("--output", default=None, help="JSON file to write (required unless --check)")
    parser.add_argument("--check", action="store_true", help="read every image and label once and list every problem")
    parser.add_argument("--mask-format", default=None, help="fundus mask encoding: auto, dofe, index, disc_cup_pair")
    parser.add_argument("--csv", default=None, help="cardiac information CSV (default: found under --root)")
    parser.add_argument("--skip-missing-labels", action="store_true", help="skip (and count) images without mask")
    parser.add_argument("--train-domains", nargs="+", default=None, help="also write training/validation/testing")
    parser.add_argument("--eval-domains", nargs="+", default=None, help="default: all domains not trained on")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.output is None and not args.check:
        parser.error("--output is required unless --check is given")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # only the options given: each reader takes its own
    given = {"mask_format": args.mask_format, "csv_path": args.csv, "missing_label": "skip" if args.skip_missing_labels else None}
    options = {k: v for k, v in given.items() if v is not None}
    try:
        items = build_datalist(args.root, args.task, **options)
    except DataError as err:
        parser.exit(1, f"{err}\n")
    overrides = {"mask_format": args.mask_format} if args.mask_format else {}
    if args.check:
        return _check(parser, items, args.task, overrides)
    volumes = any(str(it["label"]).endswith((".nii", ".nii.gz")) for it in items)
    counts = summarize(items, count_slices=volumes)
    payload: dict = {"task": args.task, "root": str(Path(args.root).resolve()), "counts": counts}
    if args.train_domains:
        parts = split_domains(items, args.train_domains, args.eval_domains, args.val_fraction, args.seed)
        payload.update(training=parts["train"], validation=parts["val"], testing=parts["eval"])
    save_datalist(args.output, items, **payload)

    columns = list(next(iter(counts.values())))
    print(f"{'domain':<12}" + "".join(f"{c:>17}" for c in columns))
    for domain, entry in counts.items():
        print(f"{domain:<12}" + "".join(f"{entry[c]:>17}" for c in columns))
    print(f"wrote {len(items)} items to {args.output}")
    if args.train_domains:
        print("split: " + ", ".join(f"{k} {len(v)}" for k, v in parts.items()))
    return payload


def _check(parser: argparse.ArgumentParser, items: Sequence[dict], task: str, overrides: dict) -> dict:
    # import MONAI only here: the rest of this command does not need it
    from emclip.data.datasets import screen_items
    from emclip.data.pipeline import task_transforms

    screen = screen_items(items, task_transforms(task, "preprocess", overrides=overrides))
    for kind, messages in (("warning", screen.warnings), ("error", screen.errors)):
        for message in messages:
            print(f"{kind}: {message}")
    summary = f"checked {len(items)} items: {len(screen.errors)} errors, {len(screen.warnings)} warnings"
    if screen.errors:
        parser.exit(1, summary + "\n")
    print(summary)
    return {"errors": screen.errors, "warnings": screen.warnings}


if __name__ == "__main__":
    main()
