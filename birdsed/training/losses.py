"""Loss registry: ``bce``, ``focal``, ``focal_bce`` (2nd place BirdCLEF 2025), ``ce`` with soft targets (1st place).

Every loss maps logits (B, C), targets (B, C) in [0, 1] and optional per-sample weights (B,) to a scalar: the
weighted mean over the batch of each sample's loss (mean over classes for the binary losses).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # type hints only: the config schema reads LOSSES, so no import of it at run time
    from birdsed.config import TrainConfig


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def _reduce(per_sample: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return per_sample.mean()
    weights = weights.to(per_sample.dtype)
    return (per_sample * weights).sum() / weights.sum().clamp_min(1e-12)


def label_smooth(targets: torch.Tensor, eps: float) -> torch.Tensor:
    """Binary label smoothing: 1 → 1 - eps/2, 0 → eps/2."""
    return targets * (1 - eps) + eps / 2 if eps > 0 else targets


def bce(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None, eps: float = 0.0):
    """Binary cross-entropy with logits, mean over classes, weighted mean over samples."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), label_smooth(targets.float(), eps), reduction="none")
    return _reduce(loss.mean(dim=1), weights)


def focal(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor | None = None,
    gamma: float = 2.0,
    eps: float = 0.0,
) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al.) for soft targets: BCE scaled by |target - p|^gamma; gamma=0 is BCE."""
    logits, targets = logits.float(), label_smooth(targets.float(), eps)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p = torch.sigmoid(logits)
    loss = ce * (targets - p).abs().pow(gamma)
    return _reduce(loss.mean(dim=1), weights)


def focal_bce(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor | None = None,
    gamma: float = 2.0,
    focal_weight: float = 1.0,
    bce_weight: float = 1.0,
    eps: float = 0.0,
) -> torch.Tensor:
    """focal_weight · focal + bce_weight · BCE."""
    return focal_weight * focal(logits, targets, weights, gamma, eps) + bce_weight * bce(logits, targets, weights, eps)


def ce(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None, eps: float = 0.0):
    """Softmax cross-entropy against soft targets normalised to sum 1 (multi-label rows share the mass).

    Rows without any positive (pure noise) contribute nothing rather than a uniform target.
    """
    logits, targets = logits.float(), targets.float()
    mass = targets.sum(dim=1, keepdim=True)
    dist = targets / mass.clamp_min(1e-12)
    if eps > 0:
        dist = dist * (1 - eps) + eps / targets.shape[1]
    per_sample = -(dist * F.log_softmax(logits, dim=1)).sum(dim=1) * (mass.squeeze(1) > 0)
    return _reduce(per_sample, weights)


LOSSES: dict[str, Callable[..., torch.Tensor]] = {"bce": bce, "focal": focal, "focal_bce": focal_bce, "ce": ce}


SOFTMAX_LOSSES = frozenset({"ce"})  # trained over the classes as one distribution; the others per class


def activation(loss: str) -> str:
    """How a model trained with `loss` turns logits into scores: ``softmax`` (CE) or ``sigmoid`` (the others)."""
    return "softmax" if loss in SOFTMAX_LOSSES else "sigmoid"


def build_loss(train: TrainConfig) -> LossFn:
    """The configured loss with its hyper-parameters bound."""
    fn = LOSSES[train.loss]
    kwargs: dict[str, float] = {"eps": train.label_smoothing}
    if train.loss in ("focal", "focal_bce"):
        kwargs["gamma"] = train.focal_gamma
    if train.loss == "focal_bce":
        kwargs.update(focal_weight=train.focal_weight, bce_weight=train.bce_weight)
    return partial(fn, **kwargs)
