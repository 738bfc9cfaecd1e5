"""Shared names of the data package: its logger, its error types and the file suffixes it reads."""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["DataError", "IMAGE_SUFFIXES", "ServedDataError", "chained_error", "image_files", "input_error", "logger"]

logger = logging.getLogger("emclip.data")

# Suffixes of 2D images and masks, compared in lower case.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def image_files(folder: Path) -> dict[str, Path]:
    """Map file stem -> path for the 2D image files directly inside ``folder``."""
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}


class DataError(ValueError):
    """Bad input data; the message names the offending file(s)."""


def chained_error(err: BaseException | None, kinds: type[BaseException] | tuple[type[BaseException], ...]) -> BaseException | None:
    """The first ``kinds`` error in the chain of ``err`` (``__cause__``, else ``__context__``), or ``None``.

    MONAI wraps an error raised in a transform or a config expression in a ``RuntimeError``; this
    finds the error the bundle raised underneath.
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, kinds):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def input_error(message: str) -> DataError:
    """A ``DataError`` for bad input met by a transform, which may run inside a served request.

    Where starlette is installed (MONAI Label's FastAPI server) it is a :class:`ServedDataError`.

    Args:
        message: what is wrong, naming the file.
    """
    return DataError(message) if ServedDataError is None else ServedDataError(message)


try:
    from starlette.exceptions import HTTPException
except ImportError:  # no web server to answer
    ServedDataError = None
else:

    class ServedDataError(DataError, HTTPException):
        """A ``DataError`` that is also an HTTP 422 error.

        A server answers it with the message as the response's ``detail``: MONAI Label answers any
        other exception from a bundle with a bare 500 "Internal Server Error".
        """

        def __init__(self, message: str) -> None:
            DataError.__init__(self, message)
            HTTPException.__init__(self, status_code=422, detail=message)

        def __str__(self) -> str:
            return self.detail
