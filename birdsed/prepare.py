"""``birdsed prepare``: which files of a BirdCLEF folder go into the waveform cache, under which keys."""

from __future__ import annotations

from pathlib import Path

from birdsed.audio import list_audio
from birdsed.cache import PrepareSummary, prepare_cache
from birdsed.config import Config
from birdsed.data import load_birdclef


def cache_sources(root: Path, train_files: list[str], include_test: bool = False) -> list[tuple[str, Path]]:
    """(cache key, file) pairs: every train_audio file listed in train.csv, every train soundscape, and optionally
    the test soundscapes. Keys are paths relative to `root`."""
    sources = [(f"train_audio/{f}", root / "train_audio" / f) for f in train_files]
    folders = ["train_soundscapes"] + (["test_soundscapes"] if include_test else [])
    for folder in folders:
        sources += [(f"{folder}/{p.name}", p) for p in list_audio(root / folder)]
    return sources


def prepare(cfg: Config, include_test: bool = False, progress: bool = True) -> PrepareSummary:
    """Validate ``cfg.data.root`` and decode its audio into ``cfg.cache_path`` (idempotent)."""
    data = load_birdclef(cfg.data.root)
    sources = cache_sources(data.root, data.train["filename"].tolist(), include_test)
    return prepare_cache(sources, cfg.cache_path, cfg.audio.sample_rate, cfg.data.prepare_workers, progress)
