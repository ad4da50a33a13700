"""The soundscape student and its pseudo-label rounds, on the teacher's cached window table (``birdsed student``).

A round costs seconds here, so rounds run over the whole pool, for many seeds, and are measured against controls.

**Data** (:func:`student_data`), read from a ``birdsed teacher ... teacher.embeddings=true`` folder:

- focal recordings (``train_audio``): each recording's windows, in pieces of ``student.max_windows``, every window
  targeted with the recording's labels (primary 1, secondary ``data.secondary_label_value``);
- BirdCLEF+ 2026's labelled training soundscapes: the listed windows with their labels; an unlisted window is
  masked (no target), never a negative; the held-out fold (``data.soundscape_fold``) is left out whole: its files
  reach neither the training windows nor the pool;
- the pool (the other ``train_soundscapes``) with pseudo-labels (:func:`pool_targets`).

**Teacher inputs**: the model fuses BirdNET's own probabilities (``<folder>.csv``, NaN where BirdNET lacks a class)
per class (:class:`birdsed.models.sequence.SoundscapeStudent`). The pool's pseudo-labels in round 1 are BirdNET +
the agile model (refitted without the held-out fold, :func:`birdsed.teacher.agile.fit_gated`); in round r ≥ 2 the
blend of that with round r − 1's student (``student.pool_mix``); then p ↦ p^(1/c) with c = ``pseudo.power[r - 1]``,
probabilities below ``pseudo.trim_prob`` set to 0, a window's label mass capped at ``student.mass_cap``.

**Noisy-student training**: feature dropout and Gaussian noise on the embeddings, MixUp of whole sequences
(embeddings mixed linearly, teacher probabilities and targets by max, masks by and), dropout in the model; each
round trains a fresh student from its own seed.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from birdsed.config import Config
from birdsed.data.folder import BirdCLEFData
from birdsed.data.soundscapes import LabelledWindows, read_if_present
from birdsed.models.sequence import SoundscapeStudent
from birdsed.pseudo.rounds import power_transform, round_power
from birdsed.teacher.agile import AgileInputs, agile_inputs, clip_targets, fit_gated, with_agile
from birdsed.teacher.birdnet_tflite import EMBEDDINGS_SUFFIX
from birdsed.teacher.windows import (
    STUDENT_FILE,
    Folder,
    Sequences,
    StudentError,
    as_sequences,
    file_fields,
    gather_rows,
    predict_sequences,
    read_folder,
    save_students,
    students_probs,
    to_logits,
)

log = logging.getLogger(__name__)


@dataclass
class StudentData:
    """Everything one fold's students train on and predict. Targets and masks are (N, T, C) like the sequences."""

    classes: list[str]
    sites: list[str]
    focal: Sequences
    focal_y: np.ndarray
    labelled: Sequences | None
    labelled_y: np.ndarray | None
    labelled_m: np.ndarray | None
    pool: Sequences
    pool_teacher: np.ndarray  # (N, T, C) BirdNET + agile on the pool, NaN = no opinion
    held: Sequences | None  # the held-out fold's files (all their windows)
    held_rows: pd.Index = field(default_factory=pd.Index)  # the held-out fold's labelled row ids
    held_y: np.ndarray | None = None  # (len(held_rows), C) their labels
    pool_ids: pd.Index = field(default_factory=pd.Index)  # the pool's window row ids (sd.pool's rows index them)
    folders: dict[str, Folder] = field(default_factory=dict)


def fold_agile(cfg: Config, data: BirdCLEFData, inputs: AgileInputs, lw: LabelledWindows | None, fold: int):
    """The agile model fitted without the labelled windows of `fold` (all of them with fold −1)."""
    held = None
    if lw is not None and inputs.labelled is not None and fold >= 0:
        held = lw.table["fold"].to_numpy() == fold
    model, _, _ = fit_gated(cfg, data, inputs, held_out=held, quiet=True)
    return model


