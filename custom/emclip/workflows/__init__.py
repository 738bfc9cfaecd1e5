"""Glue for the MONAI bundle configs: configuration checks, checkpoints and resume, optimiser
parameter groups and LR schedule, progress logging and inference input/output."""

from emclip.workflows.checks import check_checkpoint, check_dataset_dir, check_metadata, check_task, select_splits
from emclip.workflows.checkpoints import AtomicCheckpointSaver, EpochCheckpoints, SourceValidation, last_checkpoint, save_atomic
from emclip.workflows.errors import bundle_message, install_excepthook
from emclip.workflows.io import BatchInferenceEvaluator, EncodeFundusMaskd, SkipFailedInputs, list_inputs
from emclip.workflows.optim import PARTS, network_part, no_weight_decay, param_groups, warmup_cosine
from emclip.workflows.progress import ProgressLogger

__all__ = [
    "check_checkpoint",
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
    "bundle_message",
    "install_excepthook",
    "PARTS",
    "network_part",
    "no_weight_decay",
    "param_groups",
    "warmup_cosine",
]
