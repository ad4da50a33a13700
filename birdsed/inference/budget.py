"""``birdsed budget``: measure an ensemble's cost per minute of audio here and project a Kaggle run's wall time.

BirdCLEF 2025 scores ~700 one-minute soundscapes in a CPU notebook within 90 minutes. The projection scales the
time measured on this machine by cores (this machine's threads / Kaggle's cores), assuming compute-bound
inference that parallelises across cores; decoding is measured on a real encoded file. The figure depends on this
machine and its load: the fastest of `repeats` timings is projected, the range over them is given beside it, and a
load average beyond the threads used is said.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from birdsed.config import InferConfig
from birdsed.data.synth import write_audio
from birdsed.inference.ensemble import Member, frontends
from birdsed.inference.infer import read_audio
from birdsed.inference.submit import predict_file, window_spec


@dataclass
class Budget:
    decode_s_per_min: float
    model_s_per_min: float
    local_threads: int
    projected_minutes: float
    limit_minutes: float
    projected_range: tuple[float, float] = (0.0, 0.0)  # the projection from the fastest and the slowest repeat
    load: float = 0.0  # the 1-minute load average while measuring (os.getloadavg)

    @property
    def busy(self) -> bool:
        """Whether other work shared the cores while measuring: the load average beyond the threads used."""
        return self.load > self.local_threads + 0.5

    @property
    def fits(self) -> bool:
        return self.projected_minutes <= self.limit_minutes


def measure(
    members: list[Member],
    icfg: InferConfig,
    soundscapes: int = 700,
    minutes: float = 1.0,
    cores: int = 4,
    limit_minutes: float = 90.0,
    repeats: int = 3,
    teacher: Callable[[Path], object] | None = None,
) -> Budget:
    """Time decode and prediction of one minute of noisy audio with chirps and project `soundscapes` files.

    `teacher` (a function of a folder, e.g. BirdNET from :func:`birdsed.teacher.source.teacher_source`) is timed on
    the same minute and counted with the models.
    """
    sr = members[0].cfg.audio.sample_rate if members else 32000  # the teacher alone: any rate it resamples from
    rng = np.random.default_rng(0)
    t = np.arange(60 * sr) / sr
    wave = (0.05 * rng.standard_normal(len(t)) + 0.2 * np.sin(2 * np.pi * (2000 + 500 * np.sin(t)) * t)).astype(
        np.float32
    )
    spec = window_spec(icfg, sr)
    fronts = frontends(members, "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "minute.ogg"
        write_audio(path, wave, sr)
        if members:
            predict_file(read_audio(str(path), sr, 1e9), members, spec, fronts, "cpu")  # warm-up
        decode, model = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            audio = read_audio(str(path), sr, 1e9)
            t1 = time.perf_counter()
            if members:
                predict_file(audio, members, spec, fronts, "cpu")
            if teacher is not None:
                teacher(Path(tmp))
            decode.append(t1 - t0)
            model.append(time.perf_counter() - t1)
    local = torch.get_num_threads() or os.cpu_count() or 1
    scale = minutes * soundscapes * local / cores / 60
    totals = [d + m for d, m in zip(decode, model, strict=True)]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    projected = (min(decode) + min(model)) * scale
    return Budget(
        min(decode), min(model), local, projected, limit_minutes, (min(totals) * scale, max(totals) * scale), load
    )
