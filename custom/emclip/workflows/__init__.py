"""Glue for the MONAI bundle configs: configuration checks, checkpoints and resume, weight averaging, optimiser
parameter groups and LR schedule, progress logging (on rank 0 of a distributed run) and inference input/output."""

from emclip.workflows.averaging import WeightAverage
from emclip.workflows.checks import check_checkpoint, check_command_line, check_dataset_dir, check_metadata, check_task, select_splits
from emclip.workflows.checkpoints import AtomicCheckpointSaver, EpochCheckpoints, SourceValidation, last_checkpoint, save_atomic
from emclip.workflows.errors import bundle_message, install_excepthook
from emclip.workflows.io import BatchInferenceEvaluator, EncodeFundusMaskd, SkipFailedInputs, list_inputs
from emclip.workflows.optim import PARTS, network_part, no_weight_decay, param_groups, warmup_cosine
from emclip.workflows.progress import ProgressLogger
from emclip.workflows.ranks import LOGGING_HANDLERS, is_rank_zero, rank_zero_handlers

__all__ = [
    "check_checkpoint",
    "check_command_line",
    "check_dataset_dir",
    "check_metadata",
    "check_task",
    "select_splits",
    "last_checkpoint",
    "AtomicCheckpointSaver",
    "EpochCheckpoints",
    "save_atomic",
    "SourceValidation",
    "BatchInferenceEvaluator",
    "EncodeFundusMaskd",
    "SkipFailedInputs",
    "list_inputs",
    "ProgressLogger",
    "LOGGING_HANDLERS",
    "is_rank_zero",
    "rank_zero_handlers",
    "bundle_message",
    "install_excepthook",
    "PARTS",
    "network_part",
    "no_weight_decay",
    "param_groups",
    "warmup_cosine",
    "WeightAverage",
]
