"""Style randomisation: global intensity non-linearity (GIN) built from random convolutions.

Each call draws a fresh shallow convolutional network with random kernels (1x1 or 3x3, random
weights and biases, leaky-ReLU between layers), passes the image through it, rescales the result to
the image's own intensity range, and blends it with the image by a random ``alpha``. Shapes and
anatomy are kept while texture, contrast and colour change, which is the domain shift the model
should ignore. With ``num_layers=1`` this is a plain random convolution. ``RandGINMixd`` blends
two such draws region by region, and ``RandLocationScaled`` changes the intensity of each labelled
region on its own. The transforms work on any number of spatial dimensions and never change labels.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import convert_to_dst_type

__all__ = ["RandGIN", "RandGINd", "RandGINMixd", "RandLocationScaled"]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class RandGIN(RandomizableTransform):
    """Random global intensity non-linearity of one channel-first image.

    Args:
        prob: probability of applying the transform.
        num_layers: number of random convolution layers.
        hidden_channels: channels between layers; the output has the input's channel count.
        kernel_sizes: each layer's kernel size is drawn from these odd sizes.
        alpha_range: the blend weight of the randomised image is uniform in this range.
        negative_slope: slope of the leaky ReLU between layers.
    """

    def __init__(
        self,
        prob: float = 0.5,
        num_layers: int = 4,
        hidden_channels: int = 2,
        kernel_sizes: Sequence[int] = (1, 3),
        alpha_range: tuple[float, float] = (0.0, 1.0),
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__(prob)
        if num_layers < 1 or any(k % 2 == 0 for k in kernel_sizes):
            raise ValueError("RandGIN needs num_layers >= 1 and odd kernel sizes")
        self.num_layers = num_layers
        self.hidden_channels = hidden_channels
        self.kernel_sizes = tuple(kernel_sizes)
        self.alpha_range = alpha_range
        self.negative_slope = negative_slope
        self.layers: list[tuple[np.ndarray, np.ndarray]] = []
        self.alpha = 0.0

    def randomize(self, data: Any = None, in_channels: int = 1, spatial_dims: int = 2) -> None:
        """Draw whether to apply, the network weights for ``in_channels`` and ``alpha``."""
        super().randomize(None)
        if not self._do_transform:
            return
        self.layers = []
        channels = in_channels
        for i in range(self.num_layers):
            out = in_channels if i == self.num_layers - 1 else self.hidden_channels
            k = int(self.R.choice(self.kernel_sizes))
            fan_in = channels * k**spatial_dims
            # unit-variance output at init keeps the layers from collapsing or exploding
            weight = self.R.standard_normal((out, channels) + (k,) * spatial_dims) / np.sqrt(fan_in)
            self.layers.append((weight.astype(np.float32), self.R.standard_normal(out).astype(np.float32) * 0.1))
            channels = out
        self.alpha = float(self.R.uniform(*self.alpha_range))

    def __call__(self, img: Any, randomize: bool = True) -> Any:
        """Apply to ``img`` of shape ``(C, *spatial)``; ``randomize=False`` reuses the last draw."""
        if randomize:
            self.randomize(None, in_channels=img.shape[0], spatial_dims=img.ndim - 1)
        if not self._do_transform:
            return img
        x = torch.as_tensor(img).float()
        conv = _CONV[x.ndim - 1]
        y = x[None]
        for i, (weight, bias) in enumerate(self.layers):
            y = conv(y, torch.from_numpy(weight), torch.from_numpy(bias), padding="same")
            if i < len(self.layers) - 1:
                y = F.leaky_relu(y, self.negative_slope)
        y = y[0]
        low, high = x.min(), x.max()
        y = (y - y.min()) / (y.max() - y.min()).clamp_min(1e-8) * (high - low) + low
        out = self.alpha * y + (1.0 - self.alpha) * x
        return convert_to_dst_type(out, img)[0]


class _RandGINDraws(RandomizableTransform, MapTransform):
    """``draws`` independent ``RandGIN`` networks per call, shared by all ``keys``, on this transform's random state."""

    def __init__(self, keys: KeysCollection, prob: float, draws: int, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.gins = tuple(RandGIN(prob=1.0, **kwargs) for _ in range(draws))

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> _RandGINDraws:
        super().set_random_state(seed, state)
        for gin in self.gins:  # one stream: a seed gives the same networks and the same mask
            gin.set_random_state(state=self.R)
        return self

    def draw(self, img: Any) -> None:
        """New random networks for images shaped like ``img`` (channel first)."""
        for gin in self.gins:
            gin.randomize(None, in_channels=img.shape[0], spatial_dims=img.ndim - 1)


class RandGINd(_RandGINDraws):
    """Dictionary version of ``RandGIN``: one random network per call, shared by all ``keys``.

    Args:
        keys: image keys (never labels).
        prob: probability of applying the transform.
        kwargs: the options of ``RandGIN`` other than ``prob``.
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.5, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, prob, 1, allow_missing_keys, **kwargs)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandGINd:
        # the network's draws have a stream of their own, seeded alike (the draws of earlier runs)
        RandomizableTransform.set_random_state(self, seed, state)
        self.gins[0].set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        drawn = False
        for key in self.key_iterator(d):
            if not drawn:
                self.draw(d[key])
                drawn = True
            d[key] = self.gins[0](d[key], randomize=False)
        return d


def _smooth_field(rng: np.random.RandomState, spatial: Sequence[int], grid: int) -> torch.Tensor:
    """A random field in ``[0, 1]`` of shape ``spatial``: uniform noise on a coarse grid, upsampled."""
    coarse = torch.from_numpy(rng.uniform(0.0, 1.0, (1, 1) + (grid,) * len(spatial)).astype(np.float32))
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(spatial)]
    return F.interpolate(coarse, size=tuple(spatial), mode=mode, align_corners=True)[0, 0]


class RandGINMixd(_RandGINDraws):
    """Region-wise style mixing: two independent GIN draws blended by a smooth random spatial mask.

    One GIN network restyles the whole image the same way; mixing two by a mask that varies over
    the image gives neighbouring regions different appearances, so the network cannot rely on
    how one structure looks relative to another (the idea of the interventional pseudo-correlation
    augmentation of causality-inspired single-source DG, Ouyang et al., TMI 2022).

    Args:
        keys: image keys (never labels); one draw is shared by all keys.
        prob: probability of applying the transform.
        grid: the mask is uniform noise on a ``g``-point grid per axis, ``g`` uniform in this
            integer range, upsampled to the image (smaller ``g``: larger regions).
        kwargs: the options of ``RandGIN`` other than ``prob`` (both draws use them).
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.5,
        grid: Sequence[int] = (2, 6),
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, prob, 2, allow_missing_keys, **kwargs)
        if len(grid) != 2 or not 2 <= grid[0] <= grid[1]:
            raise ValueError(f"RandGINMixd grid must be a range (low, high) with 2 <= low <= high, got {grid}")
        self.grid = (int(grid[0]), int(grid[1]))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        mask: torch.Tensor | None = None
        for key in self.key_iterator(d):
            img = d[key]
            if mask is None:
                self.draw(img)
                grid = int(self.R.randint(self.grid[0], self.grid[1] + 1))
                mask = _smooth_field(self.R, img.shape[1:], grid)
            first, second = (torch.as_tensor(gin(img, randomize=False)).float() for gin in self.gins)
            d[key] = convert_to_dst_type(mask * first + (1.0 - mask) * second, img)[0]
        return d


