"""The teacher's window table read as sequences: one row of windows per soundscape file or focal recording.

``birdsed teacher ... teacher.embeddings=true`` writes, per folder, ``<folder>.csv`` (the teacher's probability of
every class in every 5-s window, NaN = no opinion) and ``<folder>.embeddings.npz`` (each window's embedding). The
soundscape student (:mod:`birdsed.pseudo.student`) reads a folder as :class:`Sequences`: each file's windows in time
order, padded to the longest file; a focal recording longer than ``max_windows`` is cut into consecutive pieces of
at most that many windows. Site and hour come from the file name (``data.name_pattern``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.special import logit

from birdsed.data.folder import split_row_ids
from birdsed.data.soundscapes import name_fields
from birdsed.errors import BirdsedError
from birdsed.models.sequence import SoundscapeStudent
from birdsed.teacher.agile import read_embeddings
from birdsed.teacher.birdnet_tflite import EMBEDDINGS_SUFFIX, read_teacher

EPS = 1e-4  # probabilities are clipped to [EPS, 1 - EPS] before their logit


class StudentError(BirdsedError, ValueError):
    """The soundscape student cannot be trained or applied; the message names the file or setting."""


@dataclass
class Sequences:
    """Windows grouped by file (or focal piece), padded.

    Shapes: emb (N, T, D) float32; teacher (N, T, C) probabilities (NaN = no opinion); valid (N, T) bool;
    rows (N, T) the index of each window in the folder's row order (−1 at padding); site, hour (N,) int
    vocabulary indices (0 = unknown). ``stems`` (N,) the file each sequence comes from.
    """

    emb: np.ndarray
    teacher: np.ndarray
    valid: np.ndarray
    rows: np.ndarray
    site: np.ndarray
    hour: np.ndarray
    stems: np.ndarray

    def __len__(self) -> int:
        return len(self.emb)

    def take(self, idx: np.ndarray) -> Sequences:
        """The sequences `idx` (a bool mask or indices)."""
        return Sequences(*(getattr(self, f)[idx] for f in ("emb", "teacher", "valid", "rows", "site", "hour", "stems")))


def file_fields(stems: list[str], pattern: str) -> tuple[list[str], np.ndarray]:
    """Each stem's site name ('' where the name has none) and hour + 1 (0 where it has none)."""
    sites, hours = [], []
    for stem in stems:
        f = name_fields(stem, pattern)
        sites.append(f.get("site", ""))
        t = f.get("time", "")
        hours.append(int(t[:2]) + 1 if len(t) >= 2 and t[:2].isdigit() and int(t[:2]) < 24 else 0)
    return sites, np.array(hours, dtype=np.int64)


def as_sequences(
    ids: pd.Index,
    emb: np.ndarray,
    teacher: np.ndarray,
    pattern: str,
    sites: list[str],
    max_windows: int = 0,
) -> Sequences:
    """Group window rows into per-file sequences in time order.

    Args:
        ids: (M,) row ids ``<stem>_<end second>``.
        emb: (M, D) embeddings; teacher: (M, C) probabilities (NaN = no opinion).
        pattern: ``data.name_pattern`` (site and hour).
        sites: the site vocabulary (a site not in it is unknown, 0).
        max_windows: > 0 cuts longer files into pieces of at most this many windows (focal recordings).
    """
    stems, ends = split_row_ids(pd.Series(ids, dtype=str))
    order = np.lexsort((ends.to_numpy(), stems.to_numpy()))
    groups: list[np.ndarray] = []
    stem_arr = stems.to_numpy()[order]
    cuts = np.flatnonzero(stem_arr[1:] != stem_arr[:-1]) + 1
    for part in np.split(order, cuts):
        if max_windows > 0 and len(part) > max_windows:
            groups += [part[i : i + max_windows] for i in range(0, len(part), max_windows)]
        else:
            groups.append(part)
    n, t = len(groups), max((len(g) for g in groups), default=1)
    rows = np.full((n, t), -1, dtype=np.int64)
    for i, g in enumerate(groups):
        rows[i, : len(g)] = g
    valid = rows >= 0
    safe = np.where(valid, rows, 0)
    seq_emb = np.where(valid[..., None], emb[safe], 0).astype(np.float32)
    seq_teacher = np.where(valid[..., None], teacher[safe], np.nan).astype(np.float32)
    seq_stems = np.array([stems.iat[g[0]] for g in groups], dtype=object)
    names, hour = file_fields(list(seq_stems), pattern)
    vocab = {s: i + 1 for i, s in enumerate(sites)}
    site = np.array([vocab.get(s, 0) for s in names], dtype=np.int64)
    return Sequences(seq_emb, seq_teacher, valid, rows, site, hour, seq_stems)


def scatter_rows(seq: Sequences, values: np.ndarray, n_rows: int) -> np.ndarray:
    """(N, T, C) per-window values of `seq` back to the folder's (n_rows, C) row order (NaN where no sequence has
    the row)."""
    out = np.full((n_rows, values.shape[-1]), np.nan, dtype=np.float64)
    out[seq.rows[seq.valid]] = values[seq.valid]
    return out


