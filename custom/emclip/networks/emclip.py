"""EM-CLIP: CLIP backbone + EM semantic aggregation + text-guided pixel decoder."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer

from emclip.networks.backbone import CLIPBackbone, build_clip
from emclip.networks.decoder import PixelDecoder
from emclip.networks.em import EMAggregation
from emclip.networks.presets import PRESETS
from emclip.networks.stem import DetailStem
from emclip.networks.text import ClassTextEmbeddings

__all__ = ["INPUT_NORMS", "EMCLIP", "standardize_images"]

INPUT_NORMS = ("none", "image")


def standardize_images(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each image minus its mean, over its standard deviation, both taken over all its channels and
    pixels: two numbers per image, so intensities keep their relations within the image (and the
    colours theirs), while a global gain or offset of the scanner no longer reaches the network."""
    flat = x.flatten(1)
    mean = flat.mean(dim=1).view(-1, 1, 1, 1)
    std = flat.std(dim=1).view(-1, 1, 1, 1)
    return (x - mean) / (std + eps)


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
        input_norm: ``none`` takes the input as the pipeline normalised it; ``image`` standardises
            each image by its own mean and standard deviation first (``standardize_images``), so
            the output does not change when a scanner renders the whole image brighter or darker
            (a ResNet tower's batch norms otherwise carry the training set's intensity level).
        prompts: prompt set name (``fundus``, ``cardiac``), JSON path, or dict (see ``load_prompts``).
        encode_text: encode the prompts at construction. ``False`` builds no tokenizer and leaves
            the text buffer to a checkpoint (inference, export).
        feature_indices: backbone blocks feeding the decoder (see ``CLIPBackbone``).
        vit_pyramid_widths: ViT only: channels of the levels at strides 4-32 as fractions of the
            transformer width (see ``CLIPBackbone``; ``(1, 1, 1, 1)``: the full-width pyramid).
        image_norm: ResNet towers only: ``batch`` (their own norms), or per-image norms with the
            same affine weights: ``instance``, ``group``, ``stem``, or ``ibn`` (IBN-Net-a's half
            instance norms in stages 1-3; see ``CLIPBackbone``).
        mixstyle: ResNet towers only: probability of MixStyle (feature styles mixed between the
            images of a batch) after stages 1 and 2 in training; 0: off. mixstyle_alpha: its Beta
            parameter. Neither changes the weights, so any value loads any checkpoint.
        freeze_image: keep the image tower fixed.
        freeze_text: keep the text tower fixed (default); it is then dropped after encoding.
        use_em: enable EM aggregation (``False``: the EM ablation).
        em_bases: K. em_iterations: T. em_temperature: tau. em_momentum: moving-average weight.
        em_init: ``text`` seeds the first bases with the class text embeddings (they share the
            joint space with the dense features), ``random`` as in EMANet.
        em_levels: pyramid levels (0-3: strides 4-32) whose backbone features get an EM block of
            their own (random bases) before the decoder, besides the one on the joint-space
            embedding; empty by default.
        text_guided: enable text guidance in the decoder (``False``: plain FPN, the text ablation).
        decoder_channels: decoder width. decoder_heads: cross-attention heads.
        score_temperature: temperature of the pixel-text score map.
        logit_temperature: temperature of the decoder's cosine logits.
        output_stride: stride of the decoder's finest level: 4 (the backbone's finest), 2 (adds
            the ResNet stem's stride-2 map, or a light conv stem's for a ViT) or 1 (adds a light
            conv stem's full-resolution map as well).
        stem_channels: width of the light conv stem. fine_channels: decoder width below stride 4.
        dropout: Monte Carlo dropout probability in the decoder (0: none; trained weights do not
            depend on it, so any value loads any checkpoint).
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str | dict[str, Any] = "cpu-resnet",
        pretrained: str | None = None,
        in_channels: int = 3,
        input_norm: str = "none",
        prompts: str | dict[str, Any] = "fundus",
        encode_text: bool = True,
        feature_indices: Sequence[int] | None = None,
        vit_pyramid_widths: Sequence[float] = (0.25, 0.5, 1.0, 1.0),
        image_norm: str = "batch",
        mixstyle: float = 0.0,
        mixstyle_alpha: float = 0.1,
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
        em_levels: Sequence[int] = (),
        output_stride: int = 4,
        stem_channels: int = 16,
        fine_channels: int = 32,
        dropout: float = 0.0,
    ):
        super().__init__()
        if em_init not in ("text", "random"):
            raise ValueError(f"em_init must be 'text' or 'random', got {em_init!r}")
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {', '.join(INPUT_NORMS)}; got {input_norm!r}")
        if output_stride not in (1, 2, 4):
            raise ValueError(f"output_stride must be 4, 2 or 1, got {output_stride!r}")
        if not set(em_levels) <= {0, 1, 2, 3}:
            raise ValueError(f"em_levels must be pyramid levels among 0-3 (strides 4-32), got {list(em_levels)}")
        clip = build_clip(backbone, pretrained)
        # a ModifiedResNet has its own stride-2 stem map; a ViT's comes from the light stem
        resnet_half = output_stride <= 2 and not isinstance(clip.visual, VisionTransformer)
        self.backbone = CLIPBackbone(
            clip.visual, feature_indices, freeze_image, resnet_half, vit_pyramid_widths, image_norm, mixstyle, mixstyle_alpha
        )
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
        self.standardize = input_norm == "image"
        if self.standardize:
            # no weights of its own, so without this marker a checkpoint trained with it would load
            # into a network without it (or the reverse) and predict from other inputs, silently
            self.register_buffer("input_standardized", torch.ones(()))
        seed = self.text.embeddings if em_init == "text" and encode_text else None
        self.em = (
            EMAggregation(embed_dim, em_bases, em_iterations, em_temperature, em_momentum, init_bases=seed)
            if use_em
            else nn.Identity()
        )
        self.level_em = nn.ModuleList(
            EMAggregation(c, em_bases, em_iterations, em_temperature, em_momentum) if i in em_levels else nn.Identity()
            for i, c in enumerate(self.backbone.level_channels)
        )
        stem_strides = [s for s in (1, 2) if s >= output_stride and not (s == 2 and resnet_half)]
        self.stem = DetailStem(3, stem_channels, stem_strides) if stem_strides else None
        fine = (self.stem.out_channels if self.stem is not None else []) + self.backbone.half_channels
        self.text_guided = text_guided
        self.score_temperature = score_temperature
        self.decoder = PixelDecoder(
            fine + self.backbone.level_channels,
            decoder_channels,
            num_classes,
            embed_dim,
            text_guided=text_guided,
            heads=decoder_heads,
            temperature=logit_temperature,
            fine_levels=len(fine),
            fine_channels=fine_channels,
            dropout=dropout,
        )

    def score_map(self, dense: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Pixel-text cosine similarity over a temperature, ``(B, num_classes, h, w)``."""
        return torch.einsum("bchw,kc->bkhw", F.normalize(dense, dim=1), F.normalize(text, dim=1)) / self.score_temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        size = x.shape[-2:]
        if self.standardize:
            x = standardize_images(x)
        rgb = x.expand(-1, 3, -1, -1) if self.in_channels == 1 else self.input_adapter(x)
        levels, dense = self.backbone(rgb)
        fine = len(levels) - 4
        aggregated = levels[:fine]
        for i, em in enumerate(self.level_em):  # TorchScript iterates a ModuleList, not a zip
            aggregated.append(em(levels[fine + i]))
        levels = aggregated
        if self.stem is not None:
            levels = self.stem(rgb) + levels
        text = self.text()
        dense = self.em(dense)
        score = self.score_map(dense, text) if self.text_guided else None
        semantic = torch.cat([dense, score], dim=1) if score is not None else None
        logits = F.interpolate(self.decoder(levels, text, semantic), size=size, mode="bilinear", align_corners=False)
        if self.training and score is not None and torch.is_grad_enabled():
            return {"pred": logits, "score_map": score}
        return logits
