"""Segmentation losses for EM-CLIP."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.losses import DiceCELoss

__all__ = ["EMCLIPLoss"]


class EMCLIPLoss(nn.Module):
    """Dice + cross-entropy on the logits, plus ``aux_weight`` x cross-entropy on the pixel-text
    score map (the label is downsampled to the map with nearest neighbour, so it stays a label).

    Args:
        aux_weight: weight of the score-map term; 0 disables it.
        lambda_dice: weight of the Dice term. lambda_ce: weight of the cross-entropy term.
        include_background: include the background class in the Dice term.
    """

    def __init__(
        self, aux_weight: float = 0.4, lambda_dice: float = 1.0, lambda_ce: float = 1.0, include_background: bool = False
    ):
        super().__init__()
        self.aux_weight = aux_weight
        self.main = DiceCELoss(
            include_background=include_background,
            to_onehot_y=True,
            softmax=True,
            lambda_dice=lambda_dice,
            lambda_ce=lambda_ce,
        )

    def forward(self, pred: torch.Tensor | dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """``pred``: logits ``(B, C, H, W)`` or the training dict of :class:`EMCLIP`;
        ``target``: label map ``(B, 1, H, W)``."""
        if isinstance(pred, torch.Tensor):
            return self.main(pred, target)
        loss = self.main(pred["pred"], target)
        score = pred.get("score_map")
        if score is not None and self.aux_weight > 0:
            small = F.interpolate(target.float(), size=score.shape[-2:], mode="nearest")
            loss = loss + self.aux_weight * F.cross_entropy(score, small[:, 0].long())
        return loss
