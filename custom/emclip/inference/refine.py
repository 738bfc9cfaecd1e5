"""Structure-centred two-pass inference for 2D images of any size and field of view, such as the
optic disc in fundus photographs.

Pass 1 segments the whole input resized to the network's size and takes the structure, the
"disc" (by default every foreground class: in fundus the disc, rim and cup), as its largest
component. Pass 2 crops a square around it, sized so that it covers ``disc_fraction`` of the crop
(the share it has in the training crops), segments the crop at the network's size and pastes the
probabilities back into the input's geometry; outside the crop the prediction is background.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from emclip.inference.postprocess import largest_component

__all__ = ["DiscRefiner", "disc_fraction", "measure_disc_fraction"]

logger = logging.getLogger("emclip.inference")


def _structure(label: np.ndarray, disc_labels: Sequence[int] | None) -> np.ndarray:
    """The structure's mask in a label map: ``disc_labels``, or every foreground class."""
    label = np.asarray(label)
    return label > 0 if disc_labels is None else np.isin(label, list(disc_labels))


def disc_fraction(label: np.ndarray, disc_labels: Sequence[int] | None = None) -> float:
    """Share of the pixels of a label map that are the structure (fundus: disc, rim and cup).

    Args:
        label: label map.
        disc_labels: the structure's label values; ``None``: every foreground class.
    """
    return float(_structure(label, disc_labels).mean())


def measure_disc_fraction(labels: Iterable[str | Sequence[str]], mask_format: str = "auto", disc_labels: Sequence[int] | None = None) -> float:
    """Median structure fraction of 2D mask files, e.g. of the source training split.

    Args:
        labels: mask paths (or ``[disc, cup]`` path pairs), as in a datalist's ``label``.
        mask_format: their encoding (see ``emclip.data.read_fundus_label``).
        disc_labels: the structure's label values; ``None``: every foreground class.

    Raises:
        ValueError: no mask, or no mask with a disc.
    """
    from emclip.data import read_fundus_label

    values = [disc_fraction(read_fundus_label(path, mask_format), disc_labels) for path in labels]
    values = [v for v in values if v > 0]
    if not values:
        raise ValueError("measure_disc_fraction: no label with a disc among the given masks")
    return float(np.median(values))


def _resize(x: torch.Tensor, size: Sequence[int], antialias: bool) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=antialias)


class DiscRefiner:
    """The two passes for one batch of 2D inputs ``(B, C, H, W)``; label 0 is background.

    Args:
        spatial_size: the network's input size (the training size), for both passes.
        disc_fraction: share of the crop the disc should cover; use the training labels' typical
            value (:func:`measure_disc_fraction`).
        min_disc_pixels: fewer first-pass disc pixels (at ``spatial_size``) count as no disc found.
        disc_labels: label values of the structure the crop is centred on; ``None``: every
            foreground class (fundus: the disc, rim and cup).

    Attributes:
        missed: names of the inputs in which pass 1 found no disc (their pass-1 prediction is kept
            and a warning names them).
    """

    def __init__(self, spatial_size: Sequence[int], disc_fraction: float = 0.29, min_disc_pixels: int = 16,
                 disc_labels: Sequence[int] | None = None):
        if not 0 < disc_fraction < 1:
            raise ValueError(f"refine#disc_fraction must be in (0, 1), got {disc_fraction}")
        self.spatial_size = tuple(int(s) for s in spatial_size)
        self.disc_fraction = float(disc_fraction)
        self.min_disc_pixels = int(min_disc_pixels)
        self.disc_labels = None if disc_labels is None else [int(v) for v in disc_labels]
        self.missed: list[str] = []

    def first_pass_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input of pass 1: ``x`` resized to ``spatial_size`` (anti-aliased)."""
        return _resize(x, self.spatial_size, antialias=True)

    def window(self, disc: np.ndarray, shape: Sequence[int]) -> tuple[int, int, int] | None:
        """Square crop ``(top, left, side)`` in input pixels around a first-pass disc mask.

        The crop is centred on the disc's centroid and shifted to lie inside the input when it
        fits; a larger crop stays centred and is padded. ``None`` when the disc is too small.

        Args:
            disc: boolean disc mask on the first-pass grid.
            shape: the input's spatial shape.
        """
        if disc.sum() < self.min_disc_pixels:
            return None
        scale = [s / g for s, g in zip(shape, disc.shape)]
        area = disc.sum() * scale[0] * scale[1]
        side = max(2, round(math.sqrt(area / self.disc_fraction)))
        centre = [(c + 0.5) * s for c, s in zip(np.argwhere(disc).mean(0), scale)]
        corner = []
        for c, n in zip(centre, shape):
            start = round(c - side / 2)
            corner.append(min(max(start, 0), n - side) if side <= n else start)
        return corner[0], corner[1], side

    def __call__(self, x: torch.Tensor, predict: Callable[[torch.Tensor], torch.Tensor], names: Sequence[str] | None = None) -> torch.Tensor:
        """Class probabilities ``(B, K, H, W)`` in the input's geometry.

        Args:
            x: inputs ``(B, C, H, W)`` at their own resolution.
            predict: maps a ``(1, C, *spatial_size)`` input to probabilities ``(1, K, *spatial_size)``.
            names: input names for the no-disc message (default: the batch index).
        """
        outputs = []
        for b in range(x.shape[0]):
            item = x[b : b + 1]
            shape = tuple(item.shape[-2:])
            first = predict(self.first_pass_input(item))
            disc = largest_component(_structure(first[0].argmax(0).cpu().numpy(), self.disc_labels))
            box = self.window(disc, shape)
            if box is None:
                name = names[b] if names else f"item {b}"
                self.missed.append(name)
                logger.warning("refine: no optic disc found in %s; its first-pass prediction is kept", name)
                outputs.append(_resize(first, shape, antialias=False))
                continue
            top, left, side = box
            # the canvas is the image's per-channel median: a background colour, not a black border
            fill = item.flatten(2).median(-1).values[..., None, None]
            crop = fill.expand(1, item.shape[1], side, side).clone()
            src = [(max(o, 0), min(o + side, n)) for o, n in zip((top, left), shape)]
            dst = [(a - o, b - o) for (a, b), o in zip(src, (top, left))]
            crop[..., dst[0][0] : dst[0][1], dst[1][0] : dst[1][1]] = item[..., src[0][0] : src[0][1], src[1][0] : src[1][1]]
            second = _resize(predict(_resize(crop, self.spatial_size, antialias=True)), (side, side), antialias=False)
            out = torch.zeros((1, second.shape[1], *shape), dtype=second.dtype, device=second.device)
            out[:, 0] = 1.0
            out[..., src[0][0] : src[0][1], src[1][0] : src[1][1]] = second[..., dst[0][0] : dst[0][1], dst[1][0] : dst[1][1]]
            outputs.append(out)
        return torch.cat(outputs)
