"""The one way a folder of soundscapes becomes a submission: :func:`predict`.

``birdsed infer``, the Kaggle bundle's notebook, ``birdsed study``'s infer runs and the pseudo rounds' pool
labelling all call it: the ensemble (checkpoints or members already loaded), its TTA, clip/frame blend, smoothing and
specialist (``infer.*``), then the external teacher and the agile model blended in (``teacher.*``,
:mod:`birdsed.teacher.source`). Threads and device are set here once; every weight travels as a value of ``cfg``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from birdsed.config import Config
from birdsed.inference.ensemble import Member
from birdsed.inference.submit import InferResult, describe_entry, infer_folder, load_ensemble, output_columns
from birdsed.teacher.source import TeacherTable, teacher_source, with_teacher


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
        models: checkpoints (``.pt``, run or export folders) or members already loaded.
        sample_submission: the submission's columns (else the first member's classes).
        files: a subset of the folder's files (default: all).
        device: default :func:`device_for`.
        columns: the submission's columns, where the caller has them already.

    Returns:
        the :class:`Prediction`; its submission has every row of every file (fallback rows for unreadable ones).
    """
    if cfg.infer.threads:
        torch.set_num_threads(cfg.infer.threads)
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