class RandLocationScaled(RandomizableTransform, MapTransform):
    """Label-aware location-scale intensity augmentation with a random monotone intensity curve.

    Every class region of the label (background included) gets its own random intensity scale
    and shift per channel, so that the contrast between structures changes, not only the global
    look (the idea of class-level location-scale augmentation, SLAug, AAAI 2023). The class masks
    are blurred before mixing so that no sharp artificial edge marks a label boundary. Then a
    random monotone curve through ``curve_points`` control points remaps the whole image's
    intensities. The image must be in ``[0, 1]``; the result is clipped to it. Labels are read,
    never changed.

    Args:
        keys: image keys.
        label_key: the label map ``(1, *spatial)`` that defines the regions.
        prob: probability of applying the transform.
        scale: each region's scale is uniform in ``[1 - scale, 1 + scale]``.
        shift: each region's shift is uniform in ``[-shift, shift]``.
        sigma: Gaussian blur (pixels) of the class masks; 0 keeps them hard.
        curve_points: interior control points of the monotone curve; 0 switches it off.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = "label",
        prob: float = 0.5,
        scale: float = 0.3,
        shift: float = 0.15,
        sigma: float = 2.0,
        curve_points: int = 3,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if not 0 <= scale < 1 or shift < 0 or sigma < 0 or curve_points < 0:
            raise ValueError("RandLocationScaled needs 0 <= scale < 1, shift >= 0, sigma >= 0 and curve_points >= 0")
        self.label_key = label_key
        self.scale, self.shift, self.sigma, self.curve_points = scale, shift, sigma, curve_points

    def _soft_masks(self, label: torch.Tensor, classes: list[int]) -> torch.Tensor:
        """``(len(classes), *spatial)`` class masks, blurred and normalised to sum to one."""
        masks = torch.stack([(label[0] == c).float() for c in classes])
        if self.sigma > 0:
            radius = int(3 * self.sigma + 0.5)
            taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / self.sigma) ** 2)
            taps = taps / taps.sum()
            conv = _CONV[masks.ndim - 1]
            for axis in range(masks.ndim - 1):
                shape = [1, 1] + [1] * (masks.ndim - 1)
                shape[2 + axis] = taps.numel()
                masks = conv(masks[:, None], taps.view(shape), padding="same")[:, 0]
        return masks / masks.sum(dim=0, keepdim=True).clamp_min(1e-6)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        label = torch.as_tensor(d[self.label_key])
        classes = [int(c) for c in torch.unique(label).tolist()]
        masks = self._soft_masks(label, classes)
        for key in self.key_iterator(d):
            img = d[key]
            x = torch.as_tensor(img).float()
            shape = (len(classes), x.shape[0]) + (1,) * (x.ndim - 1)
            scale = torch.from_numpy(self.R.uniform(1 - self.scale, 1 + self.scale, shape).astype(np.float32))
            shift = torch.from_numpy(self.R.uniform(-self.shift, self.shift, shape).astype(np.float32))
            # per region: x * a_c + b_c, blended by the soft masks
            out = (masks[:, None] * (x[None] * scale + shift)).sum(dim=0).clamp(0.0, 1.0)
            if self.curve_points:
                knots_y = np.concatenate([[0.0], np.sort(self.R.uniform(0, 1, self.curve_points)), [1.0]])
                knots_x = np.linspace(0.0, 1.0, self.curve_points + 2)
                out = torch.from_numpy(np.interp(out.numpy(), knots_x, knots_y).astype(np.float32))
            d[key] = convert_to_dst_type(out, img)[0]
        return d
