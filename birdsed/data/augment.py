"""Augmentations: waveform ones in the loader (gain, time shift, background noise), MixUp and SpecAugment on the
device, and the albumentations spectrogram pipeline for the loader-side front-end mode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torchaudio.functional as AF

if TYPE_CHECKING:  # type hints only
    from birdsed.config import AugmentConfig


def random_gain(wave: np.ndarray, rng: np.random.Generator, max_db: float) -> np.ndarray:
    """Scale by a gain drawn uniformly in [-max_db, +max_db] dB."""
    if max_db <= 0:
        return wave
    return wave * np.float32(10 ** (rng.uniform(-max_db, max_db) / 20))


def time_shift(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Circular shift by a random number of samples (the call moves within the crop)."""
    return np.roll(wave, int(rng.integers(0, len(wave))))


def add_background(wave: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Mix `noise` under `wave` at `snr_db` (RMS ratio); silent inputs are returned unchanged."""
    p_sig = float(np.mean(wave.astype(np.float64) ** 2))
    p_noise = float(np.mean(noise.astype(np.float64) ** 2))
    if p_sig == 0 or p_noise == 0:
        return wave
    scale = np.sqrt(p_sig / (p_noise * 10 ** (snr_db / 10)))
    return (wave + scale * noise).astype(np.float32)


def mixup(
    wave: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    cfg: AugmentConfig,
    generator: torch.Generator | None = None,
    alone: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MixUp inside a batch: each sample, with probability ``mixup_prob``, is mixed with a random partner.

    The partner's share w is ``mixup_weight`` when > 0 (1st place: constant 0.5) else min(λ, 1-λ) with
    λ ~ Beta(α, α). Waveforms and sample weights mix linearly (a mixture with a weight-0 sample keeps weight 0);
    targets by ``max``, ``sum_clip`` or ``weighted``.

    Args:
        wave: (B, N) waveforms (or (B, 1, M, T) spectrograms in the loader-side mode).
        targets: (B, C) in [0, 1].
        weights: (B,) per-sample loss weights.
        alone: (B,) bool, samples that are neither mixed nor a partner (``augment.mixup_soundscapes=false``).

    Returns:
        mixed wave, targets, weights with the input shapes.
    """
    b = wave.shape[0]
    if b < 2 or cfg.mixup_prob <= 0:
        return wave, targets, weights
    dev = wave.device
    perm = torch.randperm(b, generator=generator).to(dev)
    on = (torch.rand(b, generator=generator) < cfg.mixup_prob).to(dev)
    if cfg.mixup_weight > 0:
        share = torch.full((b,), cfg.mixup_weight, device=dev)
    else:
        lam = torch.distributions.Beta(cfg.mixup_alpha, cfg.mixup_alpha).sample((b,)).to(dev)
        share = torch.minimum(lam, 1 - lam)
    on = on & (perm != torch.arange(b, device=dev))
    if alone is not None:
        alone = alone.to(dev)
        on = on & ~alone & ~alone[perm]
    share = torch.where(on, share, torch.zeros_like(share))
    s = share.view(-1, *([1] * (wave.dim() - 1))).to(wave.dtype)
    wave = (1 - s) * wave + s * wave[perm]
    partner = targets[perm]
    mixed = share.view(-1, 1) > 0
    if cfg.mixup_targets == "max":
        new_t = torch.where(mixed, torch.maximum(targets, partner), targets)
    elif cfg.mixup_targets == "sum_clip":
        new_t = torch.where(mixed, (targets + partner).clamp(max=1.0), targets)
    else:
        w = share.view(-1, 1).to(targets.dtype)
        new_t = (1 - w) * targets + w * partner
    new_w = (1 - share) * weights + share * weights[perm]
    # a window without labels (weight 0: a distillation window) makes its mixture unlabelled too: its calls would
    # otherwise count as negatives of the partner's target
    unlabelled = (weights == 0) | ((weights[perm] == 0) & on)
    return wave, new_t, torch.where(unlabelled, torch.zeros_like(new_w), new_w)


def spec_augment(mel: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """SpecAugment-style masks, independent per sample, on whatever device `mel` (B, 1, M, T) is on.

    Masked cells take the spectrogram's mean, so standardised inputs see zeros.
    """
    fill = float(mel.mean())
    for _ in range(cfg.spec_time_masks):
        if cfg.spec_time_mask_frames > 0:
            mel = AF.mask_along_axis_iid(mel, cfg.spec_time_mask_frames, fill, axis=3)
    for _ in range(cfg.spec_freq_masks):
        if cfg.spec_freq_mask_bins > 0:
            mel = AF.mask_along_axis_iid(mel, cfg.spec_freq_mask_bins, fill, axis=2)
    return mel


def loader_spec_transform(cfg: AugmentConfig):
    """albumentations pipeline applied to (M, T) float32 spectrograms in DataLoader workers (``spec_on=loader``).

    Time/frequency masks (XYMasking: x is time, y is frequency), the CPU counterpart of :func:`spec_augment`.
    Value-changing albumentations transforms (noise, brightness) are left out: they clip float images to [0, 1],
    which would destroy standardised log-mels.
    """
    import albumentations as A

    masks = A.XYMasking(
        num_masks_x=(0, cfg.spec_time_masks),
        mask_x_length=(1, max(1, cfg.spec_time_mask_frames)),
        num_masks_y=(0, cfg.spec_freq_masks),
        mask_y_length=(1, max(1, cfg.spec_freq_mask_bins)),
        fill=0.0,
        p=0.8,
    )
    return A.Compose([masks])
