"""The one way a folder of soundscapes becomes a submission: :func:`predict`.

``birdsed infer``, the Kaggle bundle's notebook, ``birdsed study``'s infer runs and the pseudo rounds' pool
labelling all call it: the ensemble (checkpoints or members already loaded), its TTA, clip/frame blend, smoothing and
specialist (``infer.*``), then the external teacher and the agile model blended in (``teacher.*``,
:mod:`birdsed.teacher.source`). Threads and device are set here once; every weight travels as a value of ``cfg``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from birdsed.config import Config, ConfigError
from birdsed.data.folder import DataError
from birdsed.inference.ensemble import Member
from birdsed.inference.submit import InferResult, describe_entry, infer_folder, load_ensemble, output_columns
from birdsed.teacher.source import TeacherTable, teacher_source, with_teacher

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """A folder predicted: the submission (the teacher blended in), what inference measured, and what it used."""

    submission: pd.DataFrame
    result: InferResult
    members: list[Member]
    columns: list[str]
    teacher: TeacherTable | None  # the teacher's scores of the folder (NaN = no opinion), or None

    def describe(self, cfg: Config) -> str:
        """One line naming what was blended (:func:`birdsed.inference.submit.describe_entry`)."""
        return describe_entry(cfg, self.members, self.teacher, self.columns)


def device_for(cfg: Config) -> str:
    """``cuda`` for the torch runtime where a GPU is, else ``cpu`` (ONNX Runtime and OpenVINO run on the CPU)."""
    return "cuda" if cfg.infer.runtime == "torch" and torch.cuda.is_available() else "cpu"


def predict(
    cfg: Config,
    models: Sequence[str | Path] | Sequence[Member],
    soundscapes: str | Path,
    sample_submission: str | Path | None = None,
    files: Sequence[Path] | None = None,
    device: str | None = None,
    progress: bool = False,
    columns: list[str] | None = None,
) -> Prediction:
    """Predict every file of `soundscapes` (or `files` of it) as ``cfg.infer`` says.

    Args:
        cfg: the settings (``infer.*``, ``teacher.*``; ``data.root`` is where the teacher's taxonomy is looked for).
        models: checkpoints (``.pt``, run or export folders) or members already loaded; none: the teacher alone
            (``teacher.infer``, with its agile model and soundscape students) makes the submission.
        sample_submission: the submission's columns (else the first member's classes).
        files: a subset of the folder's files (default: all).
        device: default :func:`device_for`.
        columns: the submission's columns, where the caller has them already.

    Returns:
        the :class:`Prediction`; its submission has every row of every file (fallback rows for unreadable ones).
    """
    if cfg.infer.threads:
        torch.set_num_threads(cfg.infer.threads)
    if not models:
        return _teacher_alone(cfg, Path(soundscapes), sample_submission, files, columns)
    device = device or device_for(cfg)
    members = (
        list(models) if models and isinstance(models[0], Member) else load_ensemble(list(models), cfg.infer, device)  # type: ignore[arg-type]
    )
    sample = Path(sample_submission) if sample_submission else None
    columns = columns or output_columns(members, sample)
    teacher = teacher_source(cfg, columns, [m.cfg.data.root for m in members])  # a bad teacher fails first
    result = infer_folder(Path(soundscapes), members, cfg.infer, columns, device, progress, files)
    table = teacher(Path(soundscapes)) if teacher is not None else None
    submission = with_teacher(result.submission, table, cfg) if table is not None else result.submission
    return Prediction(submission, result, members, columns, table)


def _teacher_alone(
    cfg: Config,
    soundscapes: Path,
    sample_submission: str | Path | None,
    files: Sequence[Path] | None,
    columns: list[str] | None,
) -> Prediction:
    """The submission of the teacher alone: its table's rows for every file it read; a file it could not read, and
    a class it has no opinion of, get 1 / C (a logged fallback: the submission stays complete).

    Raises:
        ConfigError: no teacher (``teacher.infer`` empty), or no sample submission to take the columns from.
    """
    from birdsed.data.audio import list_audio
    from birdsed.data.folder import check_unique_stems, row_ids
    from birdsed.inference.submit import _expected_windows, window_spec

    if not cfg.teacher.infer:
        raise ConfigError("no --checkpoint and no teacher.infer: there is nothing to predict with")
    if columns is None:
        if sample_submission is None:
            raise ConfigError("the teacher alone needs --sample-submission for the submission's columns")
        columns = output_columns([], Path(sample_submission))
    files = list_audio(soundscapes) if files is None else list(files)
    if not files:
        raise DataError(f"{soundscapes}: no audio files (ogg/flac/wav/mp3) to predict")
    check_unique_stems(files, soundscapes)
    source = teacher_source(cfg, columns)
    assert source is not None  # teacher.infer is set
    t0 = time.perf_counter()
    table = source(soundscapes)
    known = table.table.reindex(columns=columns)
    rows_of = known.index.str.rsplit("_", n=1).str[0].value_counts()  # windows per file the teacher read
    spec = window_spec(cfg.infer, cfg.audio.sample_rate)
    result = InferResult(submission=pd.DataFrame())
    ids: list[str] = []
    for path in files:
        n = int(rows_of.get(path.stem, 0))
        if n == 0:
            n = _expected_windows(path, spec)
            result.fallback_files[str(path)] = "the teacher could not read it"
            log.warning("%s: the teacher has no rows for it; its %d row(s) use the fallback 1/C", path, n)
        ids += row_ids(path.stem, n, cfg.infer.window_seconds)
        result.files += 1
        result.audio_seconds += n * cfg.infer.window_seconds
    values = known.reindex(ids).to_numpy(dtype=np.float64)
    lacking = [c for c, ok in zip(columns, np.isfinite(values).any(axis=0), strict=True) if not ok]
    if lacking:
        log.warning("%d class(es) the teacher has no opinion of get the fallback 1/C: %s", len(lacking), lacking[:10])
    sub = pd.DataFrame(np.clip(np.where(np.isfinite(values), values, 1.0 / len(columns)), 0, 1), columns=columns)
    sub.insert(0, "row_id", ids)
    result.submission, result.seconds = sub, time.perf_counter() - t0
    return Prediction(sub, result, [], columns, table)
