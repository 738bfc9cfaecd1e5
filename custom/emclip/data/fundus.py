"""Fundus (optic disc / optic cup) files: layout discovery and mask-to-label conversion.

Two folder layouts are recognised under a data root, one folder per domain:

* ``<root>/<domain>/<split>/{image,mask}/<name>.<png|jpg|bmp|tif>`` (the layout of the shared data);
* ``<root>/<Domain>/<split>/ROIs/{image,mask}/<name>.<ext>`` (the DoFE "Fundus" release).

A mask is matched to its image by file stem, so image and mask may have different suffixes.
Label maps always use ``0`` background, ``1`` optic disc rim, ``2`` optic cup; the optic disc is
labels 1 and 2. Mask encodings (``mask_format``):

* ``"dofe"``: one grey level per class, ``0`` cup, ``128`` rim, ``255`` background (one channel or
  three equal ones);
* ``"index"``: the label map itself, values ``{0, 1, 2}``;
* ``"disc_cup_pair"``: two binary masks per image, ``<name>-1-Disc-T.<ext>`` and
  ``<name>-1-Cup-T.<ext>`` (RIM-ONE DL naming), foreground ``1`` or ``255``;
* ``"auto"``: a pair when both pair files exist; otherwise a single mask read as ``"index"`` when
  its values lie in ``{0, 1, 2}`` and as ``"dofe"`` when they lie in ``{0, 128, 255}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from emclip.data.common import DataError, image_files, logger

__all__ = [
    "FUNDUS_CLASSES",
    "MASK_FORMATS",
    "NIFTI_SUFFIXES",
    "PAIR_SUFFIXES",
    "find_fundus_items",
    "mask_to_label",
    "pair_to_label",
    "read_fundus_label",
    "read_mask",
]

FUNDUS_CLASSES: tuple[str, ...] = ("background", "optic disc rim", "optic cup")
MASK_FORMATS: tuple[str, ...] = ("auto", "dofe", "index", "disc_cup_pair")
PAIR_SUFFIXES: tuple[str, str] = ("-1-Disc-T", "-1-Cup-T")

NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")

_DOFE_TO_LABEL = {255: 0, 128: 1, 0: 2}
_INDEX_VALUES = frozenset({0, 1, 2})


def _values(mask: np.ndarray) -> set[int]:
    """Distinct values of an integer mask (a histogram is much faster than sorting for uint8)."""
    if mask.dtype == np.uint8:
        return {int(v) for v in np.flatnonzero(np.bincount(mask.ravel(), minlength=256))}
    return {int(v) for v in np.unique(mask)}


def _check_format(mask_format: str) -> None:
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"unknown mask_format {mask_format!r}; expected one of {MASK_FORMATS}")


def _layout_folders(split_dir: Path) -> tuple[Path, Path] | None:
    """Return the (image, mask) folders of one split folder in either layout, or ``None``."""
    for base in (split_dir, split_dir / "ROIs"):
        if (base / "image").is_dir():
            return base / "image", base / "mask"
    return None


def _pair_files(masks: dict[str, Path], stem: str) -> list[Path] | None:
    files = [masks.get(stem + suffix) for suffix in PAIR_SUFFIXES]
    return None if None in files else files


def find_fundus_items(root: str | Path, mask_format: str = "auto", missing_label: str = "error") -> list[dict]:
    """List the image/mask pairs of every domain and split under ``root``.

    Args:
        root: data root holding one folder per domain.
        mask_format: one of ``MASK_FORMATS`` (see the module docstring).
        missing_label: ``"error"`` raises on an image without its mask; ``"skip"`` leaves such
            images out, counting and logging them.

    Returns:
        Items ``{"image", "label", "mask_format", "domain", "split", "subject"}``; ``label`` is one
        path, or ``[disc, cup]`` paths for pair masks; ``subject`` is the image stem.

    Raises:
        DataError: an image without its mask (unless skipped), or no images under ``root``.
    """
    _check_format(mask_format)
    if missing_label not in ("error", "skip"):
        raise ValueError(f"missing_label must be 'error' or 'skip', got {missing_label!r}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"fundus data root {root} is not a folder")
    items: list[dict] = []
    skipped: list[Path] = []
    for domain_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for split_dir in sorted(p for p in domain_dir.iterdir() if p.is_dir()):
            folders = _layout_folders(split_dir)
            if folders is None:
                logger.warning("ignored %s: it has no image/ or ROIs/image/ folder", split_dir)
                continue
            image_dir, mask_dir = folders
            masks = image_files(mask_dir) if mask_dir.is_dir() else {}
            used: set[str] = set()
            for stem, image in image_files(image_dir).items():
                label, fmt = _match_mask(image, stem, masks, mask_format)
                if label is None:
                    if missing_label == "error":
                        raise DataError(f"image {image} has no mask in {mask_dir} (mask_format={mask_format!r})")
                    skipped.append(image)
                    continue
                used.update(Path(p).stem for p in (label if isinstance(label, list) else [label]))
                items.append(
                    {
                        "image": str(image.resolve()),
                        "label": label,
                        "mask_format": fmt,
                        "domain": domain_dir.name,
                        "split": split_dir.name,
                        "subject": stem,
                    }
                )
            orphans = sorted(set(masks) - used)
            if orphans:
                logger.warning("%d masks in %s have no image, e.g. %s", len(orphans), mask_dir, masks[orphans[0]].name)
    if skipped:
        logger.warning("skipped %d fundus images without a mask, e.g. %s", len(skipped), skipped[0])
    if not items:
        raise DataError(f"no fundus image/mask pairs under {root}; expected <domain>/<split>/[ROIs/]{{image,mask}}/")
    return items


def _match_mask(image: Path, stem: str, masks: dict[str, Path], mask_format: str) -> tuple[str | list[str] | None, str]:
    """Find the mask file(s) of one image; returns (label entry or None, resolved format)."""
    pair = _pair_files(masks, stem)
    if mask_format == "disc_cup_pair" or (mask_format == "auto" and pair is not None):
        return (None if pair is None else [str(p.resolve()) for p in pair]), "disc_cup_pair"
    single = masks.get(stem)
    return (None if single is None else str(single.resolve())), mask_format


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask file as a 2D array ``(H, W)``; colour masks must have equal channels.

    A NIfTI file (``.nii``, ``.nii.gz``) is read as a label map whose voxel ``(i, j, 0)`` is the
    image's column ``i`` and row ``j``: 3D Slicer saves the label of a 2D image so, and MONAI Label
    stores what Slicer submits.

    Raises:
        DataError: the file is unreadable, or its colour channels differ.
    """
    if str(path).lower().endswith(NIFTI_SUFFIXES):
        return _nifti_mask(path)
    try:
        with Image.open(path) as im:
            mask = np.asarray(im)
    except Exception as err:  # PIL raises several unrelated types for bad files
        raise DataError(f"cannot read mask {path}: {err}") from err
    if mask.ndim == 3:
        rgb = mask[..., :3]  # an alpha channel carries no label
        if not (rgb == rgb[..., :1]).all():
            raise DataError(f"mask {path} has colour channels that differ; expected one channel or three equal ones")
        mask = rgb[..., 0]
    if mask.ndim != 2:
        raise DataError(f"mask {path} has shape {mask.shape}; expected a 2D image")
    return mask.astype(np.int64) if mask.dtype == bool else mask


