"""Inference inputs and outputs; batch inference that reports an unreadable input and goes on."""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.data import Dataset, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type

from emclip.data.common import DataError, chained_error
from emclip.workflows.checks import ConfigError

__all__ = ["FAILED_KEY", "BatchInferenceEvaluator", "EncodeFundusMaskd", "SkipFailedInputs", "list_inputs"]

# item key of an input whose preprocessing failed: the reason
FAILED_KEY = "input_failed"

logger = logging.getLogger("emclip.workflows")


def _is_label_file(name: str) -> bool:
    stem = name.split(".")[0]
    return stem.endswith("_gt") or "-Disc-" in name or "-Cup-" in name


def list_inputs(input_dir: str, suffixes: Sequence[str], task: str = "input") -> list[dict[str, str]]:
    """Inference items ``{"image": path}`` for one file or every image of a folder (sorted).

    Args:
        input_dir: a file or a folder.
        suffixes: file name endings of inputs (the overlay's ``image_suffixes``).
        task: the task's name, for the messages.

    Label files in the folder (``*_gt.nii.gz``, RIM-ONE ``-Disc-``/``-Cup-`` masks) are skipped and
    counted in the log; anything else with another suffix is skipped and counted too.
    """
    suffixes = tuple(s.lower() for s in suffixes)
    if os.path.isfile(input_dir):
        return [{"image": input_dir}]
    if not os.path.isdir(input_dir):
        raise ConfigError(f"input_dir: {input_dir!r} is neither a file nor a folder (override it with --input_dir)")
    items, labels, other = [], 0, 0
    for name in sorted(os.listdir(input_dir)):
        path = os.path.join(input_dir, name)
        if not os.path.isfile(path) or not name.lower().endswith(suffixes):
            other += 1
        elif _is_label_file(name):
            labels += 1
        else:
            items.append({"image": path})
    if labels or other:
        logger.info("input_dir %s: %d images, skipped %d label files and %d other entries", input_dir, len(items), labels, other)
    if not items:
        raise ConfigError(f"input_dir: no {task} images ({', '.join(suffixes)}) in {input_dir!r}")
    return items


class EncodeFundusMaskd(MapTransform):
    """Map fundus labels {0 background, 1 rim, 2 cup} to the release encoding {255, 128, 0}.

    Args:
        keys: label keys.
        enabled: pass labels through unchanged when ``False`` (a config switch).
    """

    def __init__(self, keys: Any, enabled: bool = True, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.enabled = enabled
        self.lut = torch.tensor([255, 128, 0], dtype=torch.uint8)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.enabled:
            for key in self.key_iterator(d):
                label = d[key]
                index = label.as_tensor() if isinstance(label, MetaTensor) else torch.as_tensor(label)
                # convert_to_dst_type keeps the MetaTensor's metadata, which the image writer needs
                d[key] = convert_to_dst_type(self.lut[index.long()], label, dtype=torch.uint8)[0]
        return d


class SkipFailedInputs(Dataset):
    """MONAI ``Dataset`` that turns an input whose transforms fail into ``{"image": path, FAILED_KEY: reason}``.

    The reason of a ``DataError`` is its message (it names the file); any other error is logged with
    its traceback and reported by type and message. :class:`BatchInferenceEvaluator` skips such items.

    Args:
        data: inference items ``{"image": path}``.
        transform: the preprocessing.
        image_key: the key of the input file.
    """

    def __init__(self, data: Any, transform: Any = None, image_key: str = "image") -> None:
        super().__init__(data, transform)
        self.image_key = image_key

    def _transform(self, index: int) -> Any:
        try:
            return super()._transform(index)
        except Exception as err:  # one bad input must not stop the others
            path = str(self.data[index].get(self.image_key))
            found = chained_error(err, DataError)
            if found is None:
                logger.exception("unexpected error on input %s", path)
                reason = f"{path}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            else:
                reason = str(found)
            return {self.image_key: path, FAILED_KEY: reason}


class BatchInferenceEvaluator(SupervisedEvaluator):
    """``SupervisedEvaluator`` (same arguments) that skips the inputs :class:`SkipFailedInputs` marked as failed.

    A failed input is logged (file and reason) when it is met; no forward pass or postprocessing
    runs for it, so nothing is written. After the last input, if any failed, a ``DataError`` lists
    them all: the run ends with a non-zero exit status once every other prediction is written.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures: list[str] = []
        self.add_event_handler(Events.STARTED, lambda _: self.failures.clear())
        self.add_event_handler(Events.COMPLETED, self._report)

    def _iteration(self, engine: Any, batchdata: dict[str, Any]) -> dict:
        if isinstance(batchdata, Mapping) and FAILED_KEY in batchdata:
            for reason in batchdata[FAILED_KEY]:
                logger.warning("skipped input: %s", reason)
                self.failures.append(reason)
            return {}
        return super()._iteration(engine, batchdata)

    def _report(self, engine: Engine) -> None:
        if not self.failures:
            return
        total = len(self.data_loader.dataset)
        listed = "\n".join(f"  {reason}" for reason in self.failures)
        raise DataError(
            f"{len(self.failures)} of {total} inputs could not be read and got no prediction "
            f"(the other {total - len(self.failures)} were written):\n{listed}"
        )
