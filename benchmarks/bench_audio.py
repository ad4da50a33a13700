"""Audio figures: decode+resample throughput, random 5-s crops/s from the cache, mel front-end vs librosa.

Usage: python benchmarks/bench_audio.py [--root ../shared/data/birdclef-real-mini]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from birdsed.data.audio import load_audio
from birdsed.data.cache import WaveStore, prepare_cache
from birdsed.data.folder import load_birdclef
from birdsed.data.prepare import cache_sources
from birdsed.models.frontend import MelFrontend

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "birdclef-real-mini"


def crops_per_second(store: WaveStore, keys: list[str], seconds: float, workers: int) -> float:
    """Random 5-s crops/s through a DataLoader with `workers` processes (what training sees)."""

    class Crops(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 4000

        def __getitem__(self, i: int) -> np.ndarray:
            rng = np.random.default_rng(i)
            return store.crop(keys[i % len(keys)], 160000, "random", rng)

    loader = torch.utils.data.DataLoader(Crops(), batch_size=32, num_workers=workers)
    t = time.perf_counter()
    n = sum(len(b) for b in loader)
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=REAL)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    data = load_birdclef(args.root)
    sources = cache_sources(data.root, data.train["filename"].tolist())

    t = time.perf_counter()
    seconds = sum(len(load_audio(p)) for _, p in sources) / 32000
    dt = time.perf_counter() - t
    print(f"decode+resample, 1 process: {seconds / 60:.1f} min of audio in {dt:.2f} s = {seconds / dt:.0f}x real time")

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        prepare_cache(sources, tmp, 32000, workers=0, progress=False)
        dt = time.perf_counter() - t
        print(f"birdsed prepare, {os.cpu_count()} processes: {dt:.2f} s = {seconds / dt:.0f}x real time")
        store = WaveStore(tmp)
        keys = list(store.files)
        for workers in (0, 2):
            rate = crops_per_second(store, keys, 5.0, workers)
            print(
                f"random 5-s crops from the cache, DataLoader num_workers={workers}: "
                f"{rate:,.0f} crops/s (goal >= 1,000)"
            )

        batch = torch.from_numpy(
            np.stack([store.crop(k, 160000, "random", np.random.default_rng(0)) for k in keys[:32]])
        )
    import librosa

    front = MelFrontend(normalize="none")
    front(batch[:2])
    t = time.perf_counter()
    for _ in range(3):
        front(batch)
    ours = (time.perf_counter() - t) / 3
    t = time.perf_counter()
    for x in batch.numpy():
        librosa.power_to_db(
            librosa.feature.melspectrogram(y=x, sr=32000, n_fft=2048, hop_length=512, n_mels=128, fmin=40, fmax=15000),
            top_db=80.0,
        )
    ref = time.perf_counter() - t
    print(f"mel front-end on a batch of 32 x 5 s: birdsed {ours * 1000:.0f} ms, librosa {ref * 1000:.0f} ms")
    print(f"mel_speedup_vs_librosa={ref / ours:.1f}x")


if __name__ == "__main__":
    main()
