"""GPU check of the pretrained-CLIP configuration (``bundle/configs/clip_vit_b16.yaml``).

    python -m emclip.benchmarks.gpu_check --output-dir gpu_check --data-root ../shared/data/fundus \\
        [--pretrained /path/to/ViT-B-16.pt]
    python -m emclip.benchmarks.gpu_check --device cpu --backbone cpu-vit --sizes 64 ...   # a CPU smoke run

Two parts, each written to a CSV in ``--output-dir``:

- ``gpu_check_speed.csv``: for each ``--sizes`` (default 224 and 512 px), EM-CLIP (the overlay's
  network) next to the bare open_clip image encoder built natively for the size, on the same input,
  with mixed precision (``--amp``, on with CUDA as in the bundle) and channels-last (the bundle's
  default): inference per image (``--infer-batch``), training step per image (``--train-batch``;
  forward, loss, backward, AdamW step with a gradient scaler), the peak GPU memory of each
  (``torch.cuda.max_memory_allocated``: weights, gradients, optimiser state and activations; empty
  on CPU) and the ratios EM-CLIP / encoder.
- ``gpu_check_training.csv``: a short real training through the bundle (train.yaml + fundus.yaml +
  clip_vit_b16.yaml on ``--domain`` of ``--data-root``), one row per epoch: mean training loss,
  training seconds (validation excluded), images per second, the source validation Dice and the
  peak GPU memory so far. ``--set KEY=VALUE`` overrides any other bundle key (YAML value).

Weights: ``--pretrained`` (an open_clip tag or a local file); without it the network is randomly
initialised (speed and memory do not depend on the weights' values; the loss curve does).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import yaml
from ignite.engine import Events

from emclip.benchmarks.speed import bare_encoder, median_seconds, training_loss
from emclip.benchmarks.report import write_csv
from emclip.configs import CONFIGS, meta_files, task_files
from emclip.networks import EMCLIP

__all__ = ["autocast", "run_speed", "run_training", "main"]

NUM_CLASSES = 3
CHANNELS_LAST = torch.channels_last


def autocast(device: torch.device, enabled: bool) -> Any:
    """Mixed precision as the bundle's trainer uses it: float16 on CUDA, bfloat16 on CPU."""
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype) if enabled else nullcontext()


def _synced(step: Callable[[], None], device: torch.device) -> Callable[[], None]:
    # CUDA runs asynchronously: a step is done when the device has finished it
    if device.type != "cuda":
        return step

    def run() -> None:
        step()
        torch.cuda.synchronize(device)

    return run


def _inference(model: torch.nn.Module, x: torch.Tensor, amp: bool) -> Callable[[], None]:
    model.eval()

    def step() -> None:
        with torch.inference_mode(), autocast(x.device, amp):
            model(x)

    return step


def _training(model: torch.nn.Module, x: torch.Tensor, loss: Callable[[Any], torch.Tensor], amp: bool) -> Callable[[], None]:
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    scaler = torch.amp.GradScaler(x.device.type, enabled=amp and x.device.type == "cuda")

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(x.device, amp):
            value = loss(model(x))
        scaler.scale(value).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def _peak_mib(device: torch.device) -> float | str:
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else ""


def _measure(
    model: torch.nn.Module, which: str, size: int, device: torch.device, args: argparse.Namespace
) -> dict[str, Any]:
    """Per-image inference and training ms and the peak memory of each, ``model`` on ``device``."""
    model.to(device, memory_format=CHANNELS_LAST)
    row: dict[str, Any] = {}
    for part, batch in (("infer", args.infer_batch), ("train", args.train_batch)):
        x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=CHANNELS_LAST)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        if part == "infer":
            step = _inference(model, x, args.amp)
        else:
            target = training_loss(which, batch, size, device)
            step = _training(model, x, target, args.amp)
        seconds, samples = median_seconds(_synced(step, device), args.min_run_time)
        row[f"{which}_{part}_ms"] = round(seconds / batch * 1e3, 3)
        row[f"{which}_{part}_peak_mib"] = _peak_mib(device)
        row[f"{which}_{part}_samples"] = samples
    model.to("cpu")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def _ratio(a: Any, b: Any) -> float | str:
    return round(a / b, 3) if isinstance(a, float) and isinstance(b, float) and b else ""


