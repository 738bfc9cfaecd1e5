"""End-to-end demo on the embedded synthetic default: write a multi-domain data set, train on one
domain, evaluate on the unseen ones and run inference, through the bundle's own commands.

    python -m emclip.demo [--task both|fundus|cardiac] [--epochs 20] [--output demo]

Each step is the ``python -m monai.bundle`` command a user would run; the demo prints it first.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import time
from pathlib import Path

from emclip.configs import bundle_command, list_arg
from emclip.data import build_datalist, write_synthetic

# the source domain of each demo task; the synthetic set names its domains like the real data
DEMO_DOMAINS = {"fundus": "SynthA", "cardiac": "A"}


def step(title: str, cmd: list[str]) -> None:
    print(f"\n== {title}\n$ {shlex.join(cmd)}", flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"== {title}: done in {time.perf_counter() - start:.0f} s", flush=True)


def run_task(task: str, root: Path, epochs: int) -> None:
    domain = DEMO_DOMAINS[task]
    common = {"bundle_root": root / "bundle", "dataset_dir": root / "data" / task, "train_domains": list_arg([domain])}
    # a small batch gives the dozen synthetic training images several steps per epoch
    step(f"{task}: train on {domain}", bundle_command("training", ["train"], task, epochs=epochs, batch_size=4, **common))
    step(f"{task}: evaluate on the unseen domains", bundle_command("evaluating", ["train", "evaluate"], task, **common))
    target = next(it["image"] for it in build_datalist(root / "data" / task, task) if it["domain"] != domain)
    step(f"{task}: inference on {Path(target).name}",
         bundle_command("inferring", ["inference"], task, bundle_root=root / "bundle", input_dir=target))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["both", *DEMO_DOMAINS], default="both")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--output", type=Path, default=Path("demo"))
    args = parser.parse_args()
    root = args.output.resolve()
    tasks = list(DEMO_DOMAINS) if args.task == "both" else [args.task]
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
