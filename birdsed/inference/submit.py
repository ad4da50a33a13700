"""``birdsed infer``: predict every soundscape of a folder with an ensemble and write a validated submission.

Decoding of the next file overlaps model compute (a thread); on a CPU runtime several files are predicted side by
side (``infer.workers``). An unreadable or empty soundscape gets its rows from
the fallback (the members' class prior) with a warning naming the file, and a count at the end: the submission
is always complete. The CSV is written atomically.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from birdsed.config import Config, ConfigError, InferConfig
from birdsed.data.audio import AudioError, list_audio
from birdsed.data.folder import DataError, check_unique_stems, n_windows, row_ids
from birdsed.inference.ensemble import Member, combine, describe, fallback_prior, frontends, load_member
from birdsed.inference.infer import InMemoryAudio, StreamingAudio, WindowSpec, predict_group, read_audio
from birdsed.outputs import atomic_path
from birdsed.outputs import progress as progress_bar
from birdsed.ownership import check_file_output, record_output
from birdsed.rules import check_processes, usable_cores
from birdsed.scoring.metrics import SubmissionError, read_table
from birdsed.teacher.source import TeacherTable

log = logging.getLogger(__name__)


@dataclass
class InferResult:
    """What one ``infer`` call produced."""

    submission: pd.DataFrame
    files: int = 0
    fallback_files: dict[str, str] = field(default_factory=dict)  # file → reason
    audio_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def realtime_factor(self) -> float:
        return self.audio_seconds / self.seconds if self.seconds else float("nan")


def window_spec(icfg: InferConfig, sample_rate: int) -> WindowSpec:
    return WindowSpec(
        sample_rate=sample_rate,
        window_seconds=icfg.window_seconds,
        context_seconds=icfg.context_seconds,
        shifts=tuple(icfg.tta_shifts),
        shift_reduce=icfg.shift_reduce,
        clip_weight=icfg.clip_weight,
        smoothing=tuple(icfg.smoothing),
        batch_size=icfg.batch_size,
        shared_stft=icfg.shared_stft,
    )


def load_ensemble(checkpoints: Sequence[str | Path], icfg: InferConfig, device: torch.device | str) -> list[Member]:
    """Load every checkpoint as an ensemble member with its weight."""
    if not checkpoints:
        raise ConfigError("--checkpoint: give at least one")
    weights = list(icfg.weights) or [1.0] * len(checkpoints)
    if len(weights) != len(checkpoints):
        raise ConfigError(f"infer.weights: {len(weights)} weight(s) for {len(checkpoints)} checkpoint(s)")
    if icfg.specialist >= len(checkpoints):
        raise ConfigError(
            f"infer.specialist: {icfg.specialist} is not a checkpoint's index (0..{len(checkpoints) - 1}; -1: none)"
        )
    members = [
        load_member(c, w, icfg.runtime, device, icfg.threads, icfg.precision)
        for c, w in zip(checkpoints, weights, strict=True)
    ]
    rates = {m.cfg.audio.sample_rate for m in members}
    if len(rates) > 1:
        raise ConfigError(f"--checkpoint: members use different sample rates {sorted(rates)}; decode once needs one")
    log.info("ensemble of %d model(s):\n%s", len(members), describe(members))
    return members


def output_columns(members: list[Member], sample_submission: Path | None) -> list[str]:
    """Submission classes: the sample submission's columns (in order), else the first member's classes (with no
    member — the teacher alone — the sample submission is needed)."""
    if sample_submission is None:
        return list(members[0].classes)
    cols = read_table(sample_submission, "the sample submission").columns.tolist()
    if cols[0] != "row_id":
        raise SubmissionError(f"{sample_submission}: first column must be row_id")
    columns = [str(c) for c in cols[1:]]
    if not members:  # the teacher alone: the sample submission's classes as they are
        return columns
    known = set().union(*(m.classes for m in members))
    filled = [c for c in columns if c not in known]
    if len(filled) == len(columns):
        raise SubmissionError(
            f"{sample_submission}: none of its {len(columns)} classes is known to the checkpoint(s) "
            f"(e.g. {columns[:3]} vs {sorted(known)[:3]}); a wrong model or a wrong competition?"
        )
    if filled:
        log.warning(
            "%s: %d of %d class(es) are unknown to every checkpoint and get the fallback prior: %s",
            sample_submission,
            len(filled),
            len(columns),
            filled[:10],
        )
    return columns


def predict_file(
    audio: StreamingAudio | InMemoryAudio,
    members: list[Member],
    spec: WindowSpec,
    fronts: dict[tuple, torch.nn.Module],
    device: torch.device | str,
) -> list[np.ndarray]:
    """Per member, (n_windows, K_member) probabilities of one file; one spectrogram per front-end group."""
    if len(fronts) > 1 and isinstance(audio, StreamingAudio):
        raise ConfigError("--checkpoint: streamed (very long) files need all members to share one front-end")
    preds: list[np.ndarray] = [np.zeros(0)] * len(members)
    for key, frontend in fronts.items():
        group = [i for i, m in enumerate(members) if m.frontend_key == key]
        outs = predict_group(audio, spec, frontend, [(members[i].runner, members[i].activation) for i in group], device)
        for i, out in zip(group, outs, strict=True):
            preds[i] = out
    return preds


@dataclass
class _FileOutcome:
    """One file's predictions: per member (n_windows, K_member), or None with the reason it fell back."""

    path: Path
    count: int
    preds: list[np.ndarray] | None
    reason: str = ""
    audio_seconds: float = 0.0


