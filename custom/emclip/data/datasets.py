"""Datasets that cache the deterministic preprocessing, and the cardiac volume-to-slice expansion.

``make_dataset`` wraps MONAI's ``CacheDataset`` (memory), ``PersistentDataset`` (disk) or
``Dataset`` (none): the cached part is every transform before the first random one, so put
``preprocessing`` first. Filling a cache screens every item (:class:`ItemScreen`): the problems
of all items are listed in one ``DataError`` once the cache is full, instead of the first one
stopping the fill (in MONAI's cache threads that left the other threads running, and the process
aborted at exit). Training on the 2D slices of volumes (cardiac.yaml): ``make_slice_dataset`` preprocesses
each volume once (optionally cached on disk), cuts out the labelled slices with ``expand_slices``
and keeps them in memory.
"""

from __future__ import annotations

import hashlib
import pickle
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import CacheDataset, Dataset, MetaTensor, PersistentDataset
from monai.transforms import Compose, RandomizableTrait, Transform
from tqdm.auto import tqdm

from emclip.data.common import DataError, chained_error, logger
from emclip.data.transforms import CheckLabelsd, CheckSameShaped

__all__ = ["CACHE_MODES", "ItemScreen", "ScreenedTransform", "cache_nbytes", "screen_items", "expand_slices", "keyed_cache_dir", "make_dataset", "make_slice_dataset"]

CACHE_MODES: tuple[str, ...] = ("memory", "disk", "none")


def _compose(transforms: Sequence[Callable] | Callable | None) -> Callable | None:
    if transforms is None or isinstance(transforms, Compose):
        return transforms
    return Compose(list(transforms) if isinstance(transforms, Sequence) else [transforms])


def _source(data: Any, fallback: Any = "<array>") -> str:
    return str(getattr(data, "meta", {}).get("filename_or_obj", fallback))


class ItemScreen:
    """Collects what is wrong with preprocessed items, so that every problem of a data set is listed at once.

    Errors: a ``DataError`` raised by the preprocessing (unreadable file, label values outside the
    encoding, image/label shape or geometry mismatch, ...), NaN or infinite image values.
    Warnings: a label without foreground, identical images.
    Thread-safe (MONAI fills its memory cache with threads).

    Args:
        keys: image key, then label key (optional).
    """

    def __init__(self, keys: Sequence[str] = ("image", "label")) -> None:
        self.keys = list(keys)
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.unexpected: BaseException | None = None
        self._hashes: dict[str, str] = {}
        self._lock = threading.Lock()

    def error(self, message: str) -> None:
        with self._lock:
            self.errors.append(message)

    def check(self, item: Mapping[Hashable, Any]) -> list[str]:
        """Check one preprocessed item: records its warnings and returns its errors (for the caller to record or raise)."""
        image = item[self.keys[0]]
        label = item.get(self.keys[1]) if len(self.keys) > 1 else None
        errors, warnings = [], []
        name = _source(image)
        if not bool(torch.isfinite(torch.as_tensor(image)).all()):
            errors.append(f"image {name} has NaN or infinite values")
        if label is not None:
            if not bool((torch.as_tensor(label) != 0).any()):
                warnings.append(f"label {_source(label)} has no foreground (only background)")
        digest = hashlib.blake2b(torch.as_tensor(image).detach().cpu().numpy().tobytes(), digest_size=16).hexdigest()
        with self._lock:
            first = self._hashes.setdefault(digest, name)
            if first != name:
                warnings.append(f"images {first} and {name} are identical (a duplicate case)")
            self.warnings += warnings
        return errors

    def report(self, what: str) -> None:
        """Log the warnings; raise one ``DataError`` listing every error (or the first unexpected exception)."""
        for message in self.warnings:
            logger.warning("%s: %s", what, message)
        if self.unexpected is not None:
            raise self.unexpected
        if self.errors:
            listed = "\n".join(f"  {m}" for m in self.errors)
            raise DataError(f"{what}: {len(self.errors)} problem(s); fix or remove these items:\n{listed}")


