"""Pixel decoders: a text-guided FPN and its plain counterpart (the text-guidance ablation)."""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["TextCrossAttention", "PixelDecoder"]


def _script_interface(cls: type) -> type:
    """``torch.jit.interface`` without its deprecation warning at every import of this module."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.interface(cls)


@_script_interface
class _FeatureBlock(nn.Module):
    """What the per-level convolution blocks compute; lets TorchScript index them by a variable."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - nn.Sequential's name
        pass


@_script_interface
class _TextBlock(nn.Module):
    """What :class:`TextCrossAttention` computes; lets TorchScript index the blocks by a variable."""

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        pass


def _conv_norm_act(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
        nn.GroupNorm(min(32, out_ch // 4) or 1, out_ch),
        nn.ReLU(inplace=True),
    )


class TextCrossAttention(nn.Module):
    """Pixels (queries) attend to the class text embeddings (keys and values); residual.

    Args:
        channels: pixel feature channels.
        text_dim: text embedding size.
        heads: attention heads.
    """

    def __init__(self, channels: int, text_dim: int, heads: int = 4):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.text_proj = nn.Linear(text_dim, channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.gamma = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.norm(x.flatten(2).transpose(1, 2))
        kv = self.text_proj(text).unsqueeze(0).expand(b, -1, -1)
        out, _ = self.attn(q, kv, kv, need_weights=False)
        # gamma starts at zero so the guidance is learned in gradually.
        return x + (out * self.gamma).transpose(1, 2).reshape(b, c, h, w)


class PixelDecoder(nn.Module):
    """FPN over the feature levels (strides 4-32, optionally preceded by finer ones) with per-class
    logits at the finest level.

    With text guidance, the coarsest level also receives the joint-space embedding and the
    pixel-text score map (DenseCLIP), the pixels of every level at stride 4 or coarser cross-attend
    to the class text embeddings, and the logits are cosine similarities between pixel embeddings
    and class queries made from the class text embeddings (the idea of the Textual Query-Driven
    Mask Transformer, Pak et al., ECCV 2024). Without it, the same FPN ends in a 1x1 conv. Levels
    finer than stride 4 (``fine_levels`` of them, first in ``level_channels``) carry detail for
    thin structures: they are fused top-down like the others but are ``fine_channels`` wide and
    skip the cross-attention, whose cost grows with the pixel count while the text it adds is
    already in the coarser levels.

    Args:
        level_channels: channels of the input levels, finest first (the last is the coarsest).
        channels: decoder width at strides 4 and coarser.
        num_classes: output classes.
        text_dim: text (joint) embedding size.
        text_guided: enable the text guidance described above.
        heads: cross-attention heads.
        temperature: temperature of the cosine logits.
        fine_levels: how many leading levels are finer than stride 4 (0, 1 or 2).
        fine_channels: decoder width of those levels.
        dropout: probability of channel dropout on the finest decoder features, before the
            logits; active in training mode only (Monte Carlo dropout runs the network so).
    """

    __constants__ = ["text_guided"]  # TorchScript compiles only the branch in use

    def __init__(
        self,
        level_channels: Sequence[int],
        channels: int,
        num_classes: int,
        text_dim: int,
        text_guided: bool = True,
        heads: int = 4,
        temperature: float = 0.07,
        fine_levels: int = 0,
        fine_channels: int = 32,
        dropout: float = 0.0,
    ):
        super().__init__()
        if not 0 <= fine_levels <= len(level_channels) - 1:
            raise ValueError(f"fine_levels must be in 0..{len(level_channels) - 1}, got {fine_levels}")
        self.text_guided = text_guided
        self.temperature = temperature
        self.fine_levels = fine_levels
        widths = [fine_channels] * fine_levels + [channels] * (len(level_channels) - fine_levels)
        extra = [0] * (len(level_channels) - 1) + [text_dim + num_classes if text_guided else 0]
        self.lateral = nn.ModuleList(_conv_norm_act(c + e, w, 1) for c, e, w in zip(level_channels, extra, widths))
        self.smooth = nn.ModuleList(_conv_norm_act(w, w, 3) for w in widths)
        # top-down path from level i + 1 to level i: a 1x1 projection where the width changes
        self.narrow = nn.ModuleList(
            nn.Identity() if widths[i] == widths[i + 1] else nn.Conv2d(widths[i + 1], widths[i], 1)
            for i in range(len(widths) - 1)
        )
        out_width = widths[0]
        if text_guided:
            self.cross = nn.ModuleList(
                TextCrossAttention(channels, text_dim, heads) for _ in range(len(level_channels) - fine_levels)
            )
            # the head is as wide as the finest level: a wider one would cost most at full resolution
            self.pixel_embed = nn.Conv2d(out_width, out_width, 1)
            self.class_query = nn.Linear(text_dim, out_width)
            self.class_bias = nn.Parameter(torch.zeros(num_classes))
        else:
            self.classifier = nn.Conv2d(out_width, num_classes, 1)
        self.dropout = nn.Dropout2d(dropout)  # no weights: checkpoints are the same for any value

    def _refine(self, i: int, feat: torch.Tensor, text: torch.Tensor, top_down: torch.Tensor | None = None) -> torch.Tensor:
        lateral: _FeatureBlock = self.lateral[i]
        smooth: _FeatureBlock = self.smooth[i]
        x = lateral.forward(feat)
        if top_down is not None:
            narrow: _FeatureBlock = self.narrow[i]
            x = x + narrow.forward(F.interpolate(top_down, size=feat.shape[-2:], mode="bilinear", align_corners=False))
        x = smooth.forward(x)
        if self.text_guided and i >= self.fine_levels:
            cross: _TextBlock = self.cross[i - self.fine_levels]
            x = cross.forward(x, text)
        return x

    def forward(self, levels: list[torch.Tensor], text: torch.Tensor, semantic: torch.Tensor | None) -> torch.Tensor:
        """Logits at the finest level's stride. ``semantic`` is the embedding and score map (text-guided only)."""
        top = levels[-1]
        if self.text_guided and semantic is not None:
            semantic = F.interpolate(semantic, size=top.shape[-2:], mode="bilinear", align_corners=False)
            top = torch.cat([top, semantic], dim=1)
        x = self._refine(len(levels) - 1, top, text)
        for i in range(len(levels) - 2, -1, -1):
            x = self._refine(i, levels[i], text, x)
        x = self.dropout(x)
        if not self.text_guided:
            return self.classifier(x)
        pixels = F.normalize(self.pixel_embed(x), dim=1)
        queries = F.normalize(self.class_query(text), dim=1)
        return torch.einsum("bchw,kc->bkhw", pixels, queries) / self.temperature + self.class_bias.view(1, -1, 1, 1)
