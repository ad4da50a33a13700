"""``birdsed prepare``: which files of a BirdCLEF folder go into the waveform cache, under which keys; and
:func:`ensure_cache`, the same for what one training run needs (backgrounds and labelled soundscapes included)."""

from __future__ import annotations

import logging
from pathlib import Path

from birdsed.config import Config
from birdsed.data.audio import list_audio
from birdsed.data.cache import PrepareSummary, WaveStore, prepare_cache
from birdsed.data.folder import BirdCLEFData, DataError, load_data
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


def cache_limits(cfg: Config) -> dict[str, int]:
    """``data.cache_seconds``: the focal recordings' first seconds only (soundscapes are always whole)."""
    return {"train_audio/": cfg.seconds_to_samples(cfg.data.cache_seconds)} if cfg.data.cache_seconds else {}


def prepare(cfg: Config, include_test: bool = False, progress: bool = True) -> PrepareSummary:
    """Validate ``cfg.data.root`` and decode its audio into ``cfg.cache_path`` (idempotent)."""
    check_processes("data.prepare_workers", cfg.data.prepare_workers, per_core=2)
    data = load_data(cfg)
    sources = cache_sources(data.root, data.train["filename"].tolist(), include_test)
    return prepare_cache(
        sources, cfg.cache_path, cfg.audio.sample_rate, cfg.data.prepare_workers, progress, cache_limits(cfg)
    )


def background_sources(cfg: Config, data: BirdCLEFData) -> list[tuple[str, Path]]:
    """(cache key, file) of each ``augment.background_dir`` file. The folder's own ``train_soundscapes`` (the usual
    choice) keep their ``train_soundscapes/`` keys: cached once, not twice (41 GB at BirdCLEF+ 2026's size). The
    labelled soundscapes (:attr:`BirdCLEFData.labelled_files`) are never backgrounds: their calls would be mixed in
    unlabelled, and a held-out fold's audio would reach its own training (the distillation windows come from here
    too)."""
    if not cfg.augment.background_dir:
        return []
    folder = Path(cfg.augment.background_dir)
    files = list_audio(folder)
    if not files:
        raise DataError(f"augment.background_dir: no audio files in {folder}")
    own_dir = (data.root / "train_soundscapes").resolve()
    labelled = {(own_dir / name).resolve() for name in data.labelled_files}
    kept = [p for p in files if p.resolve() not in labelled]
    if len(kept) < len(files):
        log.info(
            "augment.background_dir: %d labelled soundscape(s) left out of the backgrounds", len(files) - len(kept)
        )
    if not kept:
        raise DataError(f"augment.background_dir: {folder} holds only labelled soundscapes; name the unlabelled ones")
    own = folder.resolve() == own_dir
    return [(f"train_soundscapes/{p.name}" if own else f"background/{folder.name}/{p.name}", p) for p in kept]


def ensure_cache(cfg: Config, data: BirdCLEFData, soundscapes: bool) -> WaveStore:
    """Decode whatever training needs into the cache (idempotent): recordings, backgrounds, labelled soundscapes."""
    sources = cache_sources(data.root, data.train["filename"].tolist(), include_test=soundscapes)
    known = {key for key, _ in sources}
    sources += [(k, p) for k, p in background_sources(cfg, data) if k not in known]
    summary = prepare_cache(
        sources, cfg.cache_path, cfg.audio.sample_rate, cfg.data.prepare_workers, False, cache_limits(cfg)
    )
    if summary.cached or summary.failed:
        for line in summary.lines():
            log.info(line)
    return WaveStore(cfg.cache_path)
