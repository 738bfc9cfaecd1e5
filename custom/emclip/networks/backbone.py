"""CLIP image encoder as a dense, multi-level feature extractor."""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import open_clip
import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer

from emclip.networks.presets import get_preset

__all__ = ["IMAGE_NORMS", "InstanceBatchNorm", "MixStyle", "build_clip", "CLIPBackbone"]

logger = logging.getLogger("emclip.networks")


def build_clip(backbone: str | dict[str, Any], pretrained: str | None = None) -> nn.Module:
    """Build an open_clip CLIP model from a name or a config dict, optionally with weights.

    Args:
        backbone: an EM-CLIP preset name (``cpu-resnet``, ``cpu-vit``), any open_clip model name
            (``ViT-B-16``, ``RN50``, ...), or a config dict in open_clip's format
            (``embed_dim``, ``vision_cfg``, ``text_cfg``).
        pretrained: ``None`` (random init), an open_clip tag (``openai``, ``laion2b_s34b_b88k``...),
            or the path of a local checkpoint in open_clip's state_dict format.
    """
    config = get_preset(backbone) if isinstance(backbone, str) else dict(backbone)
    if config is None:
        if backbone not in open_clip.list_models():
            raise ValueError(
                f"unknown backbone {backbone!r}: not an EM-CLIP preset (cpu-resnet, cpu-vit) nor an "
                f"open_clip model; open_clip models: {', '.join(open_clip.list_models())}"
            )
        tags = open_clip.list_pretrained_tags_by_model(backbone)
        if pretrained is not None and pretrained not in tags and not os.path.isfile(pretrained):
            raise FileNotFoundError(
                f"pretrained={pretrained!r} is neither a local checkpoint file nor an open_clip tag of "
                f"{backbone!r} (tags: {', '.join(tags) or 'none'})"
            )
        try:
            return open_clip.create_model(backbone, pretrained=pretrained)
        except RuntimeError as err:
            if pretrained is not None and os.path.isfile(pretrained):
                raise RuntimeError(f"could not load the checkpoint pretrained={pretrained!r} into {backbone!r}: {err}") from err
            raise RuntimeError(
                f"could not download the open_clip weights pretrained={pretrained!r} of {backbone!r} ({err}). "
                "Without internet, pass the local path of an open_clip checkpoint as `pretrained` (download it "
                "where there is internet, e.g. open_clip.create_model(name, pretrained=tag) caches it under "
                "~/.cache/huggingface); HF_HUB_OFFLINE=1 makes an offline run stop here at once instead of "
                "retrying the download."
            ) from err
    model = open_clip.CLIP(**config)
    if pretrained is not None:
        if not os.path.isfile(pretrained):
            raise FileNotFoundError(
                f"pretrained={pretrained!r} is not a file; a config-dict backbone takes only a local "
                "checkpoint path (open_clip tags name weights of named models)"
            )
        open_clip.load_checkpoint(model, pretrained)
    return model


