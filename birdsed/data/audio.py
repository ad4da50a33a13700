"""Decode any audio file to mono float32 at the configured rate, crop it, and turn waveforms into log-mels.

Decoding uses soundfile (ogg/flac/wav/mp3, any channel count) and resampling soxr; both stream in blocks so a
two-hour file never sits in memory whole. :class:`MelFrontend` is an ``nn.Module`` that lives inside the model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
import soxr

from birdsed.errors import BirdsedError

if TYPE_CHECKING:  # type hints only
    pass

log = logging.getLogger(__name__)
AUDIO_EXTENSIONS = (".ogg", ".flac", ".wav", ".mp3", ".oga")


class AudioError(BirdsedError, ValueError):
    """An audio file cannot be used; the message names the file and what is wrong with it."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def list_audio(folder: str | Path) -> list[Path]:
    """Audio files directly inside `folder` (sorted); an absent folder gives an empty list. A dangling link with an
    audio name is listed (its reader then names it as missing: a fallback in inference, a skip in prepare), never
    silently left out."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS and (p.is_file() or _dangling(p)))


def _dangling(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


MIN_SAMPLE_RATE = 1000  # Hz: below it a file is no sound recording (and resampling it would blow it up)


def audio_info(path: str | Path) -> sf._SoundFileInfo:
    """Header of an audio file (sample rate, frames, channels) without decoding it."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "a link to a file that does not exist" if _dangling(path) else "file not found")
    if path.stat().st_size == 0:
        raise AudioError(path, "file is empty (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception as err:  # soundfile raises LibsndfileError/RuntimeError/TypeError by format
        raise AudioError(path, f"not a readable audio file ({_short(err)})") from None
    if info.frames <= 0:
        raise AudioError(path, "contains no audio samples")
    if info.samplerate < MIN_SAMPLE_RATE:  # resampled to 32 kHz, an 8-Hz file of 400 kB would become 1.5 GB
        raise AudioError(path, f"sample rate {info.samplerate} Hz is below {MIN_SAMPLE_RATE} Hz: not a recording")
    return info


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[-1] if text else type(err).__name__


def iter_blocks(
    path: str | Path, sample_rate: int, block_seconds: float = 30.0, repair: bool = False
) -> Iterator[np.ndarray]:
    """Decode `path` block by block as mono float32 at `sample_rate`; memory is bounded by the block size.

    Args:
        repair: NaN/infinite samples become silence, with a warning naming the file and the seconds affected
            (inference: one bad stretch must not cost the whole file); otherwise they are an error (training).

    Yields:
        1-D float32 arrays whose concatenation is the whole resampled file.

    Raises:
        AudioError: unreadable, empty, truncated mid-stream, NaN/infinite samples (unless `repair`).
    """
    info = audio_info(path)
    sr_in = int(info.samplerate)
    block = max(1, int(block_seconds * sr_in))
    resampler = None if sr_in == sample_rate else soxr.ResampleStream(sr_in, sample_rate, 1, dtype="float32")
    try:
        handle = sf.SoundFile(str(path))
    except Exception as err:
        raise AudioError(path, f"not a readable audio file ({_short(err)})") from None
    with handle:
        offset = 0  # samples read so far, at the file's own rate
        while True:
            try:
                data = handle.read(block, dtype="float32", always_2d=True)  # (n, channels)
            except Exception as err:
                raise AudioError(path, f"decoding failed part-way, file truncated or corrupt ({_short(err)})") from None
            last = len(data) < block
            bad = ~np.isfinite(data).all(axis=1)
            if bad.any():
                if not repair:
                    raise AudioError(path, "contains NaN or infinite samples")
                where = np.flatnonzero(bad)
                log.warning(
                    "%s: %d non-finite sample(s) between %.2f s and %.2f s replaced by silence",
                    path,
                    len(where),
                    (offset + where[0]) / sr_in,
                    (offset + where[-1] + 1) / sr_in,
                )
                data[bad] = 0.0
            offset += len(data)
            mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
            if resampler is not None:
                mono = resampler.resample_chunk(np.ascontiguousarray(mono), last=last)
            if len(mono):
                yield mono.astype(np.float32, copy=False)
            if last:
                break


def load_audio(path: str | Path, sample_rate: int = 32000, repair: bool = False) -> np.ndarray:
    """Decode a whole file to a mono float32 waveform at `sample_rate`, shape (n_samples,).

    Raises:
        AudioError: as :func:`iter_blocks` (`repair` as there), and for files that decode to no samples.
    """
    blocks = list(iter_blocks(path, sample_rate, repair=repair))
    if not blocks:
        raise AudioError(path, "decodes to no audio samples")
    return np.concatenate(blocks) if len(blocks) > 1 else blocks[0]


# ---- crops ----------------------------------------------------------------------------------------------------------


def crop_start(n_samples: int, length: int, mode: str, rng: np.random.Generator, first: int = 0) -> int:
    """Start sample of a crop of `length` from a clip of `n_samples`.

    Modes: ``first`` (0), ``center``, ``random`` (uniform over the clip), ``first_random`` (uniform inside the
    first `first` samples: the 2nd place of BirdCLEF 2025 took random 5 s out of the first 7 s, where the
    recordist's target is most often calling). Clips shorter than the crop start at 0.
    """
    if n_samples <= length or mode == "first":
        return 0
    if mode == "center":
        return (n_samples - length) // 2
    if mode == "random":
        return int(rng.integers(0, n_samples - length + 1))
    if mode == "first_random":
        hi = min(n_samples, max(first, length)) - length
        return int(rng.integers(0, hi + 1))
    raise ValueError(f"unknown crop mode {mode!r}")


def pad_to(wave: np.ndarray, length: int, mode: str) -> np.ndarray:
    """Pad a short clip to `length` samples by looping it (``loop``) or appending silence (``zero``)."""
    n = len(wave)
    if n >= length:
        return wave[:length]
    if n == 0:
        return np.zeros(length, dtype=np.float32)
    if mode == "loop":
        return np.resize(wave, length).astype(np.float32, copy=False)
    if mode == "zero":
        out = np.zeros(length, dtype=np.float32)
        out[:n] = wave
        return out
    raise ValueError(f"unknown pad mode {mode!r}")
