"""Style randomisation: global intensity non-linearity (GIN) built from random convolutions.

Each call draws a fresh shallow convolutional network with random kernels (1x1 or 3x3, random
weights and biases, leaky-ReLU between layers), passes the image through it, rescales the result to
the image's own intensity range, and blends it with the image by a random ``alpha``. Shapes and
anatomy are kept while texture, contrast and colour change, which is the domain shift the model
should ignore. With ``num_layers=1`` this is a plain random convolution. The transforms work on any
number of spatial dimensions (2D or 3D convolutions) and never touch labels.
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

__all__ = ["RandGIN", "RandGINd"]

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


class RandGINd(RandomizableTransform, MapTransform):
    """Dictionary version of ``RandGIN``: one random network per call, shared by all ``keys``.

    Args:
        keys: image keys (never labels).
        prob: probability of applying the transform.
        kwargs: the options of ``RandGIN`` other than ``prob``.
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.5, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.gin = RandGIN(prob=1.0, **kwargs)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandGINd:
        super().set_random_state(seed, state)
        self.gin.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        drawn = False
        for key in self.key_iterator(d):
            if not drawn:
                self.gin.randomize(None, in_channels=d[key].shape[0], spatial_dims=d[key].ndim - 1)
                drawn = True
            d[key] = self.gin(d[key], randomize=False)
        return d