def _nifti_mask(path: str | Path) -> np.ndarray:
    """The ``(H, W)`` array of a one-slice NIfTI label map (see :func:`read_mask`)."""
    import nibabel as nib

    try:
        mask = np.squeeze(np.asanyarray(nib.load(str(path)).dataobj))
    except Exception as err:  # nibabel raises several unrelated types for bad files
        raise DataError(f"cannot read mask {path}: {err}") from err
    if mask.ndim != 2:
        raise DataError(f"mask {path} has shape {mask.shape}; expected a 2D label map (one slice)")
    if not np.issubdtype(mask.dtype, np.integer):
        if not np.array_equal(mask, np.round(mask)):
            raise DataError(f"mask {path} has non-integer values; expected a label map")
        mask = mask.astype(np.int64)
    return mask.T


def mask_to_label(mask: np.ndarray, mask_format: str, source: str = "<array>") -> np.ndarray:
    """Convert one single-file mask to a label map ``{0 background, 1 rim, 2 cup}`` (uint8).

    Args:
        mask: 2D mask array.
        mask_format: ``"dofe"``, ``"index"`` or ``"auto"``.
        source: file name used in error messages.

    Raises:
        DataError: a value outside the encoding; the message names ``source`` and the values.
    """
    values = _values(mask)
    try:
        return _to_label(mask, values, mask_format, source)
    except DataError as err:
        if str(source).lower().endswith((".jpg", ".jpeg")):
            raise DataError(f"{err} (a JPEG mask: lossy compression changes its values; save masks as PNG)") from None
        raise