def _resize_grid_embedding(embedding: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize a ``(1 + g*g, C)`` positional embedding (prefix token first) to ``grid``."""
    prefix, tokens = embedding[:1], embedding[1:]
    side = int(tokens.shape[0] ** 0.5)
    if (side, side) == tuple(grid):
        return embedding
    tokens = tokens.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    tokens = F.interpolate(tokens, size=grid, mode="bicubic", align_corners=False)
    return torch.cat([prefix, tokens.flatten(2).squeeze(0).transpose(0, 1)], dim=0)


def _default_indices(depth: int) -> list[int]:
    """Four evenly spaced transformer blocks, the last one included."""
    return [max(0, depth * (i + 1) // 4 - 1) for i in range(4)]


def _intermediates_without_fastpath(vit: VisionTransformer, tokens: torch.Tensor, indices: list[int]):
    """The transformer's last tokens and the tokens after blocks ``indices``, eager mode.

    Under no_grad nn.MultiheadAttention takes a fused kernel that has no ONNX op; exporters (ours
    and MONAI's onnx_export) need the plain path, so it is switched off while exporting.
    """
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(fastpath and not torch.onnx.is_in_onnx_export())
    try:
        return vit.transformer.forward_intermediates(tokens, indices=indices)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


IMAGE_NORMS = ("batch", "instance", "group", "stem", "ibn")


class InstanceBatchNorm(nn.Module):
    """IBN-Net's mixed norm (Pan et al., ECCV 2018): instance norm on the first ``ratio`` of the
    channels, batch norm on the rest. The per-image half removes the image's contrast (the
    scanner's style) where it enters the shallow features; the batch half keeps the content
    statistics that a full instance norm loses on small training sets.

    Args:
        num_features: channels.
        ratio: fraction of the channels with instance norm (IBN-Net: 0.5).
    """

    def __init__(self, num_features: int, ratio: float = 0.5):
        super().__init__()
        if not 0 < ratio < 1:
            raise ValueError(f"InstanceBatchNorm ratio must be in (0, 1), got {ratio}")
        self.split = max(1, min(num_features - 1, int(num_features * ratio)))
        self.instance = nn.InstanceNorm2d(self.split, affine=True)
        self.batch = nn.BatchNorm2d(num_features - self.split)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, rest = torch.split(x, [self.split, x.shape[1] - self.split], dim=1)
        return torch.cat([self.instance(first.contiguous()), self.batch(rest.contiguous())], dim=1)


class MixStyle(nn.Module):
    """MixStyle (Zhou et al., ICLR 2021): in training, with probability ``p`` per batch, every
    image's channel-wise feature means and standard deviations (its style, in shallow layers) are
    replaced by a random convex mix of its own and another image's of the batch, so the network
    sees new styles of the same anatomy. No weights, and the identity in eval mode.

    Args:
        p: probability of mixing a batch (0: never).
        alpha: the mixing weights are drawn from Beta(alpha, alpha) (MixStyle: 0.1).
        eps: added to the variance.
    """

    def __init__(self, p: float = 0.5, alpha: float = 0.1, eps: float = 1e-6):
        super().__init__()
        if not 0 <= p <= 1 or alpha <= 0:
            raise ValueError(f"MixStyle needs 0 <= p <= 1 and alpha > 0, got p={p}, alpha={alpha}")
        self.p, self.alpha, self.eps = p, alpha, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if not self.training or b < 2 or float(torch.rand(1)) >= self.p:
            return x
        # the statistics are detached, as in MixStyle: the style is resampled, not learned through
        mu = x.mean(dim=(2, 3), keepdim=True).detach()
        sigma = (x.var(dim=(2, 3), keepdim=True) + self.eps).sqrt().detach()
        # Beta(a, a) as a ratio of two Gamma(a) draws (torch.distributions is not scriptable)
        shape = torch.full((b, 1, 1, 1), self.alpha, dtype=x.dtype, device=x.device)
        g1, g2 = torch._standard_gamma(shape), torch._standard_gamma(shape)
        lam = g1 / (g1 + g2).clamp_min(1e-12)
        # a random cyclic shift, not MixStyle's permutation: with batches of 4 a permutation leaves
        # one image in four unmixed on average, a shift none
        shift = torch.randint(1, b, (1,), device=x.device)
        other = (torch.arange(b, device=x.device) + shift) % b
        mixed_mu = lam * mu + (1 - lam) * mu[other]
        mixed_sigma = lam * sigma + (1 - lam) * sigma[other]
        return (x - mu) / sigma * mixed_sigma + mixed_mu


def _instance_batch_norm(bn: nn.BatchNorm2d) -> InstanceBatchNorm:
    """An ``InstanceBatchNorm`` carrying ``bn``'s (possibly pretrained) affine weights and, in its
    batch half, its running statistics."""
    norm = InstanceBatchNorm(bn.num_features)
    s = norm.split
    with torch.no_grad():
        norm.instance.weight.copy_(bn.weight[:s])
        norm.instance.bias.copy_(bn.bias[:s])
        norm.batch.weight.copy_(bn.weight[s:])
        norm.batch.bias.copy_(bn.bias[s:])
        norm.batch.running_mean.copy_(bn.running_mean[s:])
        norm.batch.running_var.copy_(bn.running_var[s:])
    return norm


def _per_image_norm(bn: nn.BatchNorm2d, kind: str) -> nn.Module:
    """An affine per-image norm carrying ``bn``'s (possibly pretrained) scale and shift."""
    c = bn.num_features
    if kind == "group":  # the decoder's grouping: statistics stay stable on 8x8 maps
        norm: nn.Module = nn.GroupNorm(min(32, c // 4) or 1, c, eps=bn.eps)
    else:
        norm = nn.InstanceNorm2d(c, eps=bn.eps, affine=True)
    with torch.no_grad():  # before any freezing: freeze=True reaches the new norms too
        norm.weight.copy_(bn.weight)
        norm.bias.copy_(bn.bias)
    return norm


def _swap_batch_norms(module: nn.Module, kind: str) -> None:
    """Replace every ``BatchNorm2d`` below ``module`` by a per-image norm of ``kind``: each image
    is then normalised by its own statistics, not by the training set's running ones."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, _per_image_norm(child, kind))
        else:
            _swap_batch_norms(child, kind)


def _project(in_channels: int, out_channels: int) -> nn.Module:
    """A 1x1 projection where a pyramid level is narrower than the transformer, else nothing."""
    return nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)


class CLIPBackbone(nn.Module):
    """Dense features of a CLIP image tower.

    Returns four feature maps at strides 4, 8, 16 and 32 and the final dense embedding projected
    into CLIP's joint image-text space (ViT: ``ln_post`` and ``proj`` applied to every patch token;
    ModifiedResNet: the attention pool's value and output projections applied to every position,
    as DenseCLIP does), so pixels can be compared with text embeddings.

    Args:
        visual: ``clip.visual`` of an open_clip model (``VisionTransformer`` or ``ModifiedResNet``).
        feature_indices: the blocks that feed the four levels; ViT: transformer block indices
            (default: four evenly spaced blocks), ModifiedResNet: stages 1-4 (default).
        freeze: keep the image tower's weights fixed (the pyramid adapters still train).
        half_resolution: ModifiedResNet only: also return the stem's stride-2 map (before its
            average pool) as a first, finer level; its channels are ``half_channels``.
        vit_pyramid_widths: ViT only: channels of the rebuilt levels at strides 4, 8, 16 and 32 as
            fractions of the transformer width. The default narrows the upsampled levels as
            ViTDet's simple pyramid does: at full width (``(1, 1, 1, 1)``) their transposed
            convolutions cost a quarter of the FLOPs of a ViT-B/16's transformer, narrowed 6%.
        image_norm: ModifiedResNet only: ``batch`` keeps its batch norms; the others swap them
            for per-image norms with the same affine weights, so a feature map is normalised by
            the image's own statistics instead of the training set's running ones (what MONAI's
            U-Net does; a ViT's layer norms already work per token): ``instance`` everywhere,
            ``group`` group norms everywhere (per image, but pooled over channel groups, so the
            stride-32 maps keep enough samples), ``stem`` instance norms in the three stem
            convolutions only, where the scanner's contrast enters, batch norms after; ``ibn``
            IBN-Net-a: the first norm of every block of stages 1-3 becomes an
            ``InstanceBatchNorm`` (half its channels per image), the stem and stage 4 keep batch
            norms.
        mixstyle: ModifiedResNet only: ``MixStyle`` probability after stages 1 and 2 in training
            (0: off).
        mixstyle_alpha: ``MixStyle``'s Beta parameter.
    """

    # constants, so that TorchScript compiles only the branch of this tower
    __constants__ = ["is_vit", "patch", "half_resolution"]

    def __init__(
        self,
        visual: nn.Module,
        feature_indices: Sequence[int] | None = None,
        freeze: bool = False,
        half_resolution: bool = False,
        vit_pyramid_widths: Sequence[float] = (0.25, 0.5, 1.0, 1.0),
        image_norm: str = "batch",
        mixstyle: float = 0.0,
        mixstyle_alpha: float = 0.1,
    ):
        super().__init__()
        self.mixstyle = MixStyle(mixstyle, mixstyle_alpha)
        if image_norm not in IMAGE_NORMS:
            raise ValueError(f"image_norm must be one of {', '.join(IMAGE_NORMS)}; got {image_norm!r}")
        self.visual = visual
        self.half_resolution = half_resolution
        self.half_channels: list[int] = []
        if isinstance(visual, VisionTransformer):
            self.is_vit = True
            self.patch = int(visual.patch_size[0])
            width = int(visual.conv1.out_channels)
            self.indices = list(feature_indices or _default_indices(len(visual.transformer.resblocks)))
            if len(vit_pyramid_widths) != 4 or not all(0 < f <= 1 for f in vit_pyramid_widths):
                raise ValueError(f"vit_pyramid_widths needs four fractions in (0, 1], got {list(vit_pyramid_widths)}")
            w4, w8, w16, w32 = (max(1, round(width * f)) for f in vit_pyramid_widths)
            self.level_channels = [w4, w8, w16, w32]
            # A plain ViT has one stride (the patch); a simple pyramid rebuilds strides 4-32.
            self.pyramid = nn.ModuleList(
                [
                    nn.Sequential(
                        nn.ConvTranspose2d(width, min(width, 2 * w4), 2, 2),
                        nn.GELU(),
                        nn.ConvTranspose2d(min(width, 2 * w4), w4, 2, 2),
                    ),
                    nn.ConvTranspose2d(width, w8, 2, 2),
                    _project(width, w16),
                    nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), _project(width, w32)),
                ]
            )
            self.embed_dim = int(visual.proj.shape[1])
            if half_resolution:
                raise ValueError("half_resolution needs a ModifiedResNet: a ViT has no stride-2 features")
            if image_norm != "batch":
                raise ValueError(f"image_norm={image_norm!r} needs a ModifiedResNet: a ViT has layer norms only")
            if mixstyle:
                raise ValueError(f"mixstyle={mixstyle} needs a ModifiedResNet: a ViT has no convolutional stages to mix")
        elif isinstance(visual, ModifiedResNet):
            self.is_vit = False
            self.patch = 32
            stem_width = int(visual.conv3.out_channels)
            self.indices = list(feature_indices or [1, 2, 3, 4])
            # stem (index 0) keeps the stem width; stage i (1-4) has 4 * 2**(i-1) times it.
            self.level_channels = [stem_width * (2 ** (i + 1) if i else 1) for i in self.indices]
            self.pyramid = nn.ModuleList([nn.Identity() for _ in range(4)])
            self.embed_dim = int(visual.attnpool.c_proj.out_features)
            self.half_channels = [stem_width] if half_resolution else []
            # Only the pool's value path is used (see _resnet_forward): its query and key
            # projections would get no gradient, which DDP reports as unused parameters.
            for proj in (visual.attnpool.q_proj, visual.attnpool.k_proj):
                proj.requires_grad_(False)
            if image_norm == "stem":
                for name in ("bn1", "bn2", "bn3"):
                    setattr(visual, name, _per_image_norm(getattr(visual, name), "instance"))
            elif image_norm == "ibn":
                for stage in (visual.layer1, visual.layer2, visual.layer3):
                    for block in stage:
                        block.bn1 = _instance_batch_norm(block.bn1)
            elif image_norm != "batch":
                _swap_batch_norms(visual, image_norm)
        else:
            raise TypeError(f"unsupported image tower {type(visual).__name__}: use a ViT or ModifiedResNet CLIP")
        if len(self.indices) != 4:
            raise ValueError(f"feature_indices needs four blocks, got {self.indices}")
        if freeze:
            for p in self.visual.parameters():
                p.requires_grad_(False)

    def check_size(self, height: int, width: int) -> None:
        """Raise a ``ValueError`` naming the valid sizes if the input cannot be tokenised."""
        if height % self.patch or width % self.patch:
            p = self.patch
            near = [f"{max(p, v // p * p)} or {-(-v // p) * p}" for v in (height, width)]
            raise ValueError(
                f"input size {height}x{width} is not a multiple of {p} (the backbone's "
                f"{'patch size' if self.is_vit else 'total stride'}); nearest valid height {near[0]}, "
                f"width {near[1]} (e.g. 224, 256, 384, 512)"
            )

    def _vit_forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        vit = self.visual
        b, _, h, w = x.shape
        grid = (h // self.patch, w // self.patch)
        tokens = vit.conv1(x).flatten(2).transpose(1, 2)
        cls = vit.class_embedding.to(tokens.dtype).expand(b, 1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + _resize_grid_embedding(vit.positional_embedding, grid)
        tokens = vit.ln_pre(vit.patch_dropout(tokens))
        if torch.jit.is_scripting():  # a compile-time constant: the other branch is not compiled
            last, inter = vit.transformer.forward_intermediates(tokens, indices=self.indices)
        else:
            last, inter = _intermediates_without_fastpath(vit, tokens, self.indices)
        maps = [t[:, 1:].transpose(1, 2).reshape(b, -1, *grid) for t in inter]
        dense = vit.ln_post(last[:, 1:]) @ vit.proj
        return maps, dense.transpose(1, 2).reshape(b, -1, *grid)

    def _resnet_forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        rn = self.visual
        # The stem is run step by step to keep its stride-2 output before the average pool; the
        # stages are written out because TorchScript cannot loop over a tuple of modules.
        x = rn.act1(rn.bn1(rn.conv1(x)))
        x = rn.act2(rn.bn2(rn.conv2(x)))
        half = rn.act3(rn.bn3(rn.conv3(x)))
        stages = [rn.avgpool(half)]
        stages.append(self.mixstyle(rn.layer1(stages[-1])))
        stages.append(self.mixstyle(rn.layer2(stages[-1])))
        stages.append(rn.layer3(stages[-1]))
        stages.append(rn.layer4(stages[-1]))
        maps = [stages[i] for i in self.indices]
        top = maps[-1]
        b, _, gh, gw = top.shape
        pool = rn.attnpool
        # The attention pool's value path maps every position into the joint space; the
        # query-key part only serves the global token and is skipped.
        pos = _resize_grid_embedding(pool.positional_embedding, (gh, gw))[1:]
        tokens = top.flatten(2).transpose(1, 2) + pos.to(top.dtype)
        dense = pool.c_proj(pool.v_proj(tokens))
        if self.half_resolution:
            maps = [half] + maps
        return maps, dense.transpose(1, 2).reshape(b, -1, gh, gw)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Return ``(levels, dense)``: maps at strides 4-32 (preceded by the stride-2 stem map with
        ``half_resolution``) and the joint-space embedding."""
        self.check_size(int(x.shape[-2]), int(x.shape[-1]))
        if self.is_vit:  # a constant: TorchScript compiles only this tower's branch
            maps, dense = self._vit_forward(x)
        else:
            maps, dense = self._resnet_forward(x)
        fine = len(maps) - 4
        levels = maps[:fine]
        for i, adapt in enumerate(self.pyramid):  # TorchScript iterates a ModuleList, not a zip
            levels.append(adapt(maps[fine + i]))
        return levels, dense
