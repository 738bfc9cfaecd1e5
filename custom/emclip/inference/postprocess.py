"""Anatomy-aware post-processing of predicted label maps, as task-free building blocks.

A task overlay lists its steps in the ``postprocess`` dict, each one switched off by default with
``_disabled_: true`` (``emclip.inference.choose_postprocessing`` chooses them); the label values
and the slice axis are the steps' arguments. The largest component is MONAI's
``KeepLargestConnectedComponentd``; the two steps here are what it and ``FillHolesd`` do not do:

* :class:`FillLabelHolesd`: the holes of a structure made of several labels (a disc of rim and
  cup), or of each 2D slice of a volume (a hole of the LV cavity is open in 3D at the basal and
  apical slices);
* :class:`KeepLargestInsided`: one structure's largest component inside another's largest
  component (the cup in the disc); its other pixels take the outer structure's label;
* :class:`KeepNearLabeld`: a structure only within a distance of another, slice by slice (the
  myocardium, a wall a few millimetres thick around the LV cavity); its farther pixels become
  background.

Label maps are channel-first with one channel, ``(1, *spatial)``, numpy or torch (the result has
the input's type and metadata). Components are connected through faces, edges and corners.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type, convert_to_numpy
from scipy import ndimage

__all__ = ["FillLabelHolesd", "KeepLargestInsided", "KeepNearLabeld", "fill_holes", "largest_component"]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a boolean mask (an all-False mask stays empty).

    Args:
        mask: boolean array of any rank; neighbours share a face, an edge or a corner.
    """
    labels, count = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, bool))
    if count <= 1:
        return mask.astype(bool, copy=True)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == int(np.argmax(sizes)) + 1


def fill_holes(mask: np.ndarray, slice_axis: int | None = None) -> np.ndarray:
    """Fill the holes of a boolean mask, in the whole array or in each slice along ``slice_axis``.

    Args:
        mask: boolean array.
        slice_axis: fill each 2D slice along this axis separately; ``None``: the whole array.
    """
    if slice_axis is None:
        return ndimage.binary_fill_holes(mask)
    moved = np.moveaxis(mask, slice_axis, -1)
    filled = np.stack([ndimage.binary_fill_holes(moved[..., k]) for k in range(moved.shape[-1])], axis=-1)
    return np.moveaxis(filled, -1, slice_axis)


def _structures(labels: Sequence[int | Sequence[int]]) -> list[list[int]]:
    """Each structure as a non-empty list of label values (a bare value is a one-label structure)."""
    out = [[int(s)] if np.isscalar(s) else [int(v) for v in s] for s in labels]
    if not out or not all(out):
        raise ValueError(f"labels: expected label values or lists of them, got {labels!r}")
    return out


def _label_map(img: NdarrayOrTensor) -> np.ndarray:
    """The integer label map of a one-channel image ``(1, *spatial)``."""
    arr = convert_to_numpy(img)
    if arr.ndim < 3 or arr.shape[0] != 1:
        raise ValueError(f"post-processing needs a label map with one channel first, (1, *spatial), got {arr.shape}")
    return np.rint(arr[0]).astype(np.int64)


