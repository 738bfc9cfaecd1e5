"""Where a training step and an inference of EM-CLIP spend their time, and what the speed-ups
tried for the CPU change (memory layout, bfloat16, inference mode, data-loading workers).

    python -m emclip.benchmarks.profile --output-dir bundle/docs/benchmarks [--data-root ../shared/data/fundus]

Writes to ``--output-dir``:

- ``profile_ops.csv``: the operators with the most self CPU time in one training step and in one
  inference (``torch.profiler``), channels-last, ``--size`` px, training batch ``--batch``.
- ``profile_variants.csv``: median time of a training step (contiguous / channels-last /
  channels-last + bfloat16 autocast) and of an inference (``torch.no_grad`` /
  ``torch.inference_mode``, each layout), with the ratio to the first row of its phase.
- ``profile_loading.csv`` (with ``--data-root``): the bundle's own training data loader (task
  overlay, augmentation, disk cache) for ``num_workers`` 0 and 2: median wait for a batch and
  median step on those batches, and the share of the wait (stall) in the total.
- ``profile_epochs.csv`` (with ``--data-root``): the same training dataset and loader with the
  memory and the disk cache: a cold epoch (the cache filled), a cached epoch, and the cache's size.

The loading parts read ``train.yaml`` + the task overlay (``--task``: a name in ``bundle/configs``
or an overlay's path) and its metadata, so they measure what the bundle trains with.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.profiler import ProfilerActivity, profile

from emclip.benchmarks.speed import inference_step, median_seconds, training_loss, training_step
from emclip.benchmarks.report import write_csv
from emclip.configs import load_config
from emclip.data import cache_nbytes
from emclip.networks import EMCLIP

__all__ = ["profile_ops", "time_variants", "time_loading", "time_epochs"]


def _model(backbone: str, channels_last: bool) -> torch.nn.Module:
    net = EMCLIP(3, backbone=backbone)
    return net.to(memory_format=torch.channels_last) if channels_last else net


def _layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def profile_ops(backbone: str, size: int, batch: int, top: int = 15) -> list[dict[str, Any]]:
    """Top operators by self CPU time of one training step and one inference (channels-last)."""
    rows = []
    net = _model(backbone, True)
    phases: dict[str, Callable[[], None]] = {
        "train": training_step(net, _layout(torch.randn(batch, 3, size, size), True), training_loss("emclip", batch, size)),
    }
    phases["inference"] = inference_step(net, _layout(torch.randn(1, 3, size, size), True))
    for phase, step in phases.items():
        step()  # warm-up: oneDNN kernel selection, optimizer state
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        for e in events[:top]:
            rows.append({"phase": phase, "op": e.key, "calls": e.count, "self_ms": round(e.self_cpu_time_total / 1e3, 2),
                         "share": round(e.self_cpu_time_total / total, 3)})
    return rows


def _autocast_step(step: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            step()

    return run


def time_variants(backbone: str, size: int, batch: int, min_run_time: float) -> list[dict[str, Any]]:
    """Median ms per step of each variant; ``ratio`` to the first variant of the phase."""
    variants: list[tuple[str, str, Callable[[], Callable[[], None]]]] = []
    for cl in (False, True):
        layout = "channels-last" if cl else "contiguous"
        x = _layout(torch.randn(batch, 3, size, size), cl)
        loss = training_loss("emclip", batch, size)
        variants.append(("train", f"{layout} fp32", lambda cl=cl, x=x, loss=loss: training_step(_model(backbone, cl), x, loss)))
    x = _layout(torch.randn(batch, 3, size, size), True)
    variants.append(("train", "channels-last bf16 autocast",
                     lambda: _autocast_step(training_step(_model(backbone, True), x, training_loss("emclip", batch, size)))))
    for cl in (False, True):
        layout = "channels-last" if cl else "contiguous"
        x1 = _layout(torch.randn(1, 3, size, size), cl)
        variants.append(("inference", f"{layout} no_grad", lambda cl=cl, x1=x1: inference_step(_model(backbone, cl), x1, torch.no_grad)))
        variants.append(("inference", f"{layout} inference_mode", lambda cl=cl, x1=x1: inference_step(_model(backbone, cl), x1)))
    rows, first = [], {}
    for phase, name, make in variants:
        seconds, samples = median_seconds(make(), min_run_time)
        first.setdefault(phase, seconds)
        rows.append({"phase": phase, "variant": name, "backbone": backbone, "size": size,
                     "batch": batch if phase == "train" else 1, "ms": round(seconds * 1e3, 2),
                     "ratio": round(seconds / first[phase], 3), "samples": samples})
        print(rows[-1], flush=True)
    return rows


def _train_parser(task: str | Path, data_root: Path, domain: str, overrides: dict[str, Any]) -> Any:
    """The bundle's training config of ``task`` on one domain of ``data_root``, all of it for training."""
    return load_config(task, ("train",), {"dataset_dir": str(data_root), "train_domains": [domain], "val_fraction": 0.0,
                                          "device": "cpu", **overrides})


