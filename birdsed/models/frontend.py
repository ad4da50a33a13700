"""The log-mel front-end every timm-backbone model starts with (BirdNET's own is in :mod:`birdsed.models.birdnet_port`):
part of the model, so its filterbank travels inside checkpoints and exports."""

from __future__ import annotations

from typing import TYPE_CHECKING

import librosa
import torch
from torch import nn

if TYPE_CHECKING:
    from birdsed.config import AudioConfig


class MelFrontend(nn.Module):
    """Log-mel spectrogram of batched waveforms on whatever device they are on.

    A centred ``torch.stft`` with a periodic Hann window and librosa's Slaney mel filterbank, so the output equals
    ``librosa.power_to_db(librosa.feature.melspectrogram(...), ref=1.0, top_db=...)`` (``top_db`` relative to each
    spectrogram's own maximum), followed by an optional per-spectrogram normalisation. The filterbank and window
    are buffers, so they travel inside the model's checkpoint.
    """

    def __init__(
        self,
        sample_rate: int = 32000,
        n_fft: int = 2048,
        hop_length: int = 512,
        n_mels: int = 128,
        fmin: float = 40.0,
        fmax: float = 15000.0,
        power: float = 2.0,
        top_db: float | None = 80.0,
        normalize: str = "standard",
        amin: float = 1e-10,
    ) -> None:
        super().__init__()
        if normalize not in ("none", "standard", "minmax"):
            raise ValueError(f"unknown normalisation {normalize!r}")
        self.n_fft, self.hop_length, self.n_mels = n_fft, hop_length, n_mels
        self.power, self.top_db, self.normalize, self.amin = power, top_db, normalize, amin
        fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)  # (M, F)
        self.register_buffer("mel_fb", torch.from_numpy(fb.T.copy()))  # (F, M)
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True))

    @classmethod
    def from_config(cls, audio: AudioConfig) -> MelFrontend:
        """Build the front-end described by an ``audio`` config section."""
        return cls(
            sample_rate=audio.sample_rate,
            n_fft=audio.n_fft,
            hop_length=audio.hop_length,
            n_mels=audio.n_mels,
            fmin=audio.fmin,
            fmax=audio.fmax,
            power=audio.power,
            top_db=audio.top_db,
            normalize=audio.normalize,
        )

    def power_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """Mel power spectrogram. wave (B, N) → (B, n_mels, T) with T = 1 + N // hop_length."""
        window = self.window.to(wave.dtype)
        spec = torch.stft(
            wave, self.n_fft, self.hop_length, window=window, center=True, pad_mode="constant", return_complex=True
        )  # (B, F, T)
        mag = spec.real.square() + spec.imag.square()  # (B, F, T) power
        if self.power != 2.0:
            mag = mag.pow(self.power / 2.0)
        return torch.matmul(mag.transpose(1, 2), self.mel_fb.to(mag.dtype)).transpose(1, 2)  # (B, M, T)

    def to_db(self, mel: torch.Tensor) -> torch.Tensor:
        """Mel power (B, n_mels, T) → normalised log-mel (B, 1, n_mels, T) (``top_db`` per spectrogram)."""
        db = 10.0 * torch.log10(mel.clamp_min(self.amin))  # ref = 1.0
        if self.top_db is not None:
            db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - self.top_db)
        if self.normalize == "standard":
            mean = db.mean(dim=(1, 2), keepdim=True)
            std = db.std(dim=(1, 2), keepdim=True)
            db = (db - mean) / (std + 1e-6)
        elif self.normalize == "minmax":
            lo = db.amin(dim=(1, 2), keepdim=True)
            hi = db.amax(dim=(1, 2), keepdim=True)
            db = (db - lo) / (hi - lo + 1e-6)
        return db.unsqueeze(1)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """wave (B, N) or (B, 1, N) → log-mel (B, 1, n_mels, T)."""
        if wave.dim() == 3:
            wave = wave.squeeze(1)
        with torch.autocast(device_type=wave.device.type, enabled=False):  # the STFT stays in full precision
            wave = wave if wave.dtype == torch.float64 else wave.float()
            return self.to_db(self.power_mel(wave))
