"""A compact on-disk waveform store that training reads crops from without decoding.

``birdsed prepare`` decodes every file once (in parallel, streaming, so memory stays bounded on long files) into
raw float16 mono files under the cache folder, plus ``index.json`` naming each file's length and the source's size
and modification time. Re-running skips what is current. :class:`WaveStore` memory-maps the files and reads crops.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from birdsed.data.audio import AudioError, crop_start, iter_blocks, pad_to
from birdsed.data.folder import DataError
from birdsed.errors import DamagedFileError, OutputError
from birdsed.outputs import atomic_write, die_with_parent, read_json
from birdsed.outputs import progress as progress_bar

log = logging.getLogger(__name__)

DTYPE = np.float16
FLOAT16_MAX = float(np.finfo(np.float16).max)
INDEX = "index.json"


@dataclass
class PrepareSummary:
    """What one `prepare` call did."""

    cached: int = 0
    skipped_current: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # key -> reason
    upsampled: list[str] = field(default_factory=list)  # keys whose source rate was below the target rate
    seconds: float = 0.0  # audio seconds written

    def lines(self) -> list[str]:
        out = [
            f"cached {self.cached} file(s) ({self.seconds / 60:.1f} min of audio), "
            f"{self.skipped_current} already current, {len(self.failed)} skipped as unusable"
        ]
        out += [f"  skipped {key}: {reason}" for key, reason in sorted(self.failed.items())]
        if self.upsampled:
            out.append(
                f"  note: {len(self.upsampled)} file(s) were recorded below the target rate and upsampled; "
                "they carry no content above their own Nyquist frequency"
            )
        return out


def _source_stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"source_size": st.st_size, "source_mtime_ns": st.st_mtime_ns}


class _WriteError(Exception):
    """Writing the cache failed (our output, not the recording's fault)."""


INDEX_EVERY_S = 30.0  # the cache index is saved this often while decoding (and at the end)
MIN_SECONDS = 0.25  # a shorter file holds no call to learn from: listed as skipped, like an unreadable one


def _cache_one(src: str, dst: str, sample_rate: int, limit: int = 0) -> dict:
    """Decode `src` block by block into float16 at `dst` (atomically), its first `limit` samples only where > 0.
    Runs in a worker process."""
    import soundfile as sf

    tmp = dst + ".part"
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    n, peak = 0, 0.0
    try:
        with open(tmp, "wb") as out:
            for block in iter_blocks(src, sample_rate, block_seconds=min(30.0, limit / sample_rate or 30.0)):
                if limit and n + len(block) > limit:
                    block = block[: limit - n]
                peak = max(peak, float(np.abs(block).max()))
                if peak > FLOAT16_MAX:
                    raise AudioError(src, f"sample magnitude {peak:.3g} does not fit the float16 cache")
                try:
                    out.write(block.astype(DTYPE).tobytes())
                except OSError as err:  # our output, not the recording: a full disk or a file-size limit
                    raise _WriteError(f"{dst}: cannot write the cache ({err.strerror or err})") from None
                n += len(block)
                if limit and n >= limit:
                    break
        if n == 0:
            raise AudioError(src, "decodes to no audio samples")
        if n < MIN_SECONDS * sample_rate:  # looped into a crop it would be a constant tone, not a recording
            raise AudioError(src, f"is too short ({n} samples, {n / sample_rate:.3f} s; at least {MIN_SECONDS} s)")
        if peak == 0.0:
            raise AudioError(src, "is silent (every sample is zero)")
        os.replace(tmp, dst)
    except AudioError as err:
        Path(tmp).unlink(missing_ok=True)
        return {"error": err.reason}
    except _WriteError as err:
        Path(tmp).unlink(missing_ok=True)
        return {"fatal": str(err)}
    except Exception as err:  # a worker must report, not die: unexpected decoder failures become skips
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename == tmp:  # the cache file itself could not be made
            return {"fatal": f"{dst}: cannot write the cache ({err.strerror or err})"}
        return {"error": f"unexpected failure: {type(err).__name__}: {err}"}
    except BaseException:  # Ctrl-C, SIGTERM: nothing half-written stays
        Path(tmp).unlink(missing_ok=True)
        raise
    return {
        "samples": n,
        "limit": limit,
        "peak": peak,
        "source_rate": int(sf.info(src).samplerate),
        **_source_stamp(Path(src)),
    }


class WaveStore:
    """Read access to a prepared cache: lengths and (memory-mapped) crops at the cache's sample rate."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        index_path = self.root / INDEX
        if not index_path.is_file():
            raise DataError(f"{index_path}: no waveform cache here; run `birdsed prepare` first")
        index = read_json(index_path)
        self.sample_rate: int = index["sample_rate"]
        self.files: dict[str, dict] = index["files"]
        self._maps: dict[str, np.memmap] = {}

    def __contains__(self, key: str) -> bool:
        return key in self.files

    def __len__(self) -> int:
        return len(self.files)

    def path(self, key: str) -> Path:
        """Location of the cached samples of `key`."""
        return self.root / (key + ".f16")

    def num_samples(self, key: str) -> int:
        """Length of `key` in samples."""
        return int(self.files[key]["samples"])

    def _map(self, key: str) -> np.memmap:
        m = self._maps.get(key)
        if m is None:
            if key not in self.files:
                raise KeyError(f"{key}: not in the waveform cache {self.root} (was it skipped by prepare?)")
            if not _whole(self.path(key), self.files[key]):
                raise DataError(
                    f"{self.path(key)}: the cached samples file is missing or shorter than its index says; run "
                    "`birdsed prepare` again to decode it anew"
                )
            m = np.memmap(self.path(key), dtype=DTYPE, mode="r", shape=(self.num_samples(key),))
            self._maps[key] = m
        return m

    def read(self, key: str, start: int = 0, length: int | None = None) -> np.ndarray:
        """Samples [start, start+length) of `key` as float32, shape (length,) (shorter at the end of the file)."""
        m = self._map(key)
        stop = len(m) if length is None else start + length
        return np.asarray(m[start:stop], dtype=np.float32)

    def crop(
        self,
        key: str,
        length: int,
        mode: str,
        rng: np.random.Generator,
        first: int = 0,
        pad_mode: str = "loop",
        span: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """A crop of exactly `length` samples (see :func:`birdsed.data.audio.crop_start`), padded if the clip is short.

        `span` (start, stop) restricts the crop to part of the file (e.g. the part not held out for validation).
        """
        lo, hi = span if span is not None else (0, self.num_samples(key))
        if mode == "full":
            return self.read(key, lo, hi - lo)
        start = lo + crop_start(hi - lo, length, mode, rng, first)
        return pad_to(self.read(key, start, min(length, hi - start)), length, pad_mode)

    def __getstate__(self) -> dict:
        # memmaps are reopened lazily in each DataLoader worker
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state


def _write_index(root: Path, sample_rate: int, files: dict[str, dict]) -> None:
    atomic_write(root / INDEX, json.dumps({"sample_rate": sample_rate, "dtype": "float16", "files": files}, indent=0))


def _read_index(root: Path, sample_rate: int) -> dict[str, dict]:
    """The files of the cache's index at `sample_rate` (empty if there is none, it is at another rate, or it is
    damaged: a cache is rebuilt, never trusted half-read)."""
    if not (root / INDEX).is_file():
        return {}
    try:
        old = read_json(root / INDEX)
        return dict(old["files"]) if old.get("sample_rate") == sample_rate else {}
    except (DamagedFileError, KeyError, TypeError, AttributeError):
        log.warning("%s: the cache index is damaged; every file is decoded again", root / INDEX)
        return {}


def _whole(path: Path, entry: dict) -> bool:
    """Whether a cached samples file is there with every sample its index entry lists (a disk that filled up or a
    copy cut short leaves it shorter: such a file is decoded again)."""
    try:
        return path.stat().st_size == int(entry.get("samples", -1)) * np.dtype(DTYPE).itemsize
    except OSError:
        return False


def _stale(
    sources: list[tuple[str, Path]], root: Path, files: dict[str, dict], limits: dict[str, int]
) -> list[tuple[str, Path]]:
    """Sources whose cached samples are missing, older than the source (size or modification time changed) or cut
    at another length than `limits` asks."""
    todo = []
    for key, src in sources:
        entry = files.get(key)
        current = (
            entry is not None
            and entry.get("limit", 0) == _limit(key, limits)
            and src.is_file()
            and entry.get("source_size") == src.stat().st_size
            and entry.get("source_mtime_ns") == src.stat().st_mtime_ns
            and _whole(root / (key + ".f16"), entry)
        )
        if not current:
            todo.append((key, src))
    return todo


def _limit(key: str, limits: dict[str, int]) -> int:
    """The most samples cached of `key`: the limit of the first key prefix it starts with (0: whole)."""
    return next((n for prefix, n in limits.items() if key.startswith(prefix)), 0)


def prepare_cache(
    sources: Iterable[tuple[str, Path]],
    cache_dir: str | Path,
    sample_rate: int,
    workers: int = 0,
    progress: bool = True,
    limits: dict[str, int] | None = None,
) -> PrepareSummary:
    """Decode every (key, path) source into the cache at `cache_dir`, skipping files already current.

    A file is current when the index lists it with the source's size and modification time and its samples file
    exists. Unusable files (unreadable, empty, truncated, silent, NaN, under 0.25 s) are skipped and listed in the
    summary.
    A complete cache is only read, so it may sit on a read-only file system (Kaggle inputs); writes take a file
    lock, so several ``prepare`` calls on one cache wait for each other instead of racing on the index.

    Args:
        sources: pairs of cache key (e.g. ``train_audio/sp1/XC1.ogg``) and source file.
        cache_dir: the cache folder (created if absent).
        sample_rate: target rate; a cache made at another rate is rebuilt.
        workers: processes (0 means all cores).
        limits: key prefix → most samples cached of each such file (``data.cache_seconds`` for ``train_audio/``).

    Raises:
        OutputError: files are missing from the cache and its folder cannot be written.
    """
    root = Path(cache_dir)
    limits = dict(limits or {})
    sources = [(key, Path(src)) for key, src in sources]
    todo = _stale(sources, root, _read_index(root, sample_rate), limits)
    summary = PrepareSummary(skipped_current=len(sources) - len(todo))
    if not todo:
        return summary  # nothing to write: a read-only cache is fine
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(root / (INDEX + ".lock")))
        lock.acquire(timeout=0.5)
    except Timeout:
        log.info("%s: another prepare is writing this cache; waiting for it", root)
        lock.acquire()
    except OSError as err:
        raise OutputError(
            f"{root}: the waveform cache lacks {len(todo)} file(s) and cannot be written ({err.strerror or err}); "
            "set data.cache_dir to a writable folder (a complete read-only cache needs no writes)"
        ) from None
    try:
        files = _read_index(root, sample_rate)  # again, under the lock: another prepare may have filled it
        todo = _stale(sources, root, files, limits)
        summary.skipped_current = len(sources) - len(todo)
        for key, _ in todo:
            files.pop(key, None)
        _decode_all(todo, root, sample_rate, workers, progress, files, summary, limits)
    finally:
        lock.release()
    return summary


def _decode_all(
    todo: list[tuple[str, Path]],
    root: Path,
    sample_rate: int,
    workers: int,
    progress: bool,
    files: dict[str, dict],
    summary: PrepareSummary,
    limits: dict[str, int],
) -> None:
    """Decode `todo` into `root` (in parallel), updating `files` and `summary`; the index is saved as it goes."""
    workers = workers or os.cpu_count() or 1
    results: Iterable[tuple[tuple[str, Path], dict]]
    args = [(str(src), str(root / (key + ".f16")), sample_rate, _limit(key, limits)) for key, src in todo]
    log.info("decoding %d file(s) into %s with %d worker(s)", len(todo), root, min(workers, len(todo)))
    if workers == 1 or len(todo) <= 1:
        results = ((item, _cache_one(*a)) for item, a in zip(todo, args, strict=True))
        pool = None
    else:
        pool = ProcessPoolExecutor(
            max_workers=min(workers, len(todo)), initializer=die_with_parent, initargs=(os.getpid(),)
        )
        futures = [pool.submit(_cache_one, *a) for a in args]
        results = ((item, fut.result()) for item, fut in zip(todo, futures, strict=True))
    saved = time.monotonic()
    try:
        bar = progress_bar(results, total=len(todo), desc="prepare", unit="file", wanted=progress)
        for (key, src), meta in bar:
            if "fatal" in meta:
                raise OutputError(meta["fatal"])
            if "error" in meta:
                summary.failed[key] = meta["error"]
                log.warning("skipped %s: %s", src, meta["error"])
                continue
            files[key] = meta
            summary.cached += 1
            summary.seconds += meta["samples"] / sample_rate
            if meta["source_rate"] < sample_rate:
                summary.upsampled.append(key)
            # a crash loses at most INDEX_EVERY_S of work; saving every k files instead rewrites an index that
            # grows with the files: quadratic in a 46,000-file folder (benchmarks/RESULTS.md, "Competition scale")
            if time.monotonic() - saved >= INDEX_EVERY_S:
                _write_index(root, sample_rate, files)
                saved = time.monotonic()
    except BaseException:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            pool = None
        for part in root.rglob("*.f16.part"):  # a worker stopped mid-file (Ctrl-C reaches every process)
            part.unlink(missing_ok=True)
        raise
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        _write_index(root, sample_rate, files)