def time_loading(task: str | Path, data_root: Path, domain: str, batches: int, cache_dir: Path,
                 overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Wait per batch of the bundle's training loader and step time on those batches, per worker count.

    ``overrides`` are config overrides on top (e.g. a smaller ``spatial_size`` in a test).
    """
    rows = []
    for workers in (0, 2):
        parser = _train_parser(task, data_root, domain, {"cache": "disk", "num_workers": workers,
                                                         "train#dataset#cache_dir": str(cache_dir), **(overrides or {})})
        loader = parser.get_parsed_content("train#dataloader")
        net, loss_fn = parser.get_parsed_content("network"), parser.get_parsed_content("loss")
        optimizer = torch.optim.AdamW(net.parameters())
        net.train()
        waits, steps = [], []
        it = iter(loader)
        next(it)  # the first batch pays for the cache and the worker start
        for _ in range(batches):
            start = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                it = iter(loader)
                batch = next(it)
            waits.append(time.perf_counter() - start)
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss_fn(net(batch["image"]), batch["label"]).backward()
            optimizer.step()
            steps.append(time.perf_counter() - start)
        wait, step = statistics.median(waits), statistics.median(steps)
        rows.append({"task": str(task), "domain": domain, "num_workers": workers, "batches": batches,
                     "wait_ms": round(wait * 1e3, 1), "step_ms": round(step * 1e3, 1), "stall": round(wait / (wait + step), 3)})
        print(rows[-1], flush=True)
    return rows


def _epoch_seconds(loader: Any) -> float:
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def time_epochs(task: str | Path, data_root: Path, domain: str, cache_dir: Path,
                overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A cold and a cached epoch of the bundle's training loader (one process), memory and disk cache.

    The cold epoch includes building the dataset (the memory cache is filled then, the disk cache
    during the epoch); ``cache_dir`` is emptied first so that it is cold. ``memory_cache_bytes``
    are the tensors held in memory (:func:`emclip.data.cache_nbytes`), ``disk_cache_bytes`` the
    files written.
    """
    rows = []
    for cache in ("memory", "disk"):
        shutil.rmtree(cache_dir, ignore_errors=True)
        parser = _train_parser(task, data_root, domain, {"cache": cache, "num_workers": 0,
                                                         "train#dataset#cache_dir": str(cache_dir), **(overrides or {})})
        start = time.perf_counter()
        dataset = parser.get_parsed_content("train#dataset")
        cold = time.perf_counter() - start + _epoch_seconds(parser.get_parsed_content("train#dataloader"))
        cached = _epoch_seconds(parser.get_parsed_content("train#dataloader"))
        disk = sum(p.stat().st_size for p in cache_dir.rglob("*") if p.is_file()) if cache_dir.is_dir() else 0
        rows.append({"task": str(task), "domain": domain, "cache": cache, "items": len(dataset),
                     "cold_epoch_s": round(cold, 3), "cached_epoch_s": round(cached, 3),
                     "memory_cache_bytes": cache_nbytes(dataset), "disk_cache_bytes": disk})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="cpu-resnet")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--min-run-time", type=float, default=3.0, help="seconds of timing per variant")
    parser.add_argument("--data-root", type=Path, help="a task's data root, for the data-loading part")
    parser.add_argument("--task", default="fundus", help="task overlay for the data-loading parts: a name in bundle/configs or a path")
    parser.add_argument("--domain", default="REFUGE", help="training domain for the data-loading part")
    parser.add_argument("--batches", type=int, default=20, help="batches timed per worker count")
    parser.add_argument("--cache-dir", type=Path, default=Path("benchmark_runs/profile_cache"))
    parser.add_argument("--output-dir", type=Path, default=Path("profile"))
    args = parser.parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_csv(profile_ops(args.backbone, args.size, args.batch), args.output_dir / "profile_ops.csv")
    write_csv(time_variants(args.backbone, args.size, args.batch, args.min_run_time), args.output_dir / "profile_variants.csv")
    if args.data_root is not None:
        rows = time_loading(args.task, args.data_root, args.domain, args.batches, args.cache_dir)
        write_csv(rows, args.output_dir / "profile_loading.csv")
        rows = time_epochs(args.task, args.data_root, args.domain, args.cache_dir / "epochs")
        write_csv(rows, args.output_dir / "profile_epochs.csv")


if __name__ == "__main__":
    main()