def run_speed(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """EM-CLIP against the bare encoder at each size: one row per size."""
    net = EMCLIP(NUM_CLASSES, backbone=args.backbone, em_bases=args.em_bases)
    rows = []
    for size in args.sizes:
        row: dict[str, Any] = {"backbone": args.backbone, "size": size, "infer_batch": args.infer_batch,
                               "train_batch": args.train_batch, "amp": args.amp, "device": _device_name(device)}
        row.update(_measure(net, "emclip", size, device, args))
        row.update(_measure(bare_encoder(args.backbone, size), "encoder", size, device, args))
        for part in ("infer", "train"):
            row[f"{part}_ratio"] = _ratio(row[f"emclip_{part}_ms"], row[f"encoder_{part}_ms"])
            row[f"{part}_memory_ratio"] = _ratio(row[f"emclip_{part}_peak_mib"], row[f"encoder_{part}_peak_mib"])
        print(row, flush=True)
        rows.append(row)
    return rows


def _loss_of(output: Any) -> float:
    output = output[0] if isinstance(output, list) else output
    return float(output["loss"])


def run_training(args: argparse.Namespace, device: torch.device, bundle_root: Path) -> list[dict[str, Any]]:
    """A short bundle training with the overlay; one row per epoch (loss, throughput, Dice, memory)."""
    from monai.bundle import ConfigWorkflow

    overrides: dict[str, Any] = {
        "bundle_root": str(bundle_root), "dataset_dir": str(args.data_root), "train_domains": [args.domain],
        "epochs": args.epochs, "warmup_epochs": args.warmup_epochs, "batch_size": args.train_batch,
        "spatial_size": [args.train_size] * 2, "backbone": args.backbone, "pretrained": args.pretrained,
        "device": f"$torch.device('{device}')", "amp": args.amp, "resume": False,
    }
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key] = yaml.safe_load(value)
    files = [str(f) for f in task_files(["train"], "fundus") + [CONFIGS / "clip_vit_b16.yaml"]]
    workflow = ConfigWorkflow(config_file=files, meta_file=[str(m) for m in meta_files("fundus")],
                              logging_file=str(CONFIGS / "logging.conf"), workflow_type="train", **overrides)
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    validator = workflow.parser.get_parsed_content("validate#evaluator")
    rows: list[dict[str, Any]] = []
    epoch: dict[str, Any] = {}

    def started(engine: Any) -> None:
        epoch.update(start=time.perf_counter(), end=time.perf_counter(), losses=[], images=0)

    def iteration(engine: Any) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epoch["end"] = time.perf_counter()
        epoch["losses"].append(_loss_of(engine.state.output))
        batch = engine.state.batch  # decollated into a list of items, or a dict of batched tensors
        epoch["images"] += len(batch) if isinstance(batch, list) else int(batch["image"].shape[0])

    def completed(engine: Any) -> None:  # after the validation handler: its metrics are this epoch's
        seconds = epoch["end"] - epoch["start"]
        row = {"epoch": engine.state.epoch, "loss": round(sum(epoch["losses"]) / len(epoch["losses"]), 4),
               "train_s": round(seconds, 2), "images": epoch["images"],
               "images_per_s": round(epoch["images"] / seconds, 2),
               "val_dice_mean": validator.state.metrics.get("dice_mean", "") if validator.state.metrics else "",
               "peak_mib": _peak_mib(device), "backbone": args.backbone, "size": args.train_size,
               "batch": args.train_batch, "amp": args.amp, "pretrained": args.pretrained or "random init",
               "device": _device_name(device)}
        print(row, flush=True)
        rows.append(row)

    trainer.add_event_handler(Events.EPOCH_STARTED, started)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, iteration)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, completed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    workflow.run()
    workflow.finalize()
    return rows


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()


def main(argv: Sequence[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="mixed precision (default: on with CUDA, as in the bundle)")
    parser.add_argument("--backbone", default="ViT-B-16")
    parser.add_argument("--pretrained", default=None, help="open_clip tag or local checkpoint; default random init")
    parser.add_argument("--parts", nargs="+", choices=["speed", "training"], default=["speed", "training"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[224, 512], help="multiples of the patch size")
    parser.add_argument("--infer-batch", type=int, default=1)
    parser.add_argument("--train-batch", type=int, default=8, help="also the batch of the real training")
    parser.add_argument("--em-bases", type=int, default=64, help="K of the speed part (the bundle's default)")
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds of timing per median")
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data/fundus"))
    parser.add_argument("--domain", default="REFUGE", help="source domain of the real training")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--train-size", type=int, default=224, help="input side of the real training")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="other bundle overrides")
    parser.add_argument("--output-dir", type=Path, default=Path("gpu_check"))
    parser.add_argument("--work-dir", type=Path, default=None, help="bundle_root of the training (default: a temp dir)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here; use --device cpu for a smoke run")
    if args.amp is None:
        args.amp = device.type == "cuda"
    print(f"# {_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}, amp {args.amp}, "
          f"{os.cpu_count()} cores", flush=True)
    results: dict[str, list[dict[str, Any]]] = {}
    if "speed" in args.parts:
        results["speed"] = run_speed(args, device)
        write_csv(results["speed"], args.output_dir / "gpu_check_speed.csv")
    if "training" in args.parts:
        with tempfile.TemporaryDirectory() as tmp:
            results["training"] = run_training(args, device, args.work_dir or Path(tmp))
        write_csv(results["training"], args.output_dir / "gpu_check_training.csv")
        losses = [row["loss"] for row in results["training"]]
        print(f"# loss {losses[0]} -> {losses[-1]} over {len(losses)} epochs: "
              f"{'falling' if losses[-1] < losses[0] else 'not falling'}", flush=True)
    for name in results:
        print(f"# wrote {args.output_dir / f'gpu_check_{name}.csv'}")
    return results


if __name__ == "__main__":
    main()
