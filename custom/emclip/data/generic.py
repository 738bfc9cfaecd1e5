"""The generic 2D layout: any 2D segmentation task with index label maps, one folder per domain.

    <root>/<domain>/<split>/image/<name>.<png|jpg|jpeg|bmp|tif|tiff>
    <root>/<domain>/<split>/label/<name>.png     values 0 (background) .. num_classes - 1

A label is matched to its image by file stem, so image and label may have different suffixes; the
subject of an item is its stem. ``bundle/configs/task_2d.yaml`` reads this layout; a new task copies
that overlay, names its classes in a prompts JSON and the metadata's ``channel_def``, and needs no
Python of its own.
"""

from __future__ import annotations

from pathlib import Path

from emclip.data.common import DataError, image_files, logger

__all__ = ["find_2d_items"]


def find_2d_items(root: str | Path, image_dir: str = "image", label_dir: str = "label", missing_label: str = "error") -> list[dict]:
    """List the image/label pairs of every domain and split under ``root``.

    Args:
        root: data root holding one folder per domain.
        image_dir: name of the image folder of a split.
        label_dir: name of the label folder of a split.
        missing_label: ``"error"`` raises on an image without its label; ``"skip"`` leaves such
            images out, counting and logging them.

    Returns:
        Items ``{"image", "label", "domain", "split", "subject"}`` with absolute paths.

    Raises:
        DataError: ``root`` is not a folder, an image without its label (unless skipped), or no
            image/label pairs in the layout.
    """
    if missing_label not in ("error", "skip"):
        raise ValueError(f"missing_label must be 'error' or 'skip', got {missing_label!r}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root {root} is not a folder")
    items: list[dict] = []
    skipped: list[Path] = []
    for split_dir in sorted(p for domain in sorted(root.iterdir()) if domain.is_dir() for p in domain.iterdir() if p.is_dir()):
        if not (split_dir / image_dir).is_dir():
            logger.warning("ignored %s: it has no %s/ folder", split_dir, image_dir)
            continue
        images = image_files(split_dir / image_dir)
        labels = image_files(split_dir / label_dir) if (split_dir / label_dir).is_dir() else {}
        for stem, image in images.items():
            if stem not in labels:
                if missing_label == "error":
                    raise DataError(f"image {image} has no label {stem}.png in {split_dir / label_dir}")
                skipped.append(image)
                continue
            items.append({"image": str(image.resolve()), "label": str(labels[stem].resolve()),
                          "domain": split_dir.parent.name, "split": split_dir.name, "subject": stem})
        orphans = sorted(set(labels) - set(images))
        if orphans:
            logger.warning("%d labels in %s have no image, e.g. %s", len(orphans), split_dir / label_dir, labels[orphans[0]].name)
    if skipped:
        logger.warning("skipped %d images without a label, e.g. %s", len(skipped), skipped[0])
    if not items:
        raise DataError(f"no image/label pairs under {root}; expected <domain>/<split>/{{{image_dir},{label_dir}}}/")
    return items
