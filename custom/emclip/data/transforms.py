"""Transform chains: one deterministic preprocessing, configurable augmentation, final normalisation.

``preprocessing`` is the single definition shared by training, evaluation and inference; its
spatial part (``Resized`` for fundus, ``Spacingd`` + ``ResizeWithPadOrCropd`` for cardiac) is
recorded on the image so that ``monai.transforms.Invertd`` maps predictions back to the original
geometry. ``augmentation`` returns the random transforms, each switchable; ``normalization`` goes
last, after augmentation. In every function ``keys[0]`` is the image and any further keys are label
maps, which are resampled with nearest interpolation only.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, PILReader
from monai.transforms import (
    EnsureChannelFirstd,
    InvertibleTransform,
    EnsureTyped,
    LoadImage,
    MapTransform,
    NormalizeIntensityd,
    Rand2DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandomizableTransform,
    RandScaleIntensityFixedMeand,
    RandShiftIntensityd,
    Resized,
    ResizeWithPadOrCropd,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    Spacingd,
    Transform,
    Zoomd,
)
from monai.utils import convert_to_dst_type
from PIL import Image

from .common import input_error
from .fundus import read_fundus_label
from .style import RandGINd, RandGINMixd, RandLocationScaled

__all__ = [
    "AUGMENTATIONS",
    "CLIP_MEAN",
    "CLIP_STD",
    "CheckLabelsd",
    "CheckSameShaped",
    "LoadFundusLabeld",
    "RandHueSaturationd",
    "ReadImaged",
    "RepeatViewsd",
    "SelectFramed",
    "TASKS",
    "ZoomInPlaned",
    "augmentation",
    "evaluation_transforms",
    "normalization",
    "preprocessing",
    "training_transforms",
]

TASKS: tuple[str, ...] = ("fundus", "cardiac")
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
NUM_CLASSES: dict[str, int] = {"fundus": 3, "cardiac": 4}


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def _filename(data: Any) -> str:
    meta = getattr(data, "meta", {})
    return str(meta.get("filename_or_obj", "<array>"))


def to_rgb(image: Image.Image) -> Image.Image:
    """PIL converter: grey, palette and RGBA fundus photographs become 3-channel RGB."""
    return image if image.mode == "RGB" else image.convert("RGB")


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


_SPATIAL: tuple[str, ...] = ("flip", "affine", "elastic")


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _with_defaults(params: dict[str, Any], defaults: dict[str, Any], where: str) -> None:
    """Fill ``params`` with defaults in place; unknown names are an error."""
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {where} option(s) {unknown}; known: {sorted(defaults)}")
    for name, value in defaults.items():
        params.setdefault(name, value)


def preprocessing(task: str, keys: Sequence[str] = ("image", "label"), **params: Any) -> list[Transform]:
    """The deterministic preprocessing of one item (shared by training, evaluation and inference).

    Args:
        task: ``"fundus"`` or ``"cardiac"``.
        keys: image key, then label keys; ``("image",)`` gives the image-only inference chain.
        params: fundus: ``spatial_size`` (int or pair, default 256; ``None`` keeps the image's own
            size, for :class:`emclip.inference.DiscRefiner`), ``mask_format`` (default
            ``"auto"``; an item's own ``mask_format`` other than ``"auto"`` wins). Cardiac: ``spacing`` (in-plane mm,
            default 1.25), ``spatial_size`` (in-plane int or pair, default 192), ``percentiles``
            (clip range, default (0.5, 99.5)), ``frame_key`` (default ``"frame"``).

    Returns:
        Dictionary transforms. Fundus: image ``(3, S, S)`` in ``[0, 1]``, label ``(1, S, S)``.
        Cardiac: image ``(1, S, S, slices)`` in ``[0, 1]``, label ``(1, S, S, slices)``; the slice
        axis keeps its original spacing and count.
    """
    _check_task(task)
    keys = list(keys)
    image, labels = keys[0], keys[1:]
    if task == "fundus":
        _with_defaults(params, {"spatial_size": 256, "mask_format": "auto"}, task)
        chain: list[Transform] = [ReadImaged(image, reader=PILReader(converter=to_rgb)), EnsureChannelFirstd(image)]
        if labels:
            chain += [LoadFundusLabeld(labels, params["mask_format"]), CheckSameShaped(keys)]
        if params["spatial_size"] is not None:  # None: the two-pass refinement resizes by itself
            # anti-aliasing smooths the image before downsampling; labels only ever see nearest
            chain.append(Resized(
                keys, _pair(params["spatial_size"]), mode=["bilinear"] + ["nearest"] * len(labels),
                anti_aliasing=[True] + [False] * len(labels),
            ))
        chain.append(ScaleIntensityRanged(image, a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0))  # after resizing: fewer pixels
        return chain
    _with_defaults(params, {"spacing": 1.25, "spatial_size": 192, "percentiles": (0.5, 99.5), "frame_key": "frame"}, task)
    lower, upper = params["percentiles"]
    spacing = float(params["spacing"])
    chain = [
        ReadImaged(keys),
        EnsureChannelFirstd(keys),
        SelectFramed(keys, params["frame_key"]),
        EnsureTyped(keys, dtype=torch.float32),
    ]
    if labels:
        chain += [CheckSameShaped(keys), CheckLabelsd(labels, NUM_CLASSES[task])]
    chain += [
        # percentiles before resampling, so that padding does not count
        ScaleIntensityRangePercentilesd(image, lower, upper, b_min=0.0, b_max=1.0, clip=True),
        Spacingd(keys, pixdim=(spacing, spacing, -1), mode=["bilinear"] + ["nearest"] * len(labels), dtype=torch.float32),
        ResizeWithPadOrCropd(keys, (*_pair(params["spatial_size"]), -1)),
    ]
    return chain


def normalization(task: str, keys: Sequence[str] = ("image",), normalize: bool | None = None) -> list[Transform]:
    """Intensity normalisation for the network, applied after augmentation.

    Args:
        task: ``"fundus"`` or ``"cardiac"``.
        keys: image key first; other keys are ignored.
        normalize: fundus: CLIP mean/std per channel (default on); cardiac: ``(x - 0.5) / 0.5``
            (default off). ``None`` takes the task default.
    """
    _check_task(task)
    if normalize is None:
        normalize = task == "fundus"
    if not normalize:
        return []
    image = keys[0]
    if task == "fundus":
        return [NormalizeIntensityd(image, subtrahend=CLIP_MEAN, divisor=CLIP_STD, channel_wise=True)]
    return [NormalizeIntensityd(image, subtrahend=0.5, divisor=0.5)]


# name -> (on by default, default options). Units: rotate in radians (uniform in +-rotate), scale as
# the +- change of the zoom factor, translate and elastic spacing in pixels, probabilities per call.
AUGMENTATIONS: dict[str, dict[str, tuple[bool, dict[str, Any]]]] = {
    "fundus": {
        "flip": (True, {"prob": 0.5}),
        "affine": (True, {"prob": 0.5, "rotate": 0.26, "scale": 0.1, "translate": 10}),
        "elastic": (False, {"prob": 0.2, "spacing": 32, "magnitude": (1.0, 3.0)}),
        "gin": (True, {"prob": 0.5, "num_layers": 4, "hidden_channels": 2, "kernel_sizes": (1, 3), "alpha": (0.0, 1.0)}),
        "gin_mix": (False, {"prob": 0.5, "grid": (2, 6), "num_layers": 4, "hidden_channels": 2, "kernel_sizes": (1, 3)}),
        "location_scale": (False, {"prob": 0.5, "scale": 0.3, "shift": 0.15, "sigma": 2.0, "curve_points": 3}),
        "gamma": (True, {"prob": 0.3, "gamma": (0.7, 1.5)}),
        "contrast": (True, {"prob": 0.3, "factor": 0.25}),
        "brightness": (True, {"prob": 0.3, "offset": 0.1}),
        "hue_saturation": (True, {"prob": 0.3, "hue": 0.05, "saturation": 0.3}),
        "blur": (True, {"prob": 0.2, "sigma": (0.25, 1.5)}),
        "noise": (True, {"prob": 0.2, "std": 0.03}),
    },
    "cardiac": {
        "flip": (True, {"prob": 0.5}),
        "affine": (True, {"prob": 0.5, "rotate": 0.52, "scale": 0.15, "translate": 10}),
        "elastic": (True, {"prob": 0.2, "spacing": 24, "magnitude": (1.0, 2.0)}),
        "gin": (True, {"prob": 0.5, "num_layers": 4, "hidden_channels": 2, "kernel_sizes": (1, 3), "alpha": (0.0, 1.0)}),
        "gin_mix": (False, {"prob": 0.5, "grid": (2, 6), "num_layers": 4, "hidden_channels": 2, "kernel_sizes": (1, 3)}),
        "location_scale": (False, {"prob": 0.5, "scale": 0.3, "shift": 0.15, "sigma": 2.0, "curve_points": 3}),
        "gamma": (True, {"prob": 0.3, "gamma": (0.7, 1.5)}),
        "contrast": (True, {"prob": 0.3, "factor": 0.25}),
        "brightness": (True, {"prob": 0.3, "offset": 0.1}),
        "bias_field": (True, {"prob": 0.3, "coeff": (0.0, 0.3)}),
        "blur": (True, {"prob": 0.2, "sigma": (0.25, 1.0)}),
        "noise": (True, {"prob": 0.2, "std": 0.03}),
    },
}


def _build_augmentation(name: str, image: str, keys: list[str], o: dict[str, Any]) -> list[Transform]:
    """The transform(s) of one augmentation switch with options ``o`` (2D inputs)."""
    modes = ["bilinear"] + ["nearest"] * (len(keys) - 1)
    if name == "flip":
        return [RandFlipd(keys, prob=o["prob"], spatial_axis=axis) for axis in (0, 1)]
    if name == "affine":
        return [
            RandAffined(
                keys,
                prob=o["prob"],
                rotate_range=o["rotate"],
                scale_range=(o["scale"], o["scale"]),
                translate_range=(o["translate"], o["translate"]),
                mode=modes,
                padding_mode="zeros",
            )
        ]
    if name == "elastic":
        return [Rand2DElasticd(keys, o["spacing"], o["magnitude"], prob=o["prob"], mode=modes, padding_mode="zeros")]
    if name == "gin":
        return [
            RandGINd(
                image,
                prob=o["prob"],
                num_layers=o["num_layers"],
                hidden_channels=o["hidden_channels"],
                kernel_sizes=o["kernel_sizes"],
                alpha_range=o["alpha"],
            )
        ]
    if name == "gin_mix":
        gin = {k: o[k] for k in ("num_layers", "hidden_channels", "kernel_sizes")}
        # alpha 1: the mixed draws replace the image; the plain GIN switch already blends
        return [RandGINMixd(image, prob=o["prob"], grid=o["grid"], alpha_range=(1.0, 1.0), **gin)]
    if name == "location_scale":
        if len(keys) < 2:
            raise ValueError("augmentation 'location_scale' needs a label key: it changes each labelled region")
        return [RandLocationScaled(image, keys[1], prob=o["prob"], scale=o["scale"], shift=o["shift"],
                                   sigma=o["sigma"], curve_points=o["curve_points"])]
    if name == "gamma":
        return [RandAdjustContrastd(image, prob=o["prob"], gamma=o["gamma"])]
    if name == "contrast":
        return [RandScaleIntensityFixedMeand(image, factors=o["factor"], prob=o["prob"])]
    if name == "brightness":
        return [RandShiftIntensityd(image, offsets=o["offset"], prob=o["prob"])]
    if name == "hue_saturation":
        return [RandHueSaturationd(image, prob=o["prob"], hue=o["hue"], saturation=o["saturation"])]
    if name == "bias_field":
        return [RandBiasFieldd(image, coeff_range=o["coeff"], prob=o["prob"])]
    if name == "blur":
        return [RandGaussianSmoothd(image, sigma_x=o["sigma"], sigma_y=o["sigma"], prob=o["prob"])]
    if name == "noise":
        return [RandGaussianNoised(image, prob=o["prob"], std=o["std"])]
    raise AssertionError(f"no builder for augmentation {name!r}")  # AUGMENTATIONS and builders disagree


def augmentation(
    task: str, keys: Sequence[str] = ("image", "label"), views: int = 1, **switches: bool | dict[str, Any] | None
) -> list[Transform]:
    """Random domain-generalisation augmentation of 2D items (fundus images, cardiac slices).

    Order: spatial (flip, affine = rotation/scaling/translation, elastic), GIN style randomisation
    (whole image, then region-wise mixing), label-aware location-scale, intensity and colour
    (gamma, contrast, brightness, hue/saturation, bias field), blur, noise, then a clip of the
    image to ``[0, 1]``. Spatial transforms move labels with nearest interpolation and pad with 0
    (background).

    Args:
        task: ``"fundus"`` or ``"cardiac"``.
        keys: image key, then label keys.
        views: with 2 or more, each item becomes that many views after the spatial transforms
            (same geometry, independent appearance; see ``RepeatViewsd``).
        switches: per augmentation name in ``AUGMENTATIONS[task]``: ``False``/``None`` off,
            ``True`` on with defaults, or a dict of options overriding the defaults (turns it on),
            e.g. ``augmentation("fundus", gin={"prob": 0.8}, elastic=True, noise=False)``.

    Raises:
        ValueError: an unknown augmentation or option name.
    """
    _check_task(task)
    table = AUGMENTATIONS[task]
    unknown = sorted(set(switches) - set(table))
    if unknown:
        raise ValueError(f"unknown {task} augmentation(s) {unknown}; known: {sorted(table)}")
    keys = list(keys)
    spatial: list[Transform] = []
    appearance: list[Transform] = []
    for name, (default_on, defaults) in table.items():
        switch = switches.get(name, default_on)
        if not switch:
            continue
        options = dict(defaults)
        if isinstance(switch, Mapping):
            unknown = sorted(set(switch) - set(defaults))
            if unknown:
                raise ValueError(f"unknown option(s) {unknown} of {task} augmentation {name!r}; known: {sorted(defaults)}")
            options.update(switch)
        (spatial if name in _SPATIAL else appearance).extend(_build_augmentation(name, keys[0], keys, options))
    chain = spatial + ([RepeatViewsd(views)] if views > 1 else []) + appearance
    if spatial or appearance:
        chain.append(ScaleIntensityRanged(keys[0], a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True))
    return chain


def training_transforms(
    task: str,
    keys: Sequence[str] = ("image", "label"),
    preprocess: dict[str, Any] | None = None,
    augment: dict[str, Any] | None = None,
    normalize: bool | None = None,
    views: int = 1,
) -> list[Transform]:
    """``preprocessing + augmentation + normalization`` for 2D training items (fundus).

    Cardiac training runs on slices: use ``preprocessing`` for the volumes, then
    ``datasets.make_slice_dataset`` with ``augmentation + normalization``.
    """
    return (
        preprocessing(task, keys, **(preprocess or {}))
        + augmentation(task, keys, views, **(augment or {}))
        + normalization(task, keys, normalize)
    )


def evaluation_transforms(
    task: str, keys: Sequence[str] = ("image", "label"), preprocess: dict[str, Any] | None = None, normalize: bool | None = None
) -> list[Transform]:
    """``preprocessing + normalization``: the deterministic chain for validation, evaluation and inference."""
    return preprocessing(task, keys, **(preprocess or {})) + normalization(task, keys, normalize)
