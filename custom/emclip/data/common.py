"""Shared names of the data package: its logger, its error type and the file suffixes it reads."""

from __future__ import annotations

import logging

__all__ = ["DataError", "IMAGE_SUFFIXES", "logger"]

logger = logging.getLogger("emclip.data")

# Suffixes of 2D images and masks, compared in lower case.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class DataError(ValueError):
    """Bad input data; the message names the offending file(s)."""
