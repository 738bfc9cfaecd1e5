"""End-to-end demo on an embedded default: builds both CPU presets for both tasks, runs them on
a synthetic image and prints output shapes and forward times.

    python -m emclip.demo
"""

from __future__ import annotations

import time

import torch

from emclip.networks import EMCLIP


def main() -> None:
    for backbone in ("cpu-resnet", "cpu-vit"):
        for task, classes, channels, size in (("fundus", 3, 3, 256), ("cardiac", 4, 1, 192)):
            start = time.perf_counter()
            net = EMCLIP(classes, backbone=backbone, prompts=task, in_channels=channels).eval()
            built = time.perf_counter() - start
            x = torch.rand(1, channels, size, size)
            with torch.inference_mode():
                net(x)
                start = time.perf_counter()
                out = net(x)
                ran = time.perf_counter() - start
            print(f"{backbone:10s} {task:8s} input {tuple(x.shape)} -> logits {tuple(out.shape)}; "
                  f"build {built:.2f} s, forward {ran * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
