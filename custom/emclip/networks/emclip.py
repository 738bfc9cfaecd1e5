"""EM-CLIP: CLIP backbone + EM semantic aggregation + text-guided pixel decoder."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from emclip.networks.backbone import CLIPBackbone, build_clip
from emclip.networks.decoder import PixelDecoder
from emclip.networks.em import EMAggregation
from emclip.networks.presets import PRESETS
from emclip.networks.text import ClassTextEmbeddings

__all__ = ["EMCLIP"]


class EMCLIP(nn.Module):
    """Vision-language segmentation network (arXiv:2509.08570, as far as its abstract describes it).

    ``forward(x)`` returns per-class logits ``(B, num_classes, H, W)``. In training mode with text
    guidance and autograd on it returns ``{"pred": logits, "score_map": s}`` instead, where ``s``
    is the pixel-text score map at the backbone's coarsest stride, for the auxiliary loss
    (:class:`emclip.losses.EMCLIPLoss` accepts both forms). Training mode under ``no_grad`` returns
    the logits: that is how MONAI Label's epistemic scoring runs a bundle (Monte Carlo dropout).

    Args:
        num_classes: output classes, background included; equals the number of prompt sets.
        backbone: preset name (``cpu-resnet``, ``cpu-vit``), open_clip model name, or config dict.
        pretrained: ``None``, an open_clip tag, or a local open_clip checkpoint path.
        in_channels: input channels; 1 is repeated to RGB, 3 is used as is, others get a 1x1 conv.
        prompts: prompt set name (``fundus``, ``cardiac``), JSON path, or dict (see ``load_prompts``).
        encode_text: encode the prompts at construction. ``False`` builds no tokenizer and leaves
            the text buffer to a checkpoint (inference, export).
        feature_indices: backbone blocks feeding the decoder (see ``CLIPBackbone``).
        freeze_image: keep the image tower fixed.
        freeze_text: keep the text tower fixed (default); it is then dropped after encoding.
        use_em: enable EM aggregation (``False``: the EM ablation).
        em_bases: K. em_iterations: T. em_temperature: tau. em_momentum: moving-average weight.
        em_init: ``text`` seeds the first bases with the class text embeddings (they share the
            joint space with the dense features), ``random`` as in EMANet.
        text_guided: enable text guidance in the decoder (``False``: plain FPN, the text ablation).
        decoder_channels: decoder width. decoder_heads: cross-attention heads.
        score_temperature: temperature of the pixel-text score map.
        logit_temperature: temperature of the decoder's cosine logits.
        dropout: Monte Carlo dropout probability in the decoder (0: none; trained weights do not
            depend on it, so any value loads any checkpoint).
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str | dict[str, Any] = "cpu-resnet",
        pretrained: str | None = None,
        in_channels: int = 3,
        prompts: str | dict[str, Any] = "fundus",
        encode_text: bool = True,
        feature_indices: Sequence[int] | None = None,
        freeze_image: bool = False,
        freeze_text: bool = True,
        use_em: bool = True,
        em_bases: int = 64,
        em_iterations: int = 3,
        em_temperature: float = 1.0,
        em_momentum: float = 0.9,
        em_init: str = "text",
        text_guided: bool = True,
        decoder_channels: int = 64,
        decoder_heads: int = 4,
        score_temperature: float = 0.07,
        logit_temperature: float = 0.07,
        dropout: float = 0.0,
    ):
        super().__init__()
        if em_init not in ("text", "random"):
            raise ValueError(f"em_init must be 'text' or 'random', got {em_init!r}")
        clip = build_clip(backbone, pretrained)
        self.backbone = CLIPBackbone(clip.visual, feature_indices, freeze=freeze_image)
        clip.visual = None  # the text tower alone may be kept below
        clip.logit_scale.requires_grad_(False)
        embed_dim = self.backbone.embed_dim
        tokenizer = backbone if isinstance(backbone, str) and backbone not in PRESETS else ""
        self.text = ClassTextEmbeddings(
            num_classes, embed_dim, clip if encode_text else None, prompts, tokenizer, trainable=not freeze_text
        )
        self.input_adapter = (
            nn.Identity() if in_channels in (1, 3) else nn.Conv2d(in_channels, 3, kernel_size=1)
        )
        self.in_channels = in_channels
        seed = self.text.embeddings if em_init == "text" and encode_text else None
        self.em = (
            EMAggregation(embed_dim, em_bases, em_iterations, em_temperature, em_momentum, init_bases=seed)
            if use_em
            else nn.Identity()
        )
        self.text_guided = text_guided
        self.score_temperature = score_temperature
        self.decoder = PixelDecoder(
            self.backbone.level_channels,
            decoder_channels,
            num_classes,
            embed_dim,
            text_guided=text_guided,
            heads=decoder_heads,
            temperature=logit_temperature,
            dropout=dropout,
        )

    def score_map(self, dense: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Pixel-text cosine similarity over a temperature, ``(B, num_classes, h, w)``."""
        return torch.einsum("bchw,kc->bkhw", F.normalize(dense, dim=1), F.normalize(text, dim=1)) / self.score_temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        size = x.shape[-2:]
        rgb = x.expand(-1, 3, -1, -1) if self.in_channels == 1 else self.input_adapter(x)
        levels, dense = self.backbone(rgb)
        text = self.text()
        dense = self.em(dense)
        score = self.score_map(dense, text) if self.text_guided else None
        semantic = torch.cat([dense, score], dim=1) if score is not None else None
        logits = F.interpolate(self.decoder(levels, text, semantic), size=size, mode="bilinear", align_corners=False)
        if self.training and score is not None and torch.is_grad_enabled():
            return {"pred": logits, "score_map": score}
        return logits