class ScreenedTransform(Transform):
    """Run a deterministic chain on one item and screen the result with an :class:`ItemScreen`.

    Args:
        chain: the deterministic (cached) transforms.
        screen: where problems are recorded.
        collect: record a failing item's ``DataError`` and return the item unprocessed (its cache
            entry is never used: ``screen.report`` raises once the cache is full); ``False`` raises
            at once, for a disk cache, which must not store a failed item.
    """

    def __init__(self, chain: Callable, screen: ItemScreen, collect: bool = True) -> None:
        self.chain = chain
        self.screen = screen
        self.collect = collect

    def __call__(self, data: Mapping[Hashable, Any]) -> Any:
        try:
            out = self.chain(data)
        except Exception as err:
            found = chained_error(err, DataError)
            if not self.collect:
                raise
            if found is None:  # a bug, not bad data: re-raised by report() after the fill
                self.screen.unexpected = self.screen.unexpected or err
            else:
                self.screen.error(str(found))
            return data
        errors = self.screen.check(out)
        if errors and not self.collect:
            raise DataError("; ".join(errors))
        for message in errors:
            self.screen.error(message)
        return out


def screen_items(items: Sequence[dict], preprocess: Sequence[Callable], progress: bool = True) -> ItemScreen:
    """Read every image and label of ``items`` once through a preprocessing chain and screen them.

    The same screening as a training cache fill (see :class:`ItemScreen`), without a cache; the chain
    stops after its last check, since the resampling after it checks nothing and takes most of the time.

    Args:
        items: datalist items.
        preprocess: the task's preprocessing, e.g. ``task_transforms("fundus", "preprocess")``.
        progress: show a progress bar.
    """
    transforms = list(preprocess)
    checks = [i for i, t in enumerate(transforms) if isinstance(t, (CheckSameShaped, CheckLabelsd))]
    chain = Compose(transforms[: checks[-1] + 1] if checks else transforms)
    screen = ItemScreen()
    screened = ScreenedTransform(chain, screen, collect=True)
    for item in tqdm(items, desc="Checking") if progress else items:
        screened(item)
    if screen.unexpected is not None:
        raise screen.unexpected
    return screen


def _split_cached(transform: Compose) -> tuple[Compose, list[Callable]]:
    """The transforms a cache keeps (those before the first random one) and the rest, as MONAI's caches split them."""
    first = transform.get_index_of_first(lambda t: isinstance(t, RandomizableTrait) or not isinstance(t, Transform))
    first = len(transform.transforms) if first is None else first
    return Compose(transform.transforms[:first]), list(transform.transforms[first:])


def keyed_cache_dir(cache_dir: str | Path, cached: Compose) -> Path:
    """``cache_dir`` / a digest of the settings of the transforms a disk cache keeps.

    MONAI's ``PersistentDataset`` names a cached item by its datalist entry alone, so a run with
    other preprocessing (another spacing, equalisation switched on) in the same folder would read
    the volumes the earlier preprocessing made. Keyed by the pickled transforms, each preprocessing
    gets a folder of its own, and runs with the same preprocessing share one. Transforms that do
    not pickle (a lambda) are keyed by their class names, which a change of their settings does
    not change: that is logged.
    """
    try:
        key = pickle.dumps(cached.transforms)
    except (pickle.PicklingError, AttributeError, TypeError) as err:
        logger.warning("disk cache %s: the preprocessing does not pickle (%s); it is keyed by transform names only, "
                       "so delete the folder after changing a transform's settings", cache_dir, err)
        key = " ".join(type(t).__qualname__ for t in cached.transforms).encode()
    return Path(cache_dir) / f"preprocess-{hashlib.blake2b(key, digest_size=8).hexdigest()}"


def _screened(dataset: Dataset, screen: ItemScreen, desc: str | None) -> Iterator[Any]:
    """Load every item of ``dataset`` once in this thread, recording a ``DataError`` and going on; yields the items loaded."""
    indices: Iterable[int] = range(len(dataset))
    for index in tqdm(indices, desc=desc) if desc else indices:
        try:
            item = dataset[index]
        except Exception as err:
            found = chained_error(err, DataError)
            if found is None:
                raise
            screen.error(str(found))
            continue
        yield item


