"""``birdsed prepare``: which files of a BirdCLEF folder go into the waveform cache, under which keys; and
:func:`ensure_cache`, the same for what one training run needs (backgrounds and labelled soundscapes included)."""

from __future__ import annotations

import logging
from pathlib import Path

from birdsed.config import Config
from birdsed.data.audio import list_audio
from birdsed.data.cache import PrepareSummary, WaveStore, prepare_cache
from birdsed.data.folder import BirdCLEFData, DataError, load_birdclef
from birdsed.rules import check_processes

log = logging.getLogger(__name__)


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
    check_processes("data.prepare_workers", cfg.data.prepare_workers, per_core=2)
    data = load_birdclef(cfg.data.root)
    sources = cache_sources(data.root, data.train["filename"].tolist(), include_test)
    return prepare_cache(sources, cfg.cache_path, cfg.audio.sample_rate, cfg.data.prepare_workers, progress)


def ensure_cache(cfg: Config, data: BirdCLEFData, soundscapes: bool) -> WaveStore:
    """Decode whatever training needs into the cache (idempotent): recordings, backgrounds, labelled soundscapes."""
    sources = cache_sources(data.root, data.train["filename"].tolist(), include_test=soundscapes)
    if cfg.augment.background_dir:
        folder = Path(cfg.augment.background_dir)
        files = list_audio(folder)
        if not files:
            raise DataError(f"augment.background_dir: no audio files in {folder}")
        sources += [(f"background/{folder.name}/{p.name}", p) for p in files]
    summary = prepare_cache(sources, cfg.cache_path, cfg.audio.sample_rate, cfg.data.prepare_workers, progress=False)
    if summary.cached or summary.failed:
        for line in summary.lines():
            log.info(line)
    return WaveStore(cfg.cache_path)