def student_data(cfg: Config, data: BirdCLEFData, teacher_dir: Path, fold: int | None = None) -> StudentData:
    """Read the window table for one fold (``data.soundscape_fold`` unless `fold` is given; −1 holds none out)."""
    fold = cfg.data.soundscape_fold if fold is None else fold
    classes = data.classes
    lw = read_if_present(cfg, data.root, classes)
    labelled_files = set(lw.files) if lw is not None else set()
    held_files: set[str] = set()
    if lw is not None and fold >= 0:
        if fold not in set(lw.table["fold"]):
            raise StudentError(
                f"data.soundscape_fold={fold}: the labelled soundscapes have folds {sorted(set(lw.table['fold']))}"
            )
        held_files = set(lw.table.loc[lw.table["fold"] == fold, "filename"])
    s = cfg.student
    focal_f = read_folder(teacher_dir, "train_audio", classes)
    pool_f = read_folder(teacher_dir, "train_soundscapes", classes)
    stems = pd.Series(pool_f.ids.astype(str)).str.rsplit("_", n=1).str[0]
    labelled_stems = {Path(f).stem for f in labelled_files}
    held_stems = {Path(f).stem for f in held_files}
    in_pool = ~stems.isin(labelled_stems).to_numpy()  # the labelled files never enter the pool
    sites_all = sorted(
        {site for site in file_fields(list(stems[~stems.isin(held_stems)]), cfg.data.name_pattern)[0] if site}
    )
    pattern = cfg.data.name_pattern
    focal = as_sequences(focal_f.ids, focal_f.emb, focal_f.birdnet, pattern, sites_all, s.max_windows)
    focal_rows_y = clip_targets(data, focal_f.ids, cfg.data.secondary_label_value)
    focal_y = gather_rows(focal, focal_rows_y)
    inputs = agile_inputs(cfg, data, teacher_dir)
    agile = fold_agile(cfg, data, inputs, lw, fold)
    mask = agile.blend_mask(cfg.teacher.agile_classes)
    blend_pool = with_agile(pool_f.birdnet, agile.predict(pool_f.emb), cfg.teacher.agile_weight, mask)
    pool_idx = np.flatnonzero(in_pool)
    pool = as_sequences(pool_f.ids[pool_idx], pool_f.emb[pool_idx], pool_f.birdnet[pool_idx], pattern, sites_all)
    pool_teacher = gather_rows(pool, blend_pool[pool_idx], np.nan)
    labelled = labelled_y = labelled_m = held = held_y = None
    held_rows = pd.Index([])
    if lw is not None:
        missing = pd.Index(lw.table["row_id"]).difference(pool_f.ids)
        if len(missing):
            raise StudentError(
                f"{teacher_dir}: no embeddings of {len(missing)} labelled window(s), e.g. {list(missing[:3])}"
            )
        train_files = {Path(f).stem for f in labelled_files - held_files}
        keep = np.flatnonzero(stems.isin(train_files).to_numpy())
        labelled = as_sequences(pool_f.ids[keep], pool_f.emb[keep], pool_f.birdnet[keep], pattern, sites_all)
        y_rows = np.zeros((len(keep), len(classes)))
        m_rows = np.zeros((len(keep), len(classes)), dtype=bool)
        local = pd.Series(np.arange(len(keep)), index=pool_f.ids[keep])
        listed = lw.table["filename"].map(lambda f: Path(f).stem).isin(train_files).to_numpy()
        at = local.loc[lw.table["row_id"][listed]].to_numpy()
        y_rows[at], m_rows[at] = lw.targets[listed], True
        labelled_y, labelled_m = gather_rows(labelled, y_rows), gather_rows(labelled, m_rows, False).astype(bool)
        if held_files:
            hk = np.flatnonzero(stems.isin(held_stems).to_numpy())
            held = as_sequences(pool_f.ids[hk], pool_f.emb[hk], pool_f.birdnet[hk], pattern, sites_all)
            held.rows = np.where(held.valid, hk[np.where(held.valid, held.rows, 0)], -1)  # rows of the whole folder
            in_fold = (lw.table["fold"] == fold).to_numpy()
            held_rows, held_y = pd.Index(lw.table.loc[in_fold, "row_id"]), lw.targets[in_fold]
    folders = {"train_audio": focal_f, "train_soundscapes": pool_f}
    return StudentData(classes, sites_all, focal, focal_y, labelled, labelled_y, labelled_m, pool, pool_teacher, held,
                       held_rows, held_y, pool_f.ids[pool_idx], folders)  # fmt: skip