def gather_rows(seq: Sequences, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """(n_rows, C) row-ordered values laid out as `seq`'s (N, T, C), `fill` at padding."""
    safe = np.where(seq.valid, seq.rows, 0)
    return np.where(seq.valid[..., None], values[safe], fill)


@dataclass
class Folder:
    """One folder of the window table: row ids, (M, D) embeddings, (M, C) BirdNET probabilities."""

    ids: pd.Index
    emb: np.ndarray
    birdnet: np.ndarray


def read_folder(teacher_dir: Path, folder: str, classes: list[str]) -> Folder:
    """A folder's window table: embeddings and BirdNET's probabilities in the embeddings' row order.

    Raises:
        StudentError: no embeddings, or the CSV lacks some of their rows.
    """
    path = teacher_dir / f"{folder}{EMBEDDINGS_SUFFIX}"
    if not path.is_file():
        raise StudentError(
            f"{path}: not found; the soundscape student reads the teacher's window embeddings: run `birdsed teacher "
            f"CONFIG --folders {folder} teacher.embeddings=true --out {teacher_dir}`"
        )
    ids, emb = read_embeddings(path)
    table = read_teacher(teacher_dir / f"{folder}.csv", classes)
    missing = ids.difference(table.index)
    if len(missing):
        raise StudentError(
            f"{teacher_dir / f'{folder}.csv'}: lacks {len(missing)} embedding row(s), e.g. {list(missing[:3])}"
        )
    return Folder(ids, emb, table.loc[ids, classes].to_numpy(dtype=np.float64))


def to_logits(p: np.ndarray | torch.Tensor):
    """Probabilities → logits, clipped to [EPS, 1 − EPS]; NaN stays NaN."""
    if isinstance(p, torch.Tensor):
        return torch.logit(p.clamp(EPS, 1 - EPS))
    return logit(np.clip(p, EPS, 1 - EPS))


@torch.no_grad()
def predict_sequences(model: SoundscapeStudent, seq: Sequences, batch: int = 256) -> np.ndarray:
    """(N, T, C) fused probabilities of `seq`'s windows."""
    out = []
    for i in range(0, len(seq), batch):
        sl = slice(i, i + batch)
        emb, teacher = torch.from_numpy(seq.emb[sl]), to_logits(torch.from_numpy(seq.teacher[sl]))
        o = model(
            emb,
            teacher,
            torch.from_numpy(seq.site[sl]),
            torch.from_numpy(seq.hour[sl]),
            torch.from_numpy(seq.valid[sl]),
        )
        out.append(torch.sigmoid(o["logits"]).numpy())
    return np.concatenate(out) if out else np.zeros((0, seq.emb.shape[1], model.head.out_features), np.float32)


def student_probs(model: SoundscapeStudent, folder: Folder, pattern: str) -> np.ndarray:
    """(M, C) the student's fused probabilities of a folder's windows, in its row order."""
    seq = as_sequences(folder.ids, folder.emb, folder.birdnet, pattern, model.sites)
    return scatter_rows(seq, predict_sequences(model, seq), len(folder.ids))


# ---- student run folders ------------------------------------------------------------------------------------------
STUDENT_FILE = "student.pt"  # in a `birdsed student` run folder: the fold's students (one per seed)
STUDENT_FORMAT = "birdsed-soundscape-student-1"


def save_students(path: Path, models: list[SoundscapeStudent], classes: list[str], info: dict) -> None:
    """Write the students of one fold (their architecture, classes, site vocabulary and weights) to `path`."""
    m = models[0]
    arch = {"dim_in": m.norm_in.normalized_shape[0], "hidden": m.head.in_features, "temporal": m.temporal_kind,
            "max_windows": m.max_windows, "dropout": float(m.proj[2].p)}  # fmt: skip
    payload = {"format": STUDENT_FORMAT, "classes": list(classes), "sites": list(m.sites), "arch": arch,
               "info": info, "states": [x.state_dict() for x in models]}  # fmt: skip
    torch.save(payload, path)


def load_students(run: str | Path, columns: list[str] | None = None) -> list[SoundscapeStudent]:
    """The students of a ``birdsed student`` run folder (or its ``student.pt``), in eval mode.

    Raises:
        StudentError: not such a file, damaged, or fitted on other classes than `columns`.
    """
    from birdsed.models.build import load_plain

    path = Path(run) / STUDENT_FILE if Path(run).is_dir() else Path(run)
    if not path.is_file():
        raise StudentError(f"{path}: no soundscape student here (birdsed student writes {STUDENT_FILE})")
    try:
        payload = load_plain(path)
    except Exception as err:  # a damaged or foreign file: torch raises many kinds
        raise StudentError(f"{path}: not a readable soundscape student ({type(err).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != STUDENT_FORMAT:
        raise StudentError(f"{path}: not a birdsed soundscape student (a SED checkpoint goes to --checkpoint)")
    classes, arch = list(payload["classes"]), payload["arch"]
    if columns is not None and classes != list(columns):
        raise StudentError(f"{path}: fitted on {len(classes)} other classes than the submission's {len(columns)}")
    models = []
    for state in payload["states"]:
        model = SoundscapeStudent(arch["dim_in"], len(classes), list(payload["sites"]), arch["hidden"],
                                  arch["temporal"], arch["max_windows"], arch["dropout"])  # fmt: skip
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise StudentError(f"{path}: weights do not fit the stored architecture ({str(err)[:120]})") from None
        models.append(model.eval())
    if not models:
        raise StudentError(f"{path}: holds no student")
    return models


def students_probs(models: list[SoundscapeStudent], folder: Folder, pattern: str) -> np.ndarray:
    """(M, C) the mean over `models` of their fused probabilities of a folder's windows."""
    return np.mean([student_probs(m, folder, pattern) for m in models], axis=0)
