"""Test-time steps of the inference and evaluation workflows: mirroring and intensity ensembles
(TTA), AdaBN, TENT, structure-centred two-pass refinement for 2D images, anatomy-aware
post-processing and uncertainty. Each step is a config value of ``evaluate.yaml`` and ``inference.yaml`` or of the task
overlay; those files switch every step off, and a task overlay switches on the ones chosen on its
source validation split.
"""

from emclip.inference.inferer import TestTimeInferer, supports_refine
from emclip.inference.postprocess import FillLabelHolesd, KeepLargestInsided, KeepNearLabeld, fill_holes, largest_component
from emclip.inference.refine import DiscRefiner, disc_fraction, measure_disc_fraction
from emclip.inference.tent import case_statistics, entropy, norm_layers, tent_adaptation
from emclip.inference.tta import check_gammas, flip_combinations, flip_ensemble, gamma_ensemble
from emclip.inference.uncertainty import EIGHT_BIT_EXTS, PredictiveEntropyd, predictive_entropy, uncertainty_outputs, uncertainty_scores

__all__ = [
    "DiscRefiner",
    "EIGHT_BIT_EXTS",
    "FillLabelHolesd",
    "KeepLargestInsided",
    "KeepNearLabeld",
    "PredictiveEntropyd",
    "TestTimeInferer",
    "case_statistics",
    "check_gammas",
    "disc_fraction",
    "entropy",
    "fill_holes",
    "flip_combinations",
    "flip_ensemble",
    "gamma_ensemble",
    "largest_component",
    "measure_disc_fraction",
    "norm_layers",
    "predictive_entropy",
    "supports_refine",
    "tent_adaptation",
    "uncertainty_outputs",
    "uncertainty_scores",
]
