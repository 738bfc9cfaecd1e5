"""End-to-end demo on the embedded synthetic default: write a multi-domain data set, train on one
domain, evaluate on the unseen ones and run inference, through the bundle's own commands.

    python -m emclip.demo [--task both|fundus|cardiac] [--epochs 20] [--output demo]

Each step is the ``python -m monai.bundle`` command a user would run; the demo prints it first.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

from emclip.data import build_datalist, write_synthetic

CONFIGS = Path(__file__).resolve().parents[2] / "bundle" / "configs"
# train domain and meta files per task; the synthetic set names its domains like the real data
TASKS = {
    "fundus": ("SynthA", ["metadata.json"]),
    "cardiac": ("A", ["metadata.json", "metadata_cardiac.json"]),
}


def _list(items: list[str]) -> str:
    return "[" + ",".join(f"'{i}'" for i in items) + "]"


def bundle_command(workflow: str, configs: list[str], task: str, **overrides: object) -> list[str]:
    """``python -m monai.bundle run <workflow>`` with the task overlay and the overrides."""
    files = [str(CONFIGS / f"{c}.yaml") for c in configs + [task]]
    meta = [str(CONFIGS / m) for m in TASKS[task][1]]
    cmd = [sys.executable, "-m", "monai.bundle", "run", workflow, "--meta_file", _list(meta),
           "--config_file", _list(files), "--logging_file", str(CONFIGS / "logging.conf")]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    return cmd


def step(title: str, cmd: list[str]) -> None:
    print(f"\n== {title}\n$ {shlex.join(cmd)}", flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"== {title}: done in {time.perf_counter() - start:.0f} s", flush=True)


def run_task(task: str, root: Path, epochs: int) -> None:
    domain = TASKS[task][0]
    common = {"bundle_root": root / "bundle", "dataset_dir": root / "data" / task, "train_domains": _list([domain])}
    # a small batch gives the dozen synthetic training images several steps per epoch
    step(f"{task}: train on {domain}", bundle_command("training", ["train"], task, epochs=epochs, batch_size=4, **common))
    step(f"{task}: evaluate on the unseen domains", bundle_command("evaluating", ["train", "evaluate"], task, **common))
    target = next(it["image"] for it in build_datalist(root / "data" / task, task) if it["domain"] != domain)
    step(f"{task}: inference on {Path(target).name}",
         bundle_command("inferring", ["inference"], task, bundle_root=root / "bundle", input_dir=target))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["both", *TASKS], default="both")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--output", type=Path, default=Path("demo"))
    args = parser.parse_args()
    root = args.output.resolve()
    tasks = list(TASKS) if args.task == "both" else [args.task]
    start = time.perf_counter()
    for task in tasks:
        write_synthetic(root / "data", task, seed=0)
    for task in tasks:
        run_task(task, root, args.epochs)
    print(f"\nDemo finished in {time.perf_counter() - start:.0f} s. Results under {root}:")
    for task in tasks:
        print(f"  {task}: checkpoints  {root / 'bundle' / 'models' / task}")
        print(f"  {task}: metrics      {root / 'bundle' / 'eval' / task / 'metrics_summary.md'} (+ per-case CSV, plots/, overlays/)")
        print(f"  {task}: predictions  {root / 'bundle' / 'predictions' / task}")
        print(f"  {task}: TensorBoard  {root / 'bundle' / 'runs' / task / 'tensorboard'}")


if __name__ == "__main__":
    main()
