"""Cardiac short-axis cine MRI (M&Ms) files: layout discovery and the subject information CSV.

Two layouts are recognised anywhere below a data root:

* official M&Ms: one 4D ``<code>_sa.nii.gz`` with a 4D ``<code>_sa_gt.nii.gz`` per subject; the
  ED and ES frame indices (0-based) come from the information CSV;
* split-out frames: ``<code>_sa_ED.nii.gz`` with ``<code>_sa_ED_gt.nii.gz`` (and ES), as in the
  shared data folder.

The information CSV gives the vendor of each subject, which is the domain. Column names are
matched without case, spaces or punctuation, so both the official header (``External code``,
``VendorName``, ``Vendor``, ``Centre``, ``ED``, ``ES``) and the shared ``info.csv`` header
(``code``, ``vendor``, ``vendor_name``, ``centre``, ``phase_files``) are understood. Labels:
``0`` background, ``1`` LV blood pool, ``2`` LV myocardium, ``3`` RV blood pool. Slices lie along
the last array axis.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import nibabel as nib
import numpy as np

from emclip.data.common import DataError, logger

__all__ = [
    "CARDIAC_CLASSES",
    "PHASES",
    "find_cardiac_items",
    "find_info_csv",
    "labelled_slices",
    "read_info_csv",
]

CARDIAC_CLASSES: tuple[str, ...] = ("background", "LV blood pool", "LV myocardium", "RV blood pool")
PHASES: tuple[str, str] = ("ED", "ES")

_FRAME_FILE = re.compile(r"^(?P<code>.+)_sa_(?P<phase>ED|ES)(?P<gt>_gt)?\.nii(\.gz)?$", re.IGNORECASE)
_VOLUME_FILE = re.compile(r"^(?P<code>.+)_sa(?P<gt>_gt)?\.nii(\.gz)?$", re.IGNORECASE)
# Normalised header name -> field; the first listed header found wins.
_COLUMNS: dict[str, tuple[str, ...]] = {
    "code": ("externalcode", "code", "subject"),
    "vendor": ("vendor",),
    "vendor_name": ("vendorname",),
    "centre": ("centre", "center"),
    "ED": ("ed",),
    "ES": ("es",),
}
_SPLIT_FOLDERS = {"training": "train", "train": "train", "validation": "val", "val": "val", "testing": "test", "test": "test"}


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _frame_index(value: str, csv_path: Path, code: str, phase: str) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        return int(float(value))
    except ValueError as err:
        raise DataError(f"{csv_path}: subject {code} has {phase} = {value!r}, not a frame index") from err


def read_info_csv(path: str | Path) -> dict[str, dict]:
    """Read the subject information CSV.

    Args:
        path: CSV file with at least a subject code column and a vendor column.

    Returns:
        ``{code: {"vendor", "vendor_name", "centre", "ED", "ES"}}``; ``ED``/``ES`` are 0-based frame
        indices or ``None`` when the CSV has none.

    Raises:
        DataError: missing columns, a repeated code with other values, or a bad frame index.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"cannot read information CSV {path}: {err}") from err
    by_norm = {_normalise(h): h for h in header if h}
    columns = {field: next((by_norm[n] for n in names if n in by_norm), None) for field, names in _COLUMNS.items()}
    if columns["code"] is None or columns["vendor"] is None:
        raise DataError(f"information CSV {path} needs a subject code and a vendor column; found {list(header)}")
    info: dict[str, dict] = {}
    for row in rows:
        code = row[columns["code"]].strip()
        if not code:
            continue
        entry = {
            "vendor": row[columns["vendor"]].strip(),
            "vendor_name": row[columns["vendor_name"]].strip() if columns["vendor_name"] else "",
            "centre": row[columns["centre"]].strip() if columns["centre"] else "",
            **{p: _frame_index(row[columns[p]], path, code, p) if columns[p] else None for p in PHASES},
        }
        if code in info and info[code] != entry:
            raise DataError(f"information CSV {path} lists subject {code} twice with different values")
        info[code] = entry
    return info


def find_info_csv(root: str | Path) -> Path:
    """Find the one information CSV below ``root`` (``info.csv`` first, else any CSV with code and vendor columns).

    Raises:
        DataError: none found, or several candidates (pass ``csv_path`` explicitly then).
    """
    root = Path(root)
    named = root / "info.csv"
    if named.is_file():
        return named
    candidates = []
    for path in sorted(root.rglob("*.csv")):
        try:
            read_info_csv(path)
        except DataError:
            continue
        candidates.append(path)
    if len(candidates) != 1:
        found = ", ".join(map(str, candidates)) or "none"
        raise DataError(f"need exactly one information CSV (code and vendor columns) under {root}; found {found}")
    return candidates[0]


def _split_of(path: Path, root: Path) -> str:
    """The split named by the folders between ``root`` and ``path`` (``Training/`` -> ``train``), else ``all``."""
    for part in path.relative_to(root).parts[:-1]:
        if part.lower() in _SPLIT_FOLDERS:
            return _SPLIT_FOLDERS[part.lower()]
    return "all"


