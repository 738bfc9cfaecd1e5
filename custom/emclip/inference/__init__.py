"""Test-time steps of the inference and evaluation workflows: mirroring ensemble (TTA), TENT,
disc-centred two-pass refinement for fundus, anatomy-aware post-processing and uncertainty.
Each step is a config value of ``evaluate.yaml`` and ``inference.yaml``; all are off by default.
"""

from emclip.inference.inferer import TestTimeInferer
from emclip.inference.postprocess import STEPS, TASK_STEPS, AnatomyPostprocessd, check_steps, fill_holes, largest_component, postprocess
from emclip.inference.refine import DiscRefiner, disc_fraction, measure_disc_fraction
from emclip.inference.tent import entropy, norm_layers, tent_adaptation
from emclip.inference.tta import flip_combinations, flip_ensemble
from emclip.inference.uncertainty import PredictiveEntropyd, predictive_entropy, uncertainty_outputs, uncertainty_scores

__all__ = [
    "STEPS",
    "TASK_STEPS",
    "AnatomyPostprocessd",
    "DiscRefiner",
    "PredictiveEntropyd",
    "TestTimeInferer",
    "check_steps",
    "disc_fraction",
    "entropy",
    "fill_holes",
    "flip_combinations",
    "flip_ensemble",
    "largest_component",
    "measure_disc_fraction",
    "norm_layers",
    "postprocess",
    "predictive_entropy",
    "tent_adaptation",
    "uncertainty_outputs",
    "uncertainty_scores",
]
