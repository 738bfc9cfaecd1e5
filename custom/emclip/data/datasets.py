"""Datasets that cache the deterministic preprocessing, and the cardiac volume-to-slice expansion.

``make_dataset`` wraps MONAI's ``CacheDataset`` (memory), ``PersistentDataset`` (disk) or
``Dataset`` (none): the cached part is every transform before the first random one, so put
``preprocessing`` first. Cardiac training runs on 2D slices: ``make_slice_dataset`` preprocesses
each volume once (optionally cached on disk), cuts out the labelled slices with ``expand_slices``
and keeps them in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import CacheDataset, Dataset, MetaTensor, PersistentDataset
from monai.transforms import Compose
from tqdm.auto import tqdm

from .common import logger
from .transforms import augmentation, normalization, preprocessing, training_transforms

__all__ = ["CACHE_MODES", "cache_nbytes", "expand_slices", "make_dataset", "make_slice_dataset", "training_dataset"]

CACHE_MODES: tuple[str, ...] = ("memory", "disk", "none")


def _compose(transforms: Sequence[Callable] | Callable | None) -> Callable | None:
    if transforms is None or isinstance(transforms, Compose):
        return transforms
    return Compose(list(transforms)) if isinstance(transforms, Sequence) else transforms


def make_dataset(
    items: Sequence[dict],
    transforms: Sequence[Callable] | Callable,
    cache: str = "memory",
    cache_dir: str | Path | None = None,
    num_workers: int | None = 1,
    progress: bool = True,
) -> Dataset:
    """A MONAI dataset over ``items`` that caches the deterministic leading transforms.

    Args:
        items: datalist items.
        transforms: transform list (or a ``Compose``); deterministic ones first.
        cache: ``"memory"`` (``CacheDataset``), ``"disk"`` (``PersistentDataset`` in
            ``cache_dir``, reused by later runs) or ``"none"``.
        cache_dir: folder for ``"disk"``.
        num_workers: threads that fill the memory cache.
        progress: fill the cache now with a progress bar; without it the disk cache fills lazily
            on first access (the memory cache always fills now).
    """
    transform = _compose(transforms)
    if cache == "memory":
        return CacheDataset(list(items), transform, cache_rate=1.0, num_workers=num_workers, progress=progress)
    if cache == "disk":
        if cache_dir is None:
            raise ValueError("cache='disk' needs a cache_dir")
        dataset = PersistentDataset(list(items), transform, cache_dir=cache_dir)
        if progress:  # fill (or check) the cache now, in one visible pass, instead of during epoch one
            for index in tqdm(range(len(dataset)), desc="Caching to disk"):
                dataset[index]
        return dataset
    if cache == "none":
        return Dataset(list(items), transform)
    raise ValueError(f"unknown cache mode {cache!r}; expected one of {CACHE_MODES}")


def expand_slices(
    volumes: Iterable[dict],
    keys: Sequence[str] = ("image", "label"),
    labelled_only: bool = True,
) -> list[dict]:
    """Cut preprocessed cardiac volumes into 2D slice items along the last axis.

    Args:
        volumes: dicts with channel-first volumes ``(C, H, W, slices)`` under ``keys`` (image, then
            label) plus metadata such as ``domain``, ``subject``, ``phase``.
        keys: image key, then label key; the first label decides which slices are labelled.
        labelled_only: keep only slices whose label has foreground; the others are counted and
            logged.

    Returns:
        Slice items: ``keys`` hold compact ``(C, H, W)`` tensors (copies, so that the volume can
        be freed); every other non-tensor entry is kept; ``slice`` is the slice index and ``source``
        the image file.
    """
    slices: list[dict] = []
    dropped = total = 0
    for volume in volumes:
        image = volume[keys[0]]
        label = volume[keys[1]] if len(keys) > 1 else None
        meta = {k: v for k, v in volume.items() if k not in keys and not isinstance(v, torch.Tensor)}
        source = str(getattr(image, "meta", {}).get("filename_or_obj", ""))
        for k in range(image.shape[-1]):
            total += 1
            if labelled_only and label is not None and not bool((label[..., k] != 0).any()):
                dropped += 1
                continue
            item = {**meta, "slice": k, "source": source}
            for key in keys:
                cut = volume[key][..., k]
                item[key] = (cut.as_tensor() if isinstance(cut, MetaTensor) else torch.as_tensor(cut)).clone()
            slices.append(item)
    if dropped:
        logger.info("kept %d of %d slices; %d unlabelled slices left out", total - dropped, total, dropped)
    return slices


def make_slice_dataset(
    data: Sequence[dict],
    preprocess: Sequence[Callable] | Callable,
    transforms: Sequence[Callable] | Callable | None = None,
    keys: Sequence[str] = ("image", "label"),
    cache_dir: str | Path | None = None,
    labelled_only: bool = True,
    progress: bool = True,
) -> Dataset:
    """Cardiac 2D training set: preprocessed volumes expanded into (labelled) slices held in memory.

    Args:
        data: volume-level datalist items (named like MONAI's ``Dataset(data=...)``).
        preprocess: deterministic volume transforms, e.g. ``preprocessing("cardiac")``.
        transforms: per-slice transforms (augmentation, normalisation), run at every access.
        keys: image key, then label key.
        cache_dir: when given, preprocessed volumes are also cached on disk for later runs.
        labelled_only: keep only slices with foreground (see ``expand_slices``).
        progress: show a progress bar while volumes are preprocessed.
    """
    volumes = make_dataset(data, preprocess, "disk" if cache_dir else "none", cache_dir, progress=False)
    loaded = (volumes[i] for i in range(len(volumes)))
    if progress:
        loaded = tqdm(loaded, total=len(volumes), desc="Preprocessing volumes")
    return Dataset(expand_slices(loaded, keys, labelled_only), _compose(transforms))


def training_dataset(
    data: Sequence[dict],
    task: str,
    preprocess: dict[str, Any] | None = None,
    augment: dict[str, Any] | None = None,
    normalize: bool | None = None,
    cache: str = "memory",
    cache_dir: str | Path | None = None,
    num_workers: int | None = 1,
    views: int = 1,
) -> Dataset:
    """The training set of a task: fundus images, or the labelled slices of cardiac volumes.

    One entry point for both tasks, so that a bundle's ``train#dataset`` is the same component
    whatever the task overlay (MONAI Label overrides its ``data``).

    Args:
        data: training datalist items.
        task: ``"fundus"`` or ``"cardiac"``.
        preprocess: options of ``preprocessing``. augment: switches of ``augmentation``.
        normalize: see ``normalization``.
        cache: ``"memory"``, ``"disk"`` or ``"none"`` for the deterministic preprocessing (cardiac
            slices are always held in memory; ``"disk"`` also keeps the volumes in ``cache_dir``).
        cache_dir: folder of the disk cache.
        num_workers: threads that fill the memory cache.
        views: differently styled views per item (2 for the consistency loss; see ``augmentation``).
    """
    preprocess, augment = dict(preprocess or {}), dict(augment or {})
    if task == "cardiac":
        per_slice = augmentation(task, views=views, **augment) + normalization(task, normalize=normalize)
        return make_slice_dataset(data, preprocessing(task, **preprocess), per_slice, cache_dir=cache_dir if cache == "disk" else None)
    return make_dataset(data, training_transforms(task, preprocess=preprocess, augment=augment, normalize=normalize, views=views), cache, cache_dir, num_workers)


def cache_nbytes(dataset: Dataset) -> int:
    """Bytes held by the tensors and arrays of a dataset's in-memory cache (or its data list)."""
    # CacheDataset keeps its cache in a private list; measuring it is the point here.
    content: Any = getattr(dataset, "_cache", None) or dataset.data
    seen: set[int] = set()

    def walk(obj: Any) -> int:
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            if storage.data_ptr() in seen:
                return 0
            seen.add(storage.data_ptr())
            return storage.nbytes()
        if hasattr(obj, "nbytes"):
            return int(obj.nbytes)
        if isinstance(obj, dict):
            return sum(walk(v) for v in obj.values())
        if isinstance(obj, (list, tuple)):
            return sum(walk(v) for v in obj)
        return 0

    return walk(content)