def make_dataset(
    data: Sequence[dict],
    transforms: Sequence[Callable] | Callable,
    cache: str = "memory",
    cache_dir: str | Path | None = None,
    num_workers: int | None = 1,
    progress: bool = True,
    keys: Sequence[str] = ("image", "label"),
    slices: bool = False,
    labelled_only: bool = True,
) -> Dataset:
    """A MONAI dataset over ``data`` that caches the deterministic leading transforms.

    With ``slices``, the items are volumes and the dataset holds their 2D slices instead
    (:func:`make_slice_dataset`: the deterministic transforms run per volume, the random ones per
    slice), so that a 2D network trains on 3D data with the same config item.

    Args:
        data: datalist items (named like MONAI's ``Dataset(data=...)``, which MONAI Label overrides).
        transforms: transform list (or a ``Compose``); deterministic ones first.
        cache: ``"memory"`` (``CacheDataset``), ``"disk"`` (``PersistentDataset`` in
            ``cache_dir``, reused by later runs) or ``"none"``.
        cache_dir: folder for ``"disk"``; each preprocessing caches in a subfolder of its own
            (:func:`keyed_cache_dir`).
        num_workers: threads that fill the memory cache.
        progress: fill the cache now with a progress bar; without it the disk cache fills lazily
            on first access (the memory cache always fills now).
        keys: image key, then label key, for the screening of the cached items.
        slices: train on the 2D slices along the last axis (cardiac.yaml's ``train_on_slices``);
            slices are always held in memory, ``"disk"`` also keeps the volumes in ``cache_dir``.
        labelled_only: with ``slices``, leave out the slices without foreground; ``False`` trains on
            them as background (cardiac.yaml's ``train_unlabelled_slices``).

    Raises:
        DataError: listing every problem found while the cache filled (see :class:`ItemScreen`);
            items already in a disk cache were screened when they were stored, and ``"none"``
            screens nothing up front (run ``python -m emclip.data.datalist --check``).
    """
    transform = _compose(transforms)
    if cache not in CACHE_MODES:
        raise ValueError(f"unknown cache mode {cache!r}; expected one of {CACHE_MODES}")
    if slices:
        cached, rest = _split_cached(transform)
        return make_slice_dataset(
            data, cached, rest, keys, cache_dir if cache == "disk" else None, labelled_only=labelled_only, progress=progress
        )
    if cache == "none":
        return Dataset(list(data), transform)
    if cache == "disk" and cache_dir is None:
        raise ValueError("cache='disk' needs a cache_dir")
    screen = ItemScreen(keys)
    cached, rest = _split_cached(transform)
    screened = Compose([ScreenedTransform(cached, screen, collect=cache == "memory"), *rest])
    if cache == "memory":
        dataset = CacheDataset(list(data), screened, cache_rate=1.0, num_workers=num_workers, progress=progress)
    else:
        dataset = PersistentDataset(list(data), screened, cache_dir=keyed_cache_dir(cache_dir, cached))
        if progress:  # fill (or check) the cache now, in one visible pass, instead of during epoch one
            for _ in _screened(dataset, screen, "Caching to disk"):
                pass
    screen.report(f"caching {len(data)} items")
    return dataset


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
        preprocess: deterministic volume transforms, e.g. ``task_transforms("cardiac", "preprocess")``.
        transforms: per-slice transforms (augmentation, normalisation), run at every access.
        keys: image key, then label key.
        cache_dir: when given, preprocessed volumes are also cached on disk for later runs (in a
            subfolder per preprocessing, :func:`keyed_cache_dir`).
        labelled_only: keep only slices with foreground (see ``expand_slices``).
        progress: show a progress bar while volumes are preprocessed.
    """
    screen = ItemScreen(keys)
    # raising at once keeps a failed volume out of the disk cache; the loop records it and goes on
    preprocess = _compose(preprocess)
    chain = ScreenedTransform(preprocess, screen, collect=False)
    volumes = (
        PersistentDataset(list(data), chain, cache_dir=keyed_cache_dir(cache_dir, preprocess)) if cache_dir else Dataset(list(data), chain)
    )
    slices = expand_slices(_screened(volumes, screen, "Preprocessing volumes" if progress else None), keys, labelled_only)
    screen.report(f"preprocessing {len(data)} volumes")
    return Dataset(slices, _compose(transforms))


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
