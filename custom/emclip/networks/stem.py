"""A light convolutional stem that gives the decoder detail finer than the backbone's stride 4."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

__all__ = ["DetailStem"]


def _conv_gn_relu(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(min(8, out_ch // 4) or 1, out_ch),
        nn.ReLU(inplace=True),
    )


class DetailStem(nn.Module):
    """Two small 3x3 convolutions on the input image: a stride-1 map, then a stride-2 map.

    CLIP towers start by downsampling (a ViT by its patch size, the ResNet stem by 4), so edges of
    thin structures (the myocardium, the cup rim) are gone before the first feature level. These
    maps restore them for the decoder's finest levels; they are new weights, not part of CLIP.

    Args:
        in_channels: image channels.
        channels: width of both maps.
        strides: which maps to return, a subset of ``(1, 2)``; the stride-2 map is computed from
            the stride-1 one, so asking for 2 alone still runs both convolutions.
    """

    def __init__(self, in_channels: int = 3, channels: int = 16, strides: Sequence[int] = (1,)):
        super().__init__()
        if not strides or not set(strides) <= {1, 2}:
            raise ValueError(f"DetailStem strides must be a non-empty subset of (1, 2), got {list(strides)}")
        self.keep_full = 1 in strides
        self.conv_full = _conv_gn_relu(in_channels, channels, 1)
        self.conv_half = _conv_gn_relu(channels, channels, 2) if 2 in strides else nn.Identity()
        self.keep_half = 2 in strides
        self.out_channels = [channels] * len(set(strides))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The requested maps, finest first."""
        full = self.conv_full(x)
        out: list[torch.Tensor] = [full] if self.keep_full else []
        if self.keep_half:
            out.append(self.conv_half(full))
        return out