def pool_targets(
    cfg: Config, r: int, teacher: np.ndarray, previous: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Round r's pool targets and mask, both (N, T, C): the teacher blend (round 1) or its blend with round r − 1's
    student (``student.pool_mix``; the student alone where the teacher has no opinion), power-scaled by
    ``pseudo.power[r - 1]``, trimmed below ``pseudo.trim_prob``, each window's label mass capped at
    ``student.mass_cap``.
    """
    q = teacher.copy()
    if previous is not None and r >= 2:
        m = cfg.student.pool_mix
        q = np.where(np.isfinite(teacher), (1 - m) * np.nan_to_num(teacher) + m * previous, previous)
    mask = np.isfinite(q)
    q = power_transform(np.nan_to_num(q), round_power(cfg, r))
    q = np.where(q >= cfg.pseudo.trim_prob, q, 0.0)
    cap = cfg.student.mass_cap
    if cap > 0:
        mass = q.sum(axis=-1, keepdims=True)
        q = q * np.minimum(1.0, cap / np.maximum(mass, 1e-12))
    return q.astype(np.float32), mask


# ---- training -----------------------------------------------------------------------------------------------------
def _pad(a: np.ndarray, t: int, fill) -> np.ndarray:
    if a.shape[1] == t:
        return a
    width = [(0, 0), (0, t - a.shape[1])] + [(0, 0)] * (a.ndim - 2)
    return np.pad(a, width, constant_values=fill)


@dataclass
class Batchable:
    """Training sequences of every source, padded to one length: the model's inputs, (N, T, C) targets and
    masks, and (N,) loss weights."""

    emb: np.ndarray
    teacher: np.ndarray
    valid: np.ndarray
    site: np.ndarray
    hour: np.ndarray
    y: np.ndarray
    m: np.ndarray
    w: np.ndarray


def training_set(cfg: Config, sd: StudentData, pool_y: np.ndarray | None, pool_m: np.ndarray | None) -> Batchable:
    """The sources of one round side by side: focal pieces (weight 1), labelled soundscapes
    (``student.labelled_weight``) and, given its targets, the pool (``student.pool_weight``)."""
    s = cfg.student
    parts = [(sd.focal, sd.focal_y, np.broadcast_to(sd.focal.valid[..., None], sd.focal_y.shape), 1.0)]
    if sd.labelled is not None and len(sd.labelled):
        parts.append((sd.labelled, sd.labelled_y, sd.labelled_m, s.labelled_weight))
    if pool_y is not None and len(sd.pool) and s.pool_weight > 0:
        parts.append((sd.pool, pool_y, pool_m & sd.pool.valid[..., None], s.pool_weight))
    t = max(p[0].emb.shape[1] for p in parts)
    cat = lambda get, fill: np.concatenate([_pad(get(p), t, fill) for p in parts])  # noqa: E731
    return Batchable(
        emb=cat(lambda p: p[0].emb, 0.0),
        teacher=cat(lambda p: p[0].teacher, np.nan),
        valid=cat(lambda p: p[0].valid, False),
        site=np.concatenate([p[0].site for p in parts]),
        hour=np.concatenate([p[0].hour for p in parts]),
        y=cat(lambda p: np.asarray(p[1], dtype=np.float32), 0.0),
        m=cat(lambda p: np.asarray(p[2], dtype=bool) & p[0].valid[..., None], False),
        w=np.concatenate([np.full(len(p[0]), p[3], dtype=np.float32) for p in parts]),
    )


def build_student(cfg: Config, dim: int, classes: list[str], sites: list[str]) -> SoundscapeStudent:
    """The model of ``cfg.student`` for D = `dim` and these classes and sites."""
    s = cfg.student
    return SoundscapeStudent(
        dim, len(classes), sites, s.hidden, s.temporal, max(12, s.max_windows), s.dropout, s.gate_init
    )


def train_student(cfg: Config, sd: StudentData, data: Batchable, seed: int) -> SoundscapeStudent:
    """Train a fresh student on `data` for ``student.epochs`` (AdamW, cosine to 0, masked BCE on the fused logits)."""
    s = cfg.student
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = build_student(cfg, data.emb.shape[-1], sd.classes, sd.sites)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    n = len(data.w)
    steps = s.epochs * math.ceil(n / s.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=max(1, steps), pct_start=0.1)
    tensors = {
        k: torch.from_numpy(np.ascontiguousarray(getattr(data, k)))
        for k in ("emb", "teacher", "valid", "site", "hour", "y", "m", "w")
    }
    model.train()
    for _ in range(s.epochs):
        order = torch.from_numpy(rng.permutation(n))
        for i in range(0, n, s.batch_size):
            idx = order[i : i + s.batch_size]
            b = {k: v[idx] for k, v in tensors.items()}
            emb, teach, y, m, valid = b["emb"], b["teacher"], b["y"], b["m"], b["valid"]
            if s.feature_dropout > 0:
                emb = torch.nn.functional.dropout(emb, s.feature_dropout)
            if s.feature_noise > 0:
                emb = emb + s.feature_noise * emb.std(dim=-1, keepdim=True) * torch.randn(emb.shape, generator=gen)
            if s.mixup > 0 and len(idx) > 1 and rng.random() < s.mixup:
                perm = torch.from_numpy(rng.permutation(len(idx)))
                lam = float(rng.beta(0.4, 0.4))
                emb = lam * emb + (1 - lam) * emb[perm]
                teach = torch.fmax(teach, teach[perm])  # NaN only where both have no opinion
                y, m, valid = torch.maximum(y, y[perm]), m & m[perm], valid | valid[perm]
            out = model(emb, to_logits(teach), b["site"], b["hour"], valid)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out["logits"], y, reduction="none")
            weight = m * b["w"][:, None, None]
            total = (loss * weight).sum() / weight.sum().clamp(min=1.0)
            opt.zero_grad()
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
    model.eval()
    return model


@dataclass
class RoundResult:
    """One round: its student, its pool predictions (N, T, C) and the seconds it took."""

    model: SoundscapeStudent
    pool_pred: np.ndarray
    seconds: float
    pool_labels: str


def run_rounds(
    cfg: Config, sd: StudentData, seed: int, rounds: int | None = None, control: bool = False
) -> list[RoundResult]:
    """Round 0 (no pool: focal + labelled windows) when ``student.rounds`` is 0, else rounds 1..R over the pool.

    `control`: every round r ≥ 2 is trained on round 1's pool labels instead of refreshed ones (the same epochs,
    the same draws: what the new labels bring is the difference). Round r trains with seed ``seed + r``.
    """
    rounds = cfg.student.rounds if rounds is None else rounds
    out: list[RoundResult] = []
    if rounds == 0:
        t0 = time.perf_counter()
        model = train_student(cfg, sd, training_set(cfg, sd, None, None), seed)
        return [RoundResult(model, predict_sequences(model, sd.pool), time.perf_counter() - t0, "none")]
    previous = None
    for r in range(1, rounds + 1):
        t0 = time.perf_counter()
        label_round = 1 if control else r
        y, m = pool_targets(cfg, label_round, sd.pool_teacher, previous if not control else None)
        model = train_student(cfg, sd, training_set(cfg, sd, y, m), seed + r)
        pred = predict_sequences(model, sd.pool)
        out.append(
            RoundResult(model, pred, time.perf_counter() - t0, "teacher" if label_round == 1 else f"round {r - 1}")
        )
        previous = pred
    return out


def run_student(
    cfg: Config, teacher_dir: str | Path, out: str | Path, progress: bool = True, overwrite: bool = False
) -> dict:
    """``birdsed student``: train ``student.seeds`` students (seeds ``train.seed`` + i) for the fold
    ``data.soundscape_fold`` on `teacher_dir`'s window table, with ``student.rounds`` pseudo-label rounds; write
    ``OUT/student.pt`` (:func:`birdsed.teacher.windows.save_students`), ``OUT/labelled_preds.csv`` (the held-out
    fold's labelled windows, what ``birdsed choose`` reads), ``OUT/train_soundscapes.csv`` (the pool, in the teacher
    layout: ``teacher.pseudo`` of a SED student's rounds), ``OUT/test_soundscapes.csv`` where the teacher folder has
    them, ``OUT/student.json`` and ``OUT/config.yaml``.

    Returns:
        what ``student.json`` holds (rounds' seconds, windows per source, the held-out windows' AUC).
    """
    from birdsed.config.load import to_yaml
    from birdsed.data.folder import load_data
    from birdsed.outputs import atomic_path, atomic_write
    from birdsed.ownership import check_dir_output, seal_output
    from birdsed.scoring.metrics import macro_auc

    teacher_dir = Path(teacher_dir)
    data = load_data(cfg)
    out = check_dir_output(out, kind="student", inputs=(data.root, teacher_dir), overwrite=overwrite)
    sd = student_data(cfg, data, teacher_dir)
    models, rounds = [], []
    for i in range(cfg.student.seeds):
        results = run_rounds(cfg, sd, cfg.train.seed + 1000 * i)
        models.append(results[-1].model)
        rounds.append([round(r.seconds, 2) for r in results])
        log.info("student %d/%d: %d round(s) in %.1f s", i + 1, cfg.student.seeds, len(results), sum(rounds[-1]))
    info = {"fold": cfg.data.soundscape_fold, "teacher": str(teacher_dir), "seeds": cfg.student.seeds,
            "round_seconds": rounds, "sequences": {"focal": len(sd.focal), "labelled": len(sd.labelled or []),
                                                   "pool": len(sd.pool)}}  # fmt: skip
    save_students(out / STUDENT_FILE, models, sd.classes, info)
    folder = sd.folders["train_soundscapes"]  # every window of it predicted once: the held-out fold and the pool
    probs = pd.DataFrame(students_probs(models, folder, cfg.data.name_pattern), index=folder.ids, columns=sd.classes)
    tables = {"train_soundscapes.csv": probs.loc[sd.pool_ids]}  # the pool's labels for SED rounds (teacher.pseudo)
    if sd.held is not None:
        tables["labelled_preds.csv"] = probs.loc[sd.held_rows]
        info["labelled_auc"] = macro_auc(sd.held_y, tables["labelled_preds.csv"].to_numpy())
    for name, table in tables.items():
        with atomic_path(out / name) as tmp:
            table.reset_index(names="row_id").to_csv(tmp, index=False, float_format="%.5f")
    if (teacher_dir / f"test_soundscapes{EMBEDDINGS_SUFFIX}").is_file():
        folder = read_folder(teacher_dir, "test_soundscapes", sd.classes)
        table = pd.DataFrame(students_probs(models, folder, cfg.data.name_pattern), columns=sd.classes)
        table.insert(0, "row_id", folder.ids)
        with atomic_path(out / "test_soundscapes.csv") as tmp:
            table.to_csv(tmp, index=False, float_format="%.5f")
    atomic_write(out / "student.json", json.dumps(info, indent=1))
    atomic_write(out / "config.yaml", to_yaml(cfg))
    seal_output(out, "student")
    return info