def _to_label(mask: np.ndarray, values: set[int], mask_format: str, source: str) -> np.ndarray:
    if mask_format == "auto":
        if values <= _INDEX_VALUES:
            mask_format = "index"
        elif values <= set(_DOFE_TO_LABEL):
            mask_format = "dofe"
        else:
            raise DataError(
                f"mask {source} has values {sorted(values)}, which fit neither the 'index' encoding "
                f"{sorted(_INDEX_VALUES)} nor the 'dofe' encoding {sorted(_DOFE_TO_LABEL)}"
            )
    if mask_format == "index":
        bad = values - _INDEX_VALUES
        if bad:
            raise DataError(f"mask {source} has values {sorted(bad)} outside the 'index' encoding {{0, 1, 2}}")
        return mask.astype(np.uint8)
    if mask_format == "dofe":
        bad = values - set(_DOFE_TO_LABEL)
        if bad:
            raise DataError(
                f"mask {source} has values {sorted(bad)} outside the 'dofe' encoding (0 cup, 128 rim, 255 background)"
            )
        lut = np.zeros(256, np.uint8)
        for value, cls in _DOFE_TO_LABEL.items():
            lut[value] = cls
        return lut[mask]
    raise ValueError(f"mask_to_label handles 'dofe', 'index' and 'auto', not {mask_format!r}")


def _binary(mask: np.ndarray, source: str) -> np.ndarray:
    values = _values(mask)
    if not (values <= {0, 1} or values <= {0, 255}):
        raise DataError(f"binary mask {source} has values {sorted(values)}; expected {{0, 1}} or {{0, 255}}")
    return mask > 0


def pair_to_label(disc: np.ndarray, cup: np.ndarray, sources: Sequence[str] = ("<disc>", "<cup>")) -> np.ndarray:
    """Combine binary disc and cup masks into a label map; the cup counts as part of the disc.

    Raises:
        DataError: different shapes or non-binary values; the message names the files.
    """
    if disc.shape != cup.shape:
        raise DataError(f"disc mask {sources[0]} {disc.shape} and cup mask {sources[1]} {cup.shape} differ in shape")
    label = _binary(disc, sources[0]).astype(np.uint8)
    label[_binary(cup, sources[1])] = 2
    return label


def read_fundus_label(label: str | Path | Sequence[str | Path], mask_format: str = "auto") -> np.ndarray:
    """Read the mask file(s) of one image and return its label map ``(H, W)`` uint8.

    Args:
        label: one mask path, or ``[disc, cup]`` paths for ``"disc_cup_pair"``.
        mask_format: one of ``MASK_FORMATS``; ``"auto"`` picks the pair reading for two paths.
    """
    _check_format(mask_format)
    if isinstance(label, (str, Path)):
        if mask_format == "disc_cup_pair":
            raise DataError(f"mask_format 'disc_cup_pair' needs [disc, cup] mask paths, got the single file {label}")
        return mask_to_label(read_mask(label), mask_format, str(label))
    if len(label) != 2 or mask_format not in ("auto", "disc_cup_pair"):
        raise DataError(f"mask_format {mask_format!r} cannot read the mask files {list(map(str, label))}")
    disc, cup = (str(p) for p in label)
    return pair_to_label(read_mask(disc), read_mask(cup), (disc, cup))
