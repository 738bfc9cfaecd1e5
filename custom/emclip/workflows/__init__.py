"""Glue for the MONAI bundle configs: configuration checks, checkpoints and resume, optimiser
parameter groups and LR schedule, progress logging and inference input/output."""

from emclip.workflows.checks import check_checkpoint, check_dataset_dir, select_splits
from emclip.workflows.checkpoints import EpochCheckpoints, SourceValidation, last_checkpoint
from emclip.workflows.io import EncodeFundusMaskd, list_inputs, original_label
from emclip.workflows.optim import PARTS, network_part, no_weight_decay, param_groups, warmup_cosine
from emclip.workflows.progress import ProgressLogger

__all__ = [
    "check_checkpoint",
    "check_dataset_dir",
    "select_splits",
    "last_checkpoint",
    "EpochCheckpoints",
    "SourceValidation",
    "EncodeFundusMaskd",
    "list_inputs",
    "original_label",
    "ProgressLogger",
    "PARTS",
    "network_part",
    "no_weight_decay",
    "param_groups",
    "warmup_cosine",
]
