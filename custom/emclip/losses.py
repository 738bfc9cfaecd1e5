"""Segmentation losses for EM-CLIP."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.losses import DiceCELoss

__all__ = ["EMCLIPLoss", "view_consistency"]

CONSISTENCY_FORMS: tuple[str, ...] = ("kl", "mse")


def view_consistency(logits: torch.Tensor, form: str = "kl") -> torch.Tensor:
    """Disagreement between the predictions for two views of the same images.

    ``logits`` holds the views of each item next to each other (``2i`` and ``2i + 1``, as
    ``RepeatViewsd`` and ``list_data_collate`` lay them out). ``kl`` is the symmetric
    Kullback-Leibler divergence of the per-pixel class distributions, ``mse`` the squared
    difference of the probabilities; both are 0 for identical views. Neither side is detached:
    each view is pulled towards the other.
    """
    if logits.shape[0] % 2:
        raise ValueError(
            f"the consistency loss needs pairs of views, got a batch of {logits.shape[0]}; "
            "train with views: 2 (set by consistency_weight > 0 in train.yaml)"
        )
    first, second = logits[0::2], logits[1::2]
    if form == "kl":
        log_p, log_q = F.log_softmax(first, dim=1), F.log_softmax(second, dim=1)
        kl_pq = (log_p.exp() * (log_p - log_q)).sum(dim=1)
        kl_qp = (log_q.exp() * (log_q - log_p)).sum(dim=1)
        return 0.5 * (kl_pq + kl_qp).mean()
    if form == "mse":
        return (F.softmax(first, dim=1) - F.softmax(second, dim=1)).pow(2).sum(dim=1).mean()
    raise ValueError(f"unknown consistency form {form!r}; expected one of {CONSISTENCY_FORMS}")


class EMCLIPLoss(nn.Module):
    """Dice + cross-entropy on the logits, plus ``aux_weight`` x cross-entropy on the pixel-text
    score map (the label is downsampled to the map with nearest neighbour, so it stays a label),
    plus ``consistency_weight`` x :func:`view_consistency` of the logits of paired views.

    Args:
        aux_weight: weight of the score-map term; 0 disables it.
        lambda_dice: weight of the Dice term. lambda_ce: weight of the cross-entropy term.
        include_background: include the background class in the Dice term.
        consistency_weight: weight of the two-view consistency term; 0 disables it (the batch
            must then hold pairs of views of the same items, see ``RepeatViewsd``).
        consistency: its form, ``kl`` or ``mse``.
    """

    def __init__(
        self,
        aux_weight: float = 0.4,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        include_background: bool = False,
        consistency_weight: float = 0.0,
        consistency: str = "kl",
    ):
        super().__init__()
        if consistency not in CONSISTENCY_FORMS:
            raise ValueError(f"unknown consistency form {consistency!r}; expected one of {CONSISTENCY_FORMS}")
        self.aux_weight = aux_weight
        self.consistency_weight = consistency_weight
        self.consistency = consistency
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
        logits = pred if isinstance(pred, torch.Tensor) else pred["pred"]
        loss = self.main(logits, target)
        score = None if isinstance(pred, torch.Tensor) else pred.get("score_map")
        if score is not None and self.aux_weight > 0:
            small = F.interpolate(target.float(), size=score.shape[-2:], mode="nearest")
            loss = loss + self.aux_weight * F.cross_entropy(score, small[:, 0].long())
        if self.consistency_weight > 0:
            loss = loss + self.consistency_weight * view_consistency(logits, self.consistency)
        return loss