class FillLabelHolesd(MapTransform):
    """Fill the holes of structures of a label map, in order; a hole takes its structure's first label.

    A structure is a set of label values; its holes are the pixels of other values (background
    or another label) that it encloses. Fundus ``labels: [[1, 2], [2]]``: holes of the disc (rim
    and cup) become rim, then holes of the cup become cup.

    Args:
        keys: label-map keys, ``(1, *spatial)``.
        labels: the structures: each a label value or a list of them.
        slice_dim: fill each 2D slice along this spatial axis (0 = first) separately, as in a
            stack of short-axis slices; ``None``: holes enclosed in the whole array.
    """

    def __init__(self, keys: KeysCollection, labels: Sequence[int | Sequence[int]], slice_dim: int | None = None,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.labels = _structures(labels)
        self.slice_dim = slice_dim

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = _label_map(d[key])
            for structure in self.labels:
                inside = np.isin(label, structure)
                label[fill_holes(inside, self.slice_dim) & ~inside] = structure[0]
            d[key] = convert_to_dst_type(label[None], d[key], dtype=d[key].dtype)[0]
        return d


class KeepLargestInsided(MapTransform):
    """Keep the inner structure's largest component inside the outer structure's largest component.

    Inner pixels outside that component take ``fill`` (fundus: stray cup pixels become rim, so
    they stay disc); every other pixel is unchanged.

    Args:
        keys: label-map keys, ``(1, *spatial)``.
        inner: label value(s) of the inner structure (fundus: the cup, ``[2]``).
        outer: label value(s) of the outer structure (fundus: the disc, ``[1, 2]``).
        fill: value of the removed inner pixels; ``None``: the first outer label not in ``inner``.
    """

    def __init__(self, keys: KeysCollection, inner: int | Sequence[int], outer: int | Sequence[int], fill: int | None = None,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        (self.inner,), (self.outer,) = _structures([inner]), _structures([outer])
        if fill is None:
            rest = [v for v in self.outer if v not in self.inner]
            if not rest:
                raise ValueError(f"KeepLargestInsided: outer {self.outer} has no label outside inner {self.inner}; give fill")
            fill = rest[0]
        self.fill = int(fill)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = _label_map(d[key])
            inner = np.isin(label, self.inner)
            kept = largest_component(inner & largest_component(np.isin(label, self.outer)))
            label[inner & ~kept] = self.fill
            d[key] = convert_to_dst_type(label[None], d[key], dtype=d[key].dtype)[0]
        return d


class KeepNearLabeld(MapTransform):
    """Keep a structure's pixels within ``max_distance`` millimetres of an anchor structure, in
    each slice; the farther ones take ``fill``.

    A model that has learnt a structure by its grey level can label tissue of that grey level
    elsewhere as it (a model trained on one MRI vendor marks dark tissue beside the heart of
    another vendor as myocardium). The myocardium is a wall around the LV cavity, so its pixels
    lie within a wall's thickness of it. A slice without the anchor is left as it is: the apical
    slices of end-systole can show myocardium around a cavity too small to label.

    Args:
        keys: label-map keys, ``(1, *spatial)``; a MetaTensor's affine gives the voxel size, any
            other array is taken at 1 mm.
        labels: label value(s) of the structure (cardiac: the myocardium, ``[2]``).
        anchor: label value(s) of the anchor (cardiac: the LV cavity, ``[1]``).
        max_distance: millimetres from the anchor's nearest pixel, in the slice's plane.
        slice_dim: slices along this spatial axis (0 = first); ``None``: the whole array at once.
        fill: value of the removed pixels (background).
    """

    def __init__(self, keys: KeysCollection, labels: int | Sequence[int], anchor: int | Sequence[int], max_distance: float,
                 slice_dim: int | None = None, fill: int = 0, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        (self.labels,), (self.anchor,) = _structures([labels]), _structures([anchor])
        if max_distance <= 0:
            raise ValueError(f"KeepNearLabeld: max_distance must be > 0 millimetres, got {max_distance}")
        self.max_distance, self.slice_dim, self.fill = float(max_distance), slice_dim, int(fill)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = _label_map(d[key])
            pixdim = getattr(d[key], "pixdim", None)
            spacing = np.ones(label.ndim) if pixdim is None else np.asarray(convert_to_numpy(pixdim), float)[: label.ndim]
            if self.slice_dim is None:
                slices, plane = label[..., None], spacing
            else:
                slices, plane = np.moveaxis(label, self.slice_dim, -1), np.delete(spacing, self.slice_dim)
            for k in range(slices.shape[-1]):
                view = slices[..., k]  # a view: writes reach ``label``
                anchor = np.isin(view, self.anchor)
                if not anchor.any():
                    continue
                far = ndimage.distance_transform_edt(~anchor, sampling=plane) > self.max_distance
                view[np.isin(view, self.labels) & far] = self.fill
            d[key] = convert_to_dst_type(label[None], d[key], dtype=d[key].dtype)[0]
        return d
