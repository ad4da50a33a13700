"""Soundscape inference: 5-s windows, longer centred context, shift TTA, clip/frame blend, temporal smoothing.

No Lightning here. The ensemble (models, runtimes, class alignment) is :mod:`birdsed.inference.ensemble`; this module
cuts audio into windows, runs a group of models that share one front-end on each batch of windows (the spectrogram is
computed once per group) and turns their logits into one probability per window and class.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import expit, softmax

from birdsed.data.audio import audio_info, iter_blocks, load_audio
from birdsed.data.folder import n_windows
from birdsed.models.sed import clip_frame_blend

# (B, 1, M, T) log-mel → clip logits (B, K), frame logits (B, T', K)
Runner = Callable[[torch.Tensor], tuple[np.ndarray, np.ndarray]]


@dataclass
class WindowSpec:
    """How windows are cut and scored (the ``infer`` config section, resolved to samples)."""

    sample_rate: int = 32000
    window_seconds: float = 5.0
    context_seconds: float = 5.0  # audio the model sees around each window (1st place: 10-20 s), edges zero-padded
    shifts: Sequence[float] = (0.0,)  # TTA offsets in seconds
    shift_reduce: str = "mean"  # mean | max over shifts
    clip_weight: float = 1.0  # the clip/frame blend: models.sed.clip_frame_blend
    smoothing: Sequence[float] = ()  # kernel over neighbouring windows, e.g. (0.1, 0.2, 0.4, 0.2, 0.1)
    batch_size: int = 16
    # one STFT per file shared by every window and shift (chunks are cut from it at frame resolution, so a
    # window start moves by at most half a hop); False computes each chunk's STFT on its own
    shared_stft: bool = True

    @property
    def window(self) -> int:
        return round(self.window_seconds * self.sample_rate)

    @property
    def context(self) -> int:
        return round(self.context_seconds * self.sample_rate)


class StreamingAudio:
    """Random-ish access to a file's resampled samples in increasing order, holding only a bounded stretch.

    ``segment(a, b)`` returns samples [a, b) (zeros outside the file); `a` must not go below what was already
    released with ``release(before)``. Memory stays bounded by the span one batch of windows needs.
    """

    def __init__(self, path: str, sample_rate: int, block_seconds: float = 10.0) -> None:
        info = audio_info(path)
        self.length = round(info.frames * sample_rate / info.samplerate)
        self._blocks: Iterator[np.ndarray] = iter_blocks(path, sample_rate, block_seconds, repair=True)
        self._buf = np.zeros(0, dtype=np.float32)
        self._start = 0  # absolute index of _buf[0]
        self._done = False

    def _fill(self, stop: int) -> None:
        parts = [self._buf]
        end = self._start + len(self._buf)
        while end < stop and not self._done:
            try:
                block = next(self._blocks)
            except StopIteration:
                self._done = True
                break
            parts.append(block)
            end += len(block)
        if len(parts) > 1:
            self._buf = np.concatenate(parts)

    def segment(self, a: int, b: int) -> np.ndarray:
        out = np.zeros(b - a, dtype=np.float32)
        if max(a, 0) < self._start:  # before the file start there is only padding
            raise ValueError(f"segment start {a} was already released (buffer starts at {self._start})")
        self._fill(b)
        lo, hi = max(a, self._start), min(b, self._start + len(self._buf))
        if hi > lo:
            out[lo - a : hi - a] = self._buf[lo - self._start : hi - self._start]
        return out

    def release(self, before: int) -> None:
        drop = min(max(0, before - self._start), len(self._buf))
        if drop:
            self._buf = self._buf[drop:]
            self._start += drop


class InMemoryAudio:
    """The same interface over a waveform already decoded (short files, prefetched in a thread)."""

    def __init__(self, wave: np.ndarray) -> None:
        self.wave, self.length = wave, len(wave)

    def segment(self, a: int, b: int) -> np.ndarray:
        out = np.zeros(b - a, dtype=np.float32)
        lo, hi = max(a, 0), min(b, self.length)
        if hi > lo:
            out[lo - a : hi - a] = self.wave[lo:hi]
        return out

    def release(self, before: int) -> None:
        pass


def smooth(scores: np.ndarray, kernel: Sequence[float]) -> np.ndarray:
    """Weighted average of each window with its neighbours along axis 0, renormalised at the file's edges.

    Args:
        scores: (n_windows, K).
        kernel: odd-length weights centred on the window itself; empty means no smoothing.
    """
    if len(kernel) <= 1 or len(scores) == 1:
        return scores
    k = np.asarray(kernel, dtype=np.float64)
    if len(k) % 2 == 0:
        raise ValueError(f"smoothing kernel needs an odd length, got {list(kernel)}")
    half = len(k) // 2
    n = len(scores)
    out = np.zeros_like(scores, dtype=np.float64)
    norm = np.zeros((n, 1))
    for j, w in enumerate(k):
        off = j - half
        lo, hi = max(0, -off), min(n, n - off)
        out[lo:hi] += w * scores[lo + off : hi + off]
        norm[lo:hi] += w
    return (out / norm).astype(scores.dtype)


def _activation(logits: np.ndarray, kind: str) -> np.ndarray:
    """Probabilities of (..., C) `logits` in float64: ``softmax`` over classes, else the sigmoid."""
    logits = logits.astype(np.float64)
    return softmax(logits, axis=-1) if kind == "softmax" else expit(logits)


class _SharedMel:
    """The mel power of a whole (in-memory) file, computed once; chunks are cut from it by frame."""

    def __init__(self, audio: InMemoryAudio, frontend: torch.nn.Module, context: int, device) -> None:
        self.frontend, self.hop = frontend, frontend.hop_length
        self.frames = 1 + context // self.hop  # frames of one chunk, as a chunk's own STFT would give
        with torch.no_grad():
            power = frontend.power_mel(torch.from_numpy(audio.wave)[None].to(device))[0]  # (M, T_file)
        self.pad = self.frames + 1
        self.power = torch.nn.functional.pad(power, (self.pad, self.pad))  # zeros = silence beyond the file

    @staticmethod
    def usable(audio: object, frontend: torch.nn.Module) -> bool:
        return isinstance(audio, InMemoryAudio) and hasattr(frontend, "power_mel") and hasattr(frontend, "to_db")

    def chunks(self, starts: Sequence[int]) -> torch.Tensor:
        """Log-mels (B, 1, M, T) of chunks starting at samples `starts` (nearest frame)."""
        first = torch.tensor([round(a / self.hop) for a in starts]) + self.pad
        first = first.clamp(0, self.power.shape[1] - self.frames)
        index = first[:, None] + torch.arange(self.frames)[None]  # (B, T)
        with torch.no_grad():
            return self.frontend.to_db(self.power[:, index].permute(1, 0, 2))  # (B, M, T) → (B, 1, M, T)


class _FrameGrid:
    """Frame probabilities of overlapping chunks accumulated on an absolute time grid (one shift, one model)."""

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.count: np.ndarray | None = None
        self.res = 0.0  # samples per output frame

    def add(self, start: int, frames: np.ndarray, context: int) -> None:
        """frames (T', K) of the chunk starting at sample `start` (may be negative)."""
        t_out = frames.shape[0]
        self.res = context / t_out
        cells = ((start + context + (np.arange(t_out) + 0.5) * self.res) // self.res).astype(int)  # +context: >= 0
        need = int(cells.max()) + 1
        if self.total is None:
            self.total, self.count = np.zeros((need, frames.shape[1])), np.zeros((need, 1))
        elif need > len(self.total):
            grow = need - len(self.total)
            self.total = np.vstack([self.total, np.zeros((grow, self.total.shape[1]))])
            self.count = np.vstack([self.count, np.zeros((grow, 1))])
        np.add.at(self.total, cells, frames)
        np.add.at(self.count, cells, 1.0)

    def window_max(self, a: int, b: int, context: int) -> np.ndarray | None:
        """Max over the cells whose centre lies in samples [a, b) of the averaged frame probabilities."""
        assert self.total is not None and self.count is not None
        lo = math.ceil((a + context) / self.res - 0.5)
        hi = math.ceil((b + context) / self.res - 0.5)
        lo, hi = max(lo, 0), min(hi, len(self.total))
        sel = self.count[lo:hi, 0] > 0
        if not sel.any():
            return None
        return (self.total[lo:hi][sel] / self.count[lo:hi][sel]).max(axis=0)


def predict_group(
    audio: StreamingAudio | InMemoryAudio,
    spec: WindowSpec,
    frontend: torch.nn.Module,
    runners: Sequence[tuple[Runner, str]],
    device: torch.device | str = "cpu",
) -> list[np.ndarray]:
    """Scores of every window for models sharing one front-end.

    For each shift, every window's context chunk is cut (centred on the shifted window), its log-mel computed
    once and fed to each model. A window's frame score is the max, over the frames inside the shifted window, of
    frame probabilities averaged across all chunks that overlap them (with context > window, neighbours overlap).
    Windows are processed batch by batch in file order, so a streamed file is read once with bounded memory.

    Args:
        audio: the file's samples at ``spec.sample_rate``.
        runners: (runner, activation) per model; activation ``sigmoid`` or ``softmax`` (ce-trained models).

    Returns:
        per model, (n_windows, K_model) probabilities after blending, shift reduction and smoothing.
    """
    W, C, sr = spec.window, spec.context, spec.sample_rate
    n = n_windows(audio.length, W, min_tail=sr // 2)
    shifts = [round(s * sr) for s in spec.shifts] or [0]
    use_frames = spec.clip_weight < 1.0
    clips = [[[] for _ in runners] for _ in shifts]  # [shift][model] → list of (B, K)
    grids = [[_FrameGrid() for _ in runners] for _ in shifts]

    def chunk_start(w: int, shift: int) -> int:
        return w * W + W // 2 + shift - C // 2

    mels = _SharedMel(audio, frontend, C, device) if spec.shared_stft and _SharedMel.usable(audio, frontend) else None

    for b0 in range(0, n, spec.batch_size):
        idx = list(range(b0, min(n, b0 + spec.batch_size)))
        for si, shift in enumerate(shifts):
            starts = [chunk_start(w, shift) for w in idx]
            if mels is not None:
                mel = mels.chunks(starts)  # (B, 1, M, T)
            else:
                chunk = np.stack([audio.segment(a, a + C) for a in starts])  # (B, C)
                with torch.no_grad():
                    mel = frontend(torch.from_numpy(chunk).to(device))  # (B, 1, M, T)
            for m, (run, act) in enumerate(runners):
                clip_logits, frame_logits = run(mel)
                clips[si][m].append(_activation(clip_logits, act))
                if use_frames:
                    frames = _activation(frame_logits, act)  # (B, T', K)
                    for i, a in enumerate(starts):
                        grids[si][m].add(a, frames[i], C)
        if idx[-1] + 1 < n:
            audio.release(min(chunk_start(idx[-1] + 1, s) for s in shifts))

    out = []
    for m in range(len(runners)):
        per_shift = []
        for si, shift in enumerate(shifts):
            clip = np.concatenate(clips[si][m])  # (n, K)
            if use_frames:
                frame = clip.copy()
                for w in range(n):
                    got = grids[si][m].window_max(w * W + shift, (w + 1) * W + shift, C)
                    if got is not None:
                        frame[w] = got
                clip = clip_frame_blend(clip, frame, spec.clip_weight)
            per_shift.append(clip)
        stack = np.stack(per_shift)  # (S, n, K)
        reduced = stack.max(axis=0) if spec.shift_reduce == "max" else stack.mean(axis=0)
        out.append(smooth(reduced, spec.smoothing))
    return out


def read_audio(path: str, sample_rate: int, max_whole_seconds: float) -> StreamingAudio | InMemoryAudio:
    """Decode a short file whole, stream a long one (memory bounded). Raises AudioError for unusable files."""
    info = audio_info(path)
    if info.frames / info.samplerate <= max_whole_seconds:
        return InMemoryAudio(load_audio(path, sample_rate, repair=True))
    return StreamingAudio(path, sample_rate)
