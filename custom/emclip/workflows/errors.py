"""The bundle's own errors at the end of a failed run: the message, not MONAI's wrapper, is the last line.

MONAI wraps an error raised in a config expression or a transform into ``RuntimeError("Failed to
evaluate ...")`` and PyTorch wraps one raised in a ``DataLoader`` worker into its traceback text, so
the bundle's message (what is wrong, which key or file, what to do) ends up deep inside a long
traceback. :func:`install_excepthook`, which the configs call first in ``initialize``, prints that
message last instead. Other exceptions (real bugs) keep Python's full traceback.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
import traceback
from types import TracebackType

from emclip.data.common import DataError
from emclip.networks.text import PromptsError
from emclip.workflows.checks import ConfigError

__all__ = ["BUNDLE_ERRORS", "TRACEBACK_ENV", "bundle_message", "install_excepthook"]

# the errors the bundle raises on purpose, each with a message that names the key or file
BUNDLE_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DataError, PromptsError)
TRACEBACK_ENV = "EMCLIP_TRACEBACK"


def bundle_message(err: BaseException) -> str | None:
    """The message of the bundle error behind ``err``, or ``None`` for any other error.

    Also found in an error re-raised from a ``DataLoader`` worker process: PyTorch raises the
    outermost type again (MONAI's ``RuntimeError("applying transform ...")``) with the worker's
    traceback as text, so the chain is lost and the bundle error is read from that text.
    """
    names = "|".join(sorted({kind.__name__ for kind in BUNDLE_ERRORS} | {"ServedDataError"}))
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        text = str(err)
        if "\nOriginal Traceback" in text:
            lines = text.splitlines()
            for index in range(len(lines) - 1, -1, -1):
                match = re.match(rf"^(?:[\w.]+\.)?(?:{names}): (.*)$", lines[index])
                if match:
                    rest = itertools.takewhile(lambda line: line.strip(), lines[index + 1 :])
                    return "\n".join([match.group(1), *rest])
        elif isinstance(err, BUNDLE_ERRORS):
            return text
        err = err.__cause__ or err.__context__
    return None


def _hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    message = bundle_message(value)
    if message is None:
        sys.__excepthook__(kind, value, tb)
        return
    logging.shutdown()  # flush the log first, so that nothing is written after the message
    if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
        traceback.print_exception(kind, value, tb)
    else:
        print(f"(the bundle stopped on one of its own errors; {TRACEBACK_ENV}=1 shows the traceback)", file=sys.stderr)
    print(message, file=sys.stderr, flush=True)


def install_excepthook() -> None:
    """Print the message of an uncaught bundle error as the last line of the output (see the module
    docstring); with the environment variable ``EMCLIP_TRACEBACK=1`` the full traceback comes above it.
    Idempotent."""
    sys.excepthook = _hook
