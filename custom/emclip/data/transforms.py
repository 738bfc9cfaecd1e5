"""The bundle's own transforms; the task overlays (``bundle/configs/<task>.yaml``) assemble them.

Readers whose errors name the file (``ReadImaged``, ``LoadFundusLabeld``, ``SelectFramed``), input
checks (``CheckSameShaped``, ``CheckLabelsd``), the intensity landmark standardisation
(``StandardizeLandmarksd``, with ``histogram_landmarks`` for its reference), colour augmentation
(``RandHueSaturationd``), the scale-robustness zoom (``ZoomInPlaned``) and the two-view split of the consistency loss
(``RepeatViewsd``). The style randomisation (GIN, location-scale) is in ``style``. Which of them
run, in which order and with which options is each overlay's ``preprocess``, ``augment`` and
``normalization``, read in Python with :func:`emclip.data.task_transforms`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, LoadImage, MapTransform, RandomizableTransform, Transform, Zoomd
from monai.utils import convert_to_dst_type
from PIL import Image

from emclip.data.common import input_error
from emclip.data.fundus import read_fundus_label

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "CheckLabelsd",
    "CheckSameShaped",
    "ImageMode",
    "LoadFundusLabeld",
    "RandHueSaturationd",
    "ReadImaged",
    "RepeatViewsd",
    "SelectFramed",
    "StandardizeLandmarksd",
    "ZoomInPlaned",
    "LANDMARK_PERCENTILES",
    "histogram_landmarks",
    "to_rgb",
]

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
# StandardizeLandmarksd's default: the extremes, 1 and 99, and the deciles
LANDMARK_PERCENTILES: tuple[float, ...] = (0, 1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99, 100)


def _filename(data: Any) -> str:
    meta = getattr(data, "meta", {})
    return str(meta.get("filename_or_obj", "<array>"))


class ImageMode:
    """PIL reader converter to one image mode (``"RGB"``, ``"L"`` grey, ...); a class, not a lambda,
    so that data-loader worker processes can pickle it.

    Args:
        mode: the PIL mode every image is converted to.
    """

    def __init__(self, mode: str = "RGB") -> None:
        self.mode = mode

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == self.mode else image.convert(self.mode)


# grey, palette and RGBA fundus photographs become 3-channel RGB
to_rgb = ImageMode("RGB")


class ReadImaged(MapTransform):
    """``LoadImage`` (image only) whose errors always name the file that failed.

    Args:
        keys: keys holding file paths.
        reader: optional MONAI reader (instance or name) passed to ``LoadImage``.
    """

    def __init__(self, keys: KeysCollection, reader: Any = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadImage(reader=reader, image_only=True)
        # a named reader is the only one tried: LoadImage would otherwise fall back to every installed
        # reader and, for a corrupt file, report "cannot find a suitable reader" instead of its error
        self.reader = self.loader.readers[-1] if reader is not None else None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            try:
                d[key] = self.loader(d[key], reader=self.reader)
            except Exception as err:  # readers raise many types; re-raise one that names the file
                raise input_error(f"cannot read {key} file {d[key]}: {str(err).splitlines()[0]}") from err
        return d


class LoadFundusLabeld(MapTransform):
    """Read fundus mask file(s) into a channel-first label map ``(1, W, H)`` of ``{0, 1, 2}``.

    The array layout matches ``LoadImage`` with ``PILReader`` followed by ``EnsureChannelFirst``
    (first spatial axis = image width), so image and label align.

    Args:
        keys: keys holding a mask path or ``[disc, cup]`` paths.
        mask_format: encoding of the masks (see ``fundus``).
        format_key: item key with the item's own encoding; unless it is ``"auto"`` (or absent) it
            wins over ``mask_format``, since the datalist found it per file (e.g. pair masks).
    """

    def __init__(
        self,
        keys: KeysCollection,
        mask_format: str = "auto",
        format_key: str = "mask_format",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_format = mask_format
        self.format_key = format_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            source = d[key]
            item_format = d.get(self.format_key, "auto")
            label = read_fundus_label(source, self.mask_format if item_format == "auto" else item_format)
            name = source if isinstance(source, str) else ";".join(map(str, source))
            d[key] = MetaTensor(torch.from_numpy(label.T.copy())[None], meta={"filename_or_obj": name})
        return d


class SelectFramed(MapTransform):
    """Keep the cine frame ``data[frame_key]`` of channel-first 4D volumes (time is the channel axis).

    A frame of ``-1`` marks a file that is already one 3D frame; it must then have one channel.
    The result must be one 3D volume: a 2D image is an error that names the file.
    """

    def __init__(self, keys: KeysCollection, frame_key: str = "frame", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.frame_key = frame_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        frame = int(d.get(self.frame_key, -1))
        for key in self.key_iterator(d):
            volume = d[key]
            if frame < 0:
                if volume.shape[0] != 1:
                    raise input_error(
                        f"{_filename(volume)} has {volume.shape[0]} frames but no frame index (ED/ES) was given"
                    )
            elif not 0 <= frame < volume.shape[0]:
                raise input_error(f"{_filename(volume)} has {volume.shape[0]} frames; frame {frame} was asked for")
            else:
                volume = d[key] = volume[frame : frame + 1]
            if volume.ndim != 4:  # channel + 3 spatial axes
                raise input_error(
                    f"{_filename(volume)} has {volume.ndim - 1} spatial axes (shape {tuple(volume.shape[1:])}); "
                    "expected a 3D short-axis volume (H, W, slices) or a 4D cine volume"
                )
        return d


class CheckSameShaped(MapTransform):
    """Raise ``DataError`` naming the files when the keys' spatial shapes, or their affines (NIfTI), differ."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        shapes = {key: tuple(d[key].shape[1:]) for key in self.key_iterator(d)}
        if len(set(shapes.values())) > 1:
            detail = ", ".join(f"{_filename(d[k])} {s}" for k, s in shapes.items())
            raise input_error(f"image and mask shapes differ: {detail}")
        first, *others = [d[k] for k in shapes if isinstance(d[k], MetaTensor)] or [None]
        for other in others:  # 1e-3 mm: the rounding of float32 headers, not another grid
            if not torch.allclose(first.affine.double(), other.affine.double(), atol=1e-3):
                raise input_error(
                    f"image {_filename(first)} and label {_filename(other)} have different geometry (affine); "
                    "the label must be drawn on the image's grid"
                )
        return d


