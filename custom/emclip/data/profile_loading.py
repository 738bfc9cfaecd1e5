"""Measure data loading: one epoch cold (load + preprocess), one epoch from the cache, cache size.

Command line::

    python -m emclip.data.profile_loading --task fundus --root /path/to/fundus --domains REFUGE
    python -m emclip.data.profile_loading --task cardiac --root /path/to/MnMs --cache disk --cache-dir /tmp/c

Fundus: the cache (``CacheDataset`` in memory, or ``PersistentDataset`` on disk) is filled once,
which loads and preprocesses every item (the cold epoch), then every item is read again through a
``DataLoader`` (the cached epoch). With ``--transforms train`` the cached epoch also runs the random
augmentation. Cardiac: the cold pass preprocesses the volumes and cuts them into labelled slices
(``make_slice_dataset``); the cached epoch reads the slices with augmentation. Every epoch goes
through a single-process ``DataLoader`` with batch size ``--batch-size``. Times are wall-clock
seconds on whatever else the machine runs, so report the load next to them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from monai.data import DataLoader

from .datalist import build_datalist
from .datasets import cache_nbytes, make_dataset, make_slice_dataset
from .transforms import augmentation, evaluation_transforms, normalization, preprocessing, training_transforms

__all__ = ["main", "profile_loading"]


def _rss_bytes() -> int:
    """Resident memory of this process (Linux ``/proc``; 0 elsewhere)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _epoch(dataset: torch.utils.data.Dataset, batch_size: int) -> float:
    """Seconds to read every item of ``dataset`` once in batches."""
    start = time.perf_counter()
    for _ in DataLoader(dataset, batch_size=batch_size, num_workers=0):
        pass
    return time.perf_counter() - start


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def profile_loading(
    root: str | Path,
    task: str,
    domains: Sequence[str] | None = None,
    cache: str = "memory",
    cache_dir: str | Path | None = None,
    transforms: str = "eval",
    batch_size: int = 8,
    limit: int | None = None,
    preprocess: dict | None = None,
) -> dict:
    """Time a cold epoch and a cached epoch, and size the cache.

    Args:
        root: data root.
        task: ``"fundus"`` or ``"cardiac"``.
        domains: domains to load (default all).
        cache: ``"memory"`` or ``"disk"`` (fundus); cardiac slices are always held in memory and
            ``"disk"`` also caches the preprocessed volumes.
        cache_dir: folder of the disk cache (default: a temporary folder, removed afterwards); a
            second run with the same folder times loading from the existing cache.
        transforms: ``"eval"`` (deterministic only) or ``"train"`` (with augmentation); cardiac
            always uses slice augmentation in the cached epoch.
        batch_size: ``DataLoader`` batch size.
        limit: use only the first ``limit`` items (quick checks).
        preprocess: options of ``preprocessing``.

    Returns:
        The measured numbers (seconds, bytes, counts) and the settings.
    """
    items = build_datalist(root, task)
    if domains:
        items = [it for it in items if it["domain"] in set(domains)]
    items = items[:limit] if limit else items
    if not items:
        raise ValueError(f"no items for domains {domains} under {root}")
    preprocess = preprocess or {}
    temporary = cache == "disk" and cache_dir is None
    folder = Path(tempfile.mkdtemp(prefix="emclip-cache-")) if temporary else Path(cache_dir) if cache_dir else None
    result: dict = {"task": task, "items": len(items), "cache": cache, "transforms": transforms,
                    "batch_size": batch_size, "torch_threads": torch.get_num_threads()}
    if folder is not None and cache == "disk":
        # a second run with the same --cache-dir measures loading from the disk cache
        result["disk_cache_reused"] = folder.is_dir() and any(folder.iterdir())
    rss_before = _rss_bytes()
    try:
        if task == "cardiac":
            start = time.perf_counter()
            dataset = make_slice_dataset(
                items,
                preprocessing(task, **preprocess),
                augmentation(task) + normalization(task),
                cache_dir=folder if cache == "disk" else None,
            )
            result["cold_s"] = time.perf_counter() - start
            result["slices"] = len(dataset)
        else:
            chain = training_transforms if transforms == "train" else evaluation_transforms
            start = time.perf_counter()
            dataset = make_dataset(items, chain(task, preprocess=preprocess), cache=cache, cache_dir=folder)
            result["cold_s"] = time.perf_counter() - start
        result["cached_epoch_s"] = _epoch(dataset, batch_size)
        if cache == "memory" or task == "cardiac":
            result["cache_tensor_bytes"] = cache_nbytes(dataset)
        result["rss_increase_bytes"] = _rss_bytes() - rss_before
        if folder is not None and cache == "disk":
            result["disk_cache_bytes"] = _folder_bytes(folder)
    finally:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
    return result


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line entry point; prints and returns the measurements."""
    parser = argparse.ArgumentParser(prog="python -m emclip.data.profile_loading", description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=("fundus", "cardiac"))
    parser.add_argument("--root", required=True)
    parser.add_argument("--domains", nargs="+", default=None)
    parser.add_argument("--cache", default="memory", choices=("memory", "disk"))
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--transforms", default="eval", choices=("eval", "train"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--spatial-size", type=int, default=None, help="preprocessing spatial_size")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    preprocess = {} if args.spatial_size is None else {"spatial_size": args.spatial_size}
    result = profile_loading(
        args.root, args.task, args.domains, args.cache, args.cache_dir, args.transforms, args.batch_size, args.limit, preprocess
    )
    for key, value in result.items():
        shown = f"{value / 2**20:.1f} MiB" if key.endswith("bytes") else f"{value:.2f}" if isinstance(value, float) else value
        print(f"{key:<20} {shown}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