def _num_frames(path: Path) -> int:
    """Number of frames of a 4D file, 0 for a 3D file (reads the header only)."""
    try:
        shape = nib.load(path).shape
    except Exception as err:  # nibabel raises several types for bad files
        raise DataError(f"cannot read NIfTI header of {path}: {err}") from err
    return shape[3] if len(shape) == 4 and shape[3] > 1 else 0


def find_cardiac_items(root: str | Path, csv_path: str | Path | None = None, missing_label: str = "error") -> list[dict]:
    """List one item per subject and phase (ED, ES) below ``root``.

    Args:
        root: data root; searched recursively.
        csv_path: information CSV; default: found by ``find_info_csv(root)``.
        missing_label: ``"error"`` raises on an image without its label; ``"skip"`` counts and
            logs such images and leaves them out.

    Returns:
        Items ``{"image", "label", "frame", "phase", "domain", "subject", "split", "vendor_name",
        "centre"}``; ``frame`` is the 0-based frame of a 4D file, ``-1`` for a 3D file;
        ``domain`` is the vendor.

    Raises:
        DataError: missing label, a subject absent from the CSV, a 4D volume whose ED/ES frame the
            CSV does not give or that it does not have, a subject in both layouts, or no images.
    """
    if missing_label not in ("error", "skip"):
        raise ValueError(f"missing_label must be 'error' or 'skip', got {missing_label!r}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"cardiac data root {root} is not a folder")
    csv_file = Path(csv_path) if csv_path else find_info_csv(root)
    info = read_info_csv(csv_file)
    items: list[dict] = []
    skipped: list[Path] = []
    layouts: dict[str, Path] = {}
    ignored = 0
    for path in sorted(root.rglob("*.nii*")):
        match = _FRAME_FILE.match(path.name) or _VOLUME_FILE.match(path.name)
        if match is None:
            ignored += 1
            continue
        if match["gt"]:
            continue  # labels are found from their images
        code = match["code"]
        if code not in info:
            raise DataError(f"subject {code} of {path} is not in the information CSV {csv_file}")
        phase = match.groupdict().get("phase")
        first = layouts.setdefault(code, path)
        if (_FRAME_FILE.match(first.name) is None) != (phase is None):
            raise DataError(f"subject {code} has both a 4D volume and split-out frames: {first} and {path}")
        if phase:
            phases = [(phase.upper(), -1)]
            label = path.with_name(f"{code}_sa_{phase}_gt{_suffix(path)}")
        else:
            phases = _volume_frames(path, code, info[code], csv_file)
            label = path.with_name(f"{code}_sa_gt{_suffix(path)}")
        if not label.is_file():
            if missing_label == "error":
                raise DataError(f"image {path} has no label file {label.name} beside it")
            skipped.append(path)
            continue
        for phase, frame in phases:
            items.append(
                {
                    "image": str(path.resolve()),
                    "label": str(label.resolve()),
                    "frame": frame,
                    "phase": phase,
                    "domain": info[code]["vendor"],
                    "subject": code,
                    "split": _split_of(path, root),
                    "vendor_name": info[code]["vendor_name"],
                    "centre": info[code]["centre"],
                }
            )
    if ignored:
        logger.info("ignored %d NIfTI files under %s not named like short-axis cine files", ignored, root)
    if skipped:
        logger.warning("skipped %d cardiac images without a label, e.g. %s", len(skipped), skipped[0])
    if not items:
        raise DataError(f"no short-axis volumes (<code>_sa.nii.gz or <code>_sa_ED.nii.gz) under {root}")
    return items


def _suffix(path: Path) -> str:
    return ".nii.gz" if path.name.lower().endswith(".nii.gz") else ".nii"


def _volume_frames(path: Path, code: str, entry: dict, csv_file: Path) -> list[tuple[str, int]]:
    """ED/ES frames of a 4D volume, checked against the CSV and the file's frame count."""
    frames = [(phase, entry[phase]) for phase in PHASES]
    missing = [phase for phase, frame in frames if frame is None]
    if missing:
        raise DataError(f"4D volume {path} has no {'/'.join(missing)} frame index for subject {code} in {csv_file}")
    count = _num_frames(path)
    if count == 0:
        raise DataError(f"{path} is named like a 4D cine volume but has a single frame")
    for phase, frame in frames:
        if not 0 <= frame < count:
            raise DataError(f"{csv_file} gives {phase} frame {frame} for {path}, which has {count} frames")
    return frames


def labelled_slices(label_path: str | Path, frame: int = -1) -> tuple[list[int], int]:
    """Indices of the slices (last array axis) whose label has any foreground, and the slice count.

    Args:
        label_path: 3D label, or 4D label with ``frame`` >= 0.
        frame: 0-based frame of a 4D label; ``-1`` for a 3D label.
    """
    try:
        data = nib.load(label_path).dataobj
        volume = np.asarray(data[..., frame] if frame >= 0 else data)
    except Exception as err:  # nibabel raises several types for bad files
        raise DataError(f"cannot read label {label_path}: {err}") from err
    if volume.ndim != 3:
        raise DataError(f"label {label_path} (frame {frame}) has shape {volume.shape}; expected a 3D volume")
    foreground = (volume != 0).reshape(-1, volume.shape[2]).any(axis=0)
    return [int(k) for k in np.flatnonzero(foreground)], int(volume.shape[2])