class CheckLabelsd(MapTransform):
    """Raise ``DataError`` naming the file when a label map has values outside ``0..num_classes-1``."""

    def __init__(self, keys: KeysCollection, num_classes: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.num_classes = num_classes

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            values = torch.unique(torch.as_tensor(d[key]))
            bad = [v for v in values.tolist() if v not in range(self.num_classes)]
            if bad:
                raise input_error(
                    f"label {_filename(d[key])} has values {bad[:10]} outside 0..{self.num_classes - 1}"
                )
        return d


def histogram_landmarks(image: Any, percentiles: Sequence[float]) -> np.ndarray:
    """The image's intensities at ``percentiles`` (0-100), over all its voxels and channels."""
    return np.percentile(np.asarray(image, dtype=np.float64).ravel(), percentiles)


class StandardizeLandmarksd(MapTransform):
    """Map each image's intensity landmarks onto a reference, piecewise linearly (Nyul and Udupa's
    histogram standardisation).

    Another scanner maps the same tissue to other intensities: after the per-volume percentile
    scaling, M&Ms vendor A's myocardium sits at about half of vendor B's level (docs/benchmarks.md,
    twelfth screen). A monotone piecewise-linear map that sends the image's own percentiles to the
    training images' mean percentiles undoes such a change of the intensity mapping (gain, gamma and
    other monotone curves, up to the linear pieces) while it leaves an image like the training ones
    nearly as it was, which a full histogram equalisation does not.
    Voxels between two landmarks keep their order and relative spacing; ties (for example a
    background at zero holding several percentiles) map to the lowest landmark of the tie.

    Args:
        keys: image keys; each image is mapped as a whole (all channels and slices together).
        landmarks: the reference intensities, one per percentile, non-decreasing: the mean of
            ``histogram_landmarks`` over the training images (``python -m emclip.data.landmarks``).
        percentiles: where the landmarks are taken, increasing, in 0-100; 0 and 100 anchor the
            image's minimum and maximum.
    """

    def __init__(self, keys: KeysCollection, landmarks: Sequence[float],
                 percentiles: Sequence[float] = LANDMARK_PERCENTILES,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if landmarks is None or len(landmarks) != len(percentiles):
            raise ValueError(f"StandardizeLandmarksd: landmarks needs one value per percentile ({len(percentiles)}), got "
                             f"{landmarks!r}; compute them on the training images with python -m emclip.data.landmarks")
        if np.any(np.diff(percentiles) <= 0) or np.any(np.diff(landmarks) < 0):
            raise ValueError("StandardizeLandmarksd: percentiles must increase and landmarks must not decrease, "
                             f"got {list(percentiles)} and {list(landmarks)}")
        self.landmarks = np.asarray(landmarks, dtype=np.float64)
        self.percentiles = tuple(percentiles)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = np.asarray(d[key], dtype=np.float64)
            own, first = np.unique(histogram_landmarks(image, self.percentiles), return_index=True)
            d[key] = convert_to_dst_type(np.interp(image, own, self.landmarks[first]), d[key], dtype=d[key].dtype)[0]
        return d


class RandHueSaturationd(RandomizableTransform, MapTransform):
    """Random hue rotation and saturation scaling of RGB images in ``[0, 1]`` (channel first).

    The chroma plane of the YIQ colour space is rotated by a random angle and scaled by a random
    factor; luminance is kept. One 3x3 colour matrix is drawn per call and applied to every key.

    Args:
        keys: RGB image keys.
        prob: probability of applying the transform.
        hue: the rotation is uniform in ``[-hue, hue]`` turns (``0.5`` = any hue).
        saturation: the chroma scale is uniform in ``[1 - saturation, 1 + saturation]``.
    """

    _RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.1,
        hue: float = 0.05,
        saturation: float = 0.3,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.hue = hue
        self.saturation = saturation
        self.matrix = np.eye(3)

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        angle = 2 * math.pi * self.R.uniform(-self.hue, self.hue)
        scale = self.R.uniform(1 - self.saturation, 1 + self.saturation)
        chroma = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        mix = np.eye(3)
        mix[1:, 1:] = chroma
        self.matrix = np.linalg.inv(self._RGB_TO_YIQ) @ mix @ self._RGB_TO_YIQ

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            img = d[key]
            if img.shape[0] != 3:
                raise ValueError(f"RandHueSaturationd needs 3-channel images, got shape {tuple(img.shape)}")
            x = torch.as_tensor(img).float()
            out = torch.einsum("ij,j...->i...", torch.as_tensor(self.matrix, dtype=x.dtype), x)
            d[key] = convert_to_dst_type(out, img)[0]
        return d


class ZoomInPlaned(MapTransform, InvertibleTransform):
    """Zoom images by ``zoom`` in the first two spatial axes, keeping their size (edge-padded when
    shrunk, centre-cropped when enlarged); invertible, so ``Invertd`` maps predictions back.

    For scale-robustness checks: 2D images and the slices of 3D volumes (the slice axis is kept).

    Args:
        keys: image keys.
        zoom: the zoom factor (below 1 shrinks).
        padding_mode: ``numpy.pad`` mode of the border left by shrinking.
    """

    def __init__(self, keys: KeysCollection, zoom: float, padding_mode: str = "edge", allow_missing_keys: bool = False):
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.zooms = {
            dims: Zoomd(keys, zoom=(zoom, zoom) + (1.0,) * (dims - 2), keep_size=True, padding_mode=padding_mode,
                        allow_missing_keys=allow_missing_keys)
            for dims in (2, 3)
        }

    def _for(self, data: Mapping[Hashable, Any]) -> Zoomd:
        return self.zooms[next(iter(data[k] for k in self.key_iterator(data))).ndim - 1]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        return self._for(data)(data)

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        return self._for(data).inverse(data)


class RepeatViewsd(Transform):
    """Return ``views`` copies of an item, so that the transforms after it draw each one anew.

    Placed after the spatial augmentation, it gives differently styled views of the same geometry
    for a consistency loss (``EMCLIPLoss(consistency_weight=...)``): MONAI's ``Compose`` applies
    the later transforms to every copy, and ``list_data_collate`` puts the views of an item next
    to each other in the batch.
    """

    def __init__(self, views: int = 2) -> None:
        if views < 2:
            raise ValueError(f"RepeatViewsd needs views >= 2, got {views}")
        self.views = views

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        return [dict(data)] + [
            {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in data.items()} for _ in range(self.views - 1)
        ]
