"""Expectation-Maximization aggregation of dense features into a few semantic bases."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["EMAggregation"]


class EMAggregation(nn.Module):
    """Cluster pixel features into ``K`` unit-norm bases with ``T`` EM steps, rebuild them from the
    bases and add the result back (the idea of EMANet's EMAU, ICCV 2019).

    E-step: responsibilities ``z = softmax(x^T mu / tau)`` over the K bases for every pixel.
    M-step: each basis is the responsibility-weighted mean of the pixels, L2-normalised.
    Reconstruction: ``x' = mu z^T``, projected and added to the input (residual).

    What is detached, and why: the EM iterations run without autograd, so ``mu`` is a clustering
    statistic rather than a learned parameter (back-propagating through repeated softmax-and-mean
    steps is unstable and costs memory per step). The last E-step is recomputed with autograd, so
    the features that are clustered still learn from the reconstruction through ``z``. Between
    batches the bases follow a moving average of the batch bases, in training mode with autograd on
    only (training mode under ``no_grad`` is a Monte Carlo dropout pass, which must not move them).

    Args:
        channels: feature channels.
        num_bases: K, the number of bases.
        iterations: T, the number of EM steps.
        temperature: tau of the E-step softmax.
        momentum: weight of the old bases in the moving average.
        init_bases: optional ``(k, channels)`` tensor seeding the first ``k <= K`` bases (e.g. class
            text embeddings in the joint space); the rest start random, as in EMANet.
    """

    def __init__(
        self,
        channels: int,
        num_bases: int = 64,
        iterations: int = 3,
        temperature: float = 1.0,
        momentum: float = 0.9,
        init_bases: torch.Tensor | None = None,
    ):
        super().__init__()
        if num_bases < 1 or iterations < 1 or temperature <= 0 or not 0 <= momentum < 1:
            raise ValueError("need num_bases >= 1, iterations >= 1, temperature > 0 and 0 <= momentum < 1")
        self.iterations = iterations
        self.temperature = temperature
        self.momentum = momentum
        bases = torch.randn(num_bases, channels) * (2.0 / num_bases) ** 0.5
        if init_bases is not None:
            if init_bases.ndim != 2 or init_bases.shape[1] != channels or init_bases.shape[0] > num_bases:
                raise ValueError(
                    f"init_bases must be (k <= {num_bases}, {channels}), got {tuple(init_bases.shape)}"
                )
            bases[: init_bases.shape[0]] = init_bases
        self.register_buffer("bases", F.normalize(bases, dim=1))
        self.conv_in = nn.Conv2d(channels, channels, 1)
        self.conv_out = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
        # Zero-init the output norm: the block starts as identity and does not disturb the backbone.
        nn.init.zeros_(self.conv_out[1].weight)

    def e_step(self, x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        """Responsibilities ``(B, N, K)`` of the bases ``mu (B, C, K)`` for pixels ``x (B, C, N)``."""
        return torch.softmax(torch.bmm(x.transpose(1, 2), mu) / self.temperature, dim=2)

    @staticmethod
    def m_step(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Bases ``(B, C, K)``: responsibility-weighted pixel means, L2-normalised over C."""
        z = z / (z.sum(dim=1, keepdim=True) + 1e-6)
        return F.normalize(torch.bmm(x, z), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        feats = self.conv_in(x).flatten(2)
        mu = self.bases.t().unsqueeze(0).expand(b, -1, -1)
        with torch.no_grad():
            for _ in range(self.iterations):
                mu = self.m_step(feats, self.e_step(feats, mu))
        z = self.e_step(feats, mu)
        if self.training and torch.is_grad_enabled():  # not in Monte Carlo dropout passes (no_grad)
            with torch.no_grad():
                batch_bases = F.normalize(mu.mean(dim=0).t(), dim=1)
                self.bases.mul_(self.momentum).add_(batch_bases, alpha=1 - self.momentum)
                self.bases.copy_(F.normalize(self.bases, dim=1))
        rebuilt = torch.bmm(mu, z.transpose(1, 2)).reshape(b, c, h, w)
        # No ReLU after the residual (unlike EMAU): the output is compared with text embeddings by
        # cosine similarity, which needs signed features.
        return x + self.conv_out(rebuilt)
