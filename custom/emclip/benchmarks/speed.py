"""Parameter counts and forward time of EM-CLIP presets next to the bare open_clip image encoder.

    python -m emclip.benchmarks.speed --sizes 224 512 --output speed.csv

Each row times EM-CLIP and the bare encoder (``clip.visual`` built for the same input size) on
the same input in the same run; the ratio is EM-CLIP / encoder. Times are medians of
``torch.utils.benchmark`` measurements, per image.
"""

from __future__ import annotations

import argparse
import copy
import csv
import platform
from typing import Any

import open_clip
import torch
import torch.utils.benchmark as tb

from emclip.networks import EMCLIP, get_preset

__all__ = ["bare_encoder", "time_forward", "count_parameters", "run"]


def bare_encoder(backbone: str, size: int) -> torch.nn.Module:
    """open_clip's image tower of ``backbone`` built natively for ``size`` x ``size`` inputs."""
    config = get_preset(backbone) or open_clip.get_model_config(backbone)
    config = copy.deepcopy(config)
    config["vision_cfg"]["image_size"] = size
    return open_clip.CLIP(**config).visual.eval()


def time_forward(net: torch.nn.Module, x: torch.Tensor, min_run_time: float = 2.0) -> float:
    """Median seconds of one inference forward of ``x``."""
    with torch.inference_mode():
        net(x)  # warm-up
        timer = tb.Timer(stmt="net(x)", globals={"net": net, "x": x}, num_threads=torch.get_num_threads())
        return timer.blocked_autorange(min_run_time=min_run_time).median


def count_parameters(net: torch.nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    params = list(net.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def run(backbones: list[str], sizes: list[int], batch: int = 1, min_run_time: float = 2.0) -> list[dict[str, Any]]:
    rows = []
    for backbone in backbones:
        net = EMCLIP(3, backbone=backbone).eval()
        total, trainable = count_parameters(net)
        for size in sizes:
            x = torch.randn(batch, 3, size, size)
            t_net = time_forward(net, x, min_run_time) / batch
            t_enc = time_forward(bare_encoder(backbone, size), x, min_run_time) / batch
            row = {
                "backbone": backbone,
                "size": size,
                "params_total": total,
                "params_trainable": trainable,
                "emclip_ms": round(t_net * 1e3, 2),
                "encoder_ms": round(t_enc * 1e3, 2),
                "ratio": round(t_net / t_enc, 3),
            }
            print(row, flush=True)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=["cpu-resnet", "cpu-vit", "ViT-B-16"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[224, 512])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds of timing per measurement")
    parser.add_argument("--output", default=None, help="CSV file for the rows")
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    rows = run(args.backbones, args.sizes, args.batch, args.min_run_time)
    if args.output:
        with open(args.output, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
