"""The Sound-Event-Detection model: mel front-end → timm backbone → frequency pooling → attention pooling.

Returns logits (not probabilities) so mixed precision stays safe: ``{"clip_logits": (B, C), "frame_logits":
(B, T', C)}``, T' being the backbone's time resolution (T / 32 for EfficientNets).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GeMFreq(nn.Module):
    """Generalised-mean pooling over the frequency axis: (B, C, F, T) → (B, C, T)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(p))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp_min(self.eps).pow(self.p).mean(dim=2).pow(1.0 / self.p)


class AttentionHead(nn.Module):
    """PANNs-style attention pooling: per-frame class logits weighted by a softmax attention over time."""

    def __init__(self, in_features: int, n_classes: int, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, in_features)
        self.dropout = nn.Dropout(dropout)
        self.att = nn.Conv1d(in_features, n_classes, kernel_size=1)
        self.cla = nn.Conv1d(in_features, n_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (B, C, T') → clip logits (B, n_classes), frame logits (B, T', n_classes)."""
        # smooth over neighbouring frames, as PANNs do, so one-frame spikes do not dominate
        x = F.max_pool1d(x, 3, 1, 1) + F.avg_pool1d(x, 3, 1, 1)  # (B, C, T')
        x = self.dropout(x)
        x = F.relu(self.fc(x.transpose(1, 2))).transpose(1, 2)  # (B, C, T')
        x = self.dropout(x)
        weights = torch.softmax(torch.tanh(self.att(x)), dim=-1)  # (B, K, T')
        frame = self.cla(x)  # (B, K, T') logits
        clip = (weights * frame).sum(dim=-1)  # (B, K)
        return {"clip_logits": clip, "frame_logits": frame.transpose(1, 2)}


class PlainAttentionHead(nn.Module):
    """Attention pooling straight on the backbone's frames: no PANNs smoothing or hidden layer in between.

    For a pre-trained backbone whose classifier already reads these features (BirdNET): with its classifier rows in
    ``cla`` and ``att`` at zero (uniform attention), the clip logits are that classifier on the mean frame, which
    is BirdNET's own output for a 3-s input.
    """

    def __init__(self, in_features: int, n_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.att = nn.Conv1d(in_features, n_classes, kernel_size=1)
        self.cla = nn.Conv1d(in_features, n_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (B, C, T') → clip logits (B, n_classes), frame logits (B, T', n_classes)."""
        x = self.dropout(x)
        weights = torch.softmax(torch.tanh(self.att(x)), dim=-1)  # (B, K, T')
        frame = self.cla(x)  # (B, K, T') logits
        return {"clip_logits": (weights * frame).sum(dim=-1), "frame_logits": frame.transpose(1, 2)}


class ClipHead(nn.Module):
    """The ablation baseline: global pooling and one linear classifier (frame logits from the same classifier)."""

    def __init__(self, in_features: int, n_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, n_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (B, C, T') → clip logits (B, n_classes), frame logits (B, T', n_classes)."""
        pooled = x.mean(dim=-1) + x.amax(dim=-1)  # (B, C)
        return {
            "clip_logits": self.fc(self.dropout(pooled)),
            "frame_logits": self.fc(x.transpose(1, 2)),  # (B, T', K)
        }


class MeanMaxFreq(nn.Module):
    """Mean plus max over the frequency axis: (B, C, F, T) → (B, C, T) (no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=2) + x.amax(dim=2)


class MeanFreq(nn.Module):
    """Mean over the frequency axis: (B, C, F, T) → (B, C, T) (BirdNET's global pooling, split from its time axis)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=2)


def clip_frame_blend(clip, frame_max, clip_weight: float):
    """A window's score as validation and ``birdsed infer`` both make it: ``clip_weight`` × the clip output +
    (1 - ``clip_weight``) × the max over the window's frames; arrays or tensors of one shape, (B, C)."""
    return clip if clip_weight >= 1.0 else clip_weight * clip + (1.0 - clip_weight) * frame_max


# what ``model.head`` / ``model.freq_pool`` may name; the config schema reads these (a new option is added here only)
HEADS: dict[str, type[nn.Module]] = {"sed": AttentionHead, "attention": PlainAttentionHead, "clip": ClipHead}
FREQ_POOLS: dict[str, type[nn.Module]] = {"meanmax": MeanMaxFreq, "gem": GeMFreq, "mean": MeanFreq}


class SEDModel(nn.Module):
    """Waveform (or log-mel) in, clip- and frame-level logits out.

    Args:
        frontend: the spectrogram front-end (its buffers are part of this model's state dict): a
            :class:`~birdsed.models.frontend.MelFrontend`, or BirdNET's own for the ``birdnet_v24`` backbone.
        backbone: a timm model with ``forward_features`` and ``num_features``.
        n_classes: output classes.
        head: a name in :data:`HEADS`: ``sed`` (PANNs attention pooling), ``attention`` (attention pooling
            straight on the frames) or ``clip`` (global pooling baseline).
        freq_pool: a name in :data:`FREQ_POOLS`: ``meanmax`` (mean + max over frequency), ``gem`` or ``mean``.
        dropout: dropout inside the head.
    """

    def __init__(
        self,
        frontend: nn.Module,
        backbone: nn.Module,
        n_classes: int,
        head: str = "sed",
        freq_pool: str = "meanmax",
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        self.frontend = frontend
        self.backbone = backbone
        self.freq_pool = FREQ_POOLS[freq_pool]()
        self.head = HEADS[head](int(backbone.num_features), n_classes, dropout)
        self.n_classes = n_classes
        self.channels_last = False  # set by build_model: feed the backbone channels-last (≈1.6x faster on CPU)

    def forward_mel(self, mel: torch.Tensor, embedding: bool = False) -> dict[str, torch.Tensor]:
        """mel (B, 1, n_mels, T) (BirdNET's: (B, 2, 96, T)) → {"clip_logits": (B, K), "frame_logits": (B, T', K)},
        and with `embedding` ``"embedding"`` (B, C): the pooled features the head reads, averaged over time."""
        if self.channels_last:
            mel = mel.contiguous(memory_format=torch.channels_last)
        x = self.backbone.forward_features(mel)  # (B, C, F', T')
        x = self.freq_pool(x)  # (B, C, T')
        out = self.head(x)
        if embedding:
            out["embedding"] = x.mean(dim=-1)  # (B, C)
        return out

    def forward(self, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        """wave (B, N) → {"clip_logits": (B, K), "frame_logits": (B, T', K)}."""
        return self.forward_mel(self.frontend(wave))  # mel (B, 1, n_mels, T)