def _predict_files(
    files: list[Path],
    members: list[Member],
    spec: WindowSpec,
    fronts: dict[tuple, torch.nn.Module],
    device: torch.device | str,
    max_whole_seconds: float,
    bar: Any,
    stop: threading.Event | None = None,
) -> list[_FileOutcome]:
    """Predict `files` in order; the next file is decoded (a thread) while the current one is predicted. Returns
    early once `stop` is set (Ctrl-C in the main thread)."""
    sr = spec.sample_rate
    out = []

    def decode(path: Path) -> StreamingAudio | InMemoryAudio:
        return read_audio(str(path), sr, max_whole_seconds)

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: Future = pool.submit(decode, files[0])
        for k, path in enumerate(files):
            if stop is not None and stop.is_set():
                break
            reason = ""
            try:
                audio = pending.result()
            except Exception as err:  # the submission must stay complete: fall back, say so
                audio, reason = None, err.reason if isinstance(err, AudioError) else f"{type(err).__name__}: {err}"
            if k + 1 < len(files):
                pending = pool.submit(decode, files[k + 1])
            if audio is not None:
                try:
                    preds = predict_file(audio, members, spec, fronts, device)
                    count = n_windows(audio.length, spec.window, sr // 2)
                    out.append(_FileOutcome(path, count, preds, audio_seconds=audio.length / sr))
                except AudioError as err:  # a file can fail part-way through streaming
                    audio, reason = None, err.reason
            if audio is None:
                out.append(_FileOutcome(path, _expected_windows(path, spec), None, reason))
            bar.update(1)
    return out


def worker_count(icfg: InferConfig, members: list[Member], device: torch.device | str, n_files: int) -> int:
    """Files predicted in parallel: ``infer.workers``, or with 0 one per CPU core on a CPU runtime (ONNX Runtime,
    OpenVINO) and 1 for torch (whose CUDA or intra-op threads already use the machine)."""
    workers = icfg.workers
    check_processes("infer.workers", workers, per_core=2)  # decoding waits on the disk: 2 a core is sane
    if workers == 0:
        cpu_runtime = str(device) == "cpu" and all(m.factory is not None for m in members)
        workers = usable_cores() if cpu_runtime else 1
    return max(1, min(workers, n_files))


def _predict_side_by_side(
    files: list[Path],
    members: list[Member],
    spec: WindowSpec,
    fronts: dict[tuple, torch.nn.Module],
    device: torch.device | str,
    icfg: InferConfig,
    workers: int,
    bar: Any,
) -> list[_FileOutcome]:
    """:func:`_predict_files` in `workers` threads, worker k taking every k-th file with its own runtime sessions of
    ``threads / workers`` threads; the outcomes in file order. Ctrl-C stops the workers after their current file."""
    threads = max(1, (icfg.threads or os.cpu_count() or 1) // workers)
    crews = [[m.with_threads(threads) for m in members] for _ in range(workers)]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # the front-end's share, per worker
    stop = threading.Event()
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [
                pool.submit(
                    _predict_files, files[k::workers], crews[k], spec, fronts, device, icfg.max_whole_seconds, bar, stop
                )
                for k in range(workers)
            ]
            try:
                parts = [f.result() for f in futures]
            except BaseException:
                stop.set()
                raise
    finally:
        torch.set_num_threads(before)
    return [parts[i % workers][i // workers] for i in range(len(files))]


def _collect(
    outcomes: list[_FileOutcome], members: list[Member], spec: WindowSpec, result: InferResult
) -> tuple[list[str], list[list[np.ndarray]], list[tuple[int, int]]]:
    """Row ids, each member's per-file predictions and the (first row, count) blocks of fallback files; the files,
    audio seconds and fallback reasons counted into `result`."""
    ids: list[str] = []
    member_preds: list[list[np.ndarray]] = [[] for _ in members]
    fallback_rows: list[tuple[int, int]] = []
    for o in outcomes:
        if o.preds is None:
            log.warning("%s: %s; its %d row(s) use the fallback prior", o.path, o.reason, o.count)
            result.fallback_files[str(o.path)] = o.reason
            fallback_rows.append((len(ids), o.count))
        preds = o.preds or [np.full((o.count, len(m.classes)), np.nan) for m in members]
        ids += row_ids(o.path.stem, o.count, spec.window_seconds)
        for i, p in enumerate(preds):
            member_preds[i].append(p)
        result.audio_seconds += o.audio_seconds
        result.files += 1
    return ids, member_preds, fallback_rows


def infer_folder(
    soundscapes: str | Path,
    members: list[Member],
    icfg: InferConfig,
    columns: list[str],
    device: torch.device | str = "cpu",
    progress: bool = True,
    files: list[Path] | None = None,
) -> InferResult:
    """Predict every audio file of `soundscapes` (or only `files`) and return the submission (rows in file order).

    With several workers (:func:`worker_count`), each takes every n-th file with its own runtime sessions of
    ``threads / workers`` threads: decoding, spectrograms and models of different files then run side by side
    instead of the front-end waiting for a model that holds every core.
    """
    files = list_audio(soundscapes) if files is None else files
    if not files:
        raise DataError(f"{soundscapes}: no audio files (ogg/flac/wav/mp3) to predict")
    check_unique_stems(files, Path(soundscapes))
    sr = members[0].cfg.audio.sample_rate
    spec = window_spec(icfg, sr)
    prior = fallback_prior(members, columns)
    fronts = frontends(members, device)
    result = InferResult(submission=pd.DataFrame())
    t0 = time.perf_counter()
    workers = worker_count(icfg, members, device, len(files))
    log.info("predicting %d file(s) of %s with %d worker(s)", len(files), soundscapes, workers)
    with progress_bar(total=len(files), desc="infer", unit="file", wanted=progress) as bar:
        if workers == 1:
            outcomes = _predict_files(files, members, spec, fronts, device, icfg.max_whole_seconds, bar)
        else:
            outcomes = _predict_side_by_side(files, members, spec, fronts, device, icfg, workers, bar)
    ids, member_preds, fallback_rows = _collect(outcomes, members, spec, result)
    scores = combine(
        [np.concatenate(p) for p in member_preds],
        members,
        columns,
        icfg.ensemble,
        icfg.specialist,
        list(icfg.specialist_classes) or None,
    )
    for start, count in fallback_rows:
        scores[start : start + count] = prior
    missing = ~np.isfinite(scores).all(axis=0)
    if missing.any():
        names = [c for c, miss in zip(columns, missing, strict=True) if miss]
        log.warning("%d class(es) no member predicts, filled with the prior: %s", len(names), names[:10])
        scores[:, missing] = prior[missing]
    sub = pd.DataFrame(np.clip(scores, 0.0, 1.0).astype(np.float32), columns=columns)
    sub.insert(0, "row_id", ids)
    result.submission = sub
    result.seconds = time.perf_counter() - t0
    if result.fallback_files:
        log.warning("%d of %d file(s) used the fallback prior", len(result.fallback_files), result.files)
    return result


def describe_entry(cfg: Config, members: list[Member], teacher: TeacherTable | None, columns: list[str]) -> str:
    """One line naming what a submission blended: members and weights, TTA, clip/frame blend, the teacher's share
    per class group (its classes, the agile model's, none)."""
    i = cfg.infer
    names = ", ".join(f"{m.name} ×{m.weight:g}" for m in members)
    line = f"entry: {len(members)} member(s) ({names}), TTA shifts {list(i.tta_shifts)}, clip weight {i.clip_weight:g}"
    if teacher is None:
        return line + "; no teacher"
    known = [c for c in columns if c in teacher.table.columns and teacher.table[c].notna().any()]
    only = set(teacher.agile_only)
    t = cfg.teacher
    what = "BirdNET" if t.infer == "birdnet" else t.infer
    if t.agile:
        what += f" + agile ({t.agile}, weight {t.agile_weight:g}, {t.agile_classes} classes)"
    return (
        f"{line}; teacher {what}: share {t.infer_weight:g} on its {len(known) - len(only)} class(es)"
        + (f", {t.agile_fill_weight:g} on the {len(only)} only the agile model knows" if only else "")
        + f"; our models alone on {len(columns) - len(known)}"
    )


def _expected_windows(path: Path, spec: WindowSpec) -> int:
    """Windows of an unreadable file: from its header if that is readable, else one minute's worth."""
    try:
        import soundfile as sf

        info = sf.info(str(path))
        return n_windows(int(info.frames * spec.sample_rate / info.samplerate), spec.window, spec.sample_rate // 2)
    except Exception:
        return round(60 / spec.window_seconds)


def write_submission(sub: pd.DataFrame, path: str | Path, checkpoints: Sequence[str | Path] = ()) -> Path:
    """Check and write atomically: unique row ids, no NaN, values in [0, 1]. A failed write leaves no partial
    file and raises OutputError naming `path`. The folder's ledger records the `checkpoints` it came from."""
    if sub["row_id"].duplicated().any():
        raise SubmissionError(f"{path}: duplicate row ids, e.g. {sub['row_id'][sub['row_id'].duplicated()].iat[0]}")
    values = sub.drop(columns="row_id").to_numpy(dtype=np.float64)
    if not np.isfinite(values).all() or (values < 0).any() or (values > 1).any():
        raise SubmissionError(f"{path}: submission values must be finite and in [0, 1]")
    path = check_file_output(path, kind="submission")
    with atomic_path(path) as tmp:
        sub.to_csv(tmp, index=False, float_format="%.6f")
    record_output(path, "submission", checkpoints=[str(Path(c).resolve()) for c in checkpoints])
    return path
