"""``birdsed choose``: the entry chosen on the competition folder's own labelled soundscapes, out of fold.

BirdCLEF+ 2026 ships labelled *training* soundscapes (``train_soundscapes_labels.csv``): the only labels of the
competition's own domain. A share of the student in the blend that wins on one dataset lost on another three times,
so the share is chosen here, on the user's folder, and never shipped as a constant:

- **BirdNET** (the teacher CSV of ``train_soundscapes``) never trained on those windows;
- **the agile model** is refitted once per fold of the labelled windows (``data.soundscape_folds`` grouped by
  ``data.val_group``), without that fold, gate included (:func:`birdsed.teacher.agile.fit_gated`), and blended into
  BirdNET as ``birdsed infer`` blends it;
- **the student** is what runs trained with ``data.soundscape_fold=k`` predict for their held-out fold k (the rows
  of their ``labelled_preds.csv``), through :func:`birdsed.inference.predict.predict` as ``birdsed infer`` would,
  once per inference variant (the config's TTA shifts and clip/frame blend, and without either); runs of one fold
  are averaged (an ensemble of seeds).

Chosen together, as ``birdsed infer`` uses them: the students' variant (``infer.tta_shifts``,
``infer.clip_weight``), ``teacher.infer_weight`` (the teacher's share in the classes BirdNET knows) and
``teacher.agile_fill_weight`` (its share where only the agile model knows a class), shares from a grid; the student
alone decides a class neither knows. The choice is scored by nested cross-validation — for each fold, the
shares that win on the other folds are applied to it — so the reported figure is never the one it was chosen on; it
stands beside BirdNET + agile's (both shares 1) on the same windows. A student share is kept only where that nested
figure beats the safe entry's (else the shares stay 1 and 1, said in a warning). Ties go to the larger teacher share
(the safe side, the config's own variant). The final choice, made on every fold, is written into the config that
``birdsed infer`` and ``birdsed bundle`` read as their CONFIG.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd

from birdsed.config import Config
from birdsed.config.load import to_yaml
from birdsed.data.folder import BirdCLEFData, load_data
from birdsed.data.soundscapes import LabelledWindows, read_if_present
from birdsed.errors import BirdsedError
from birdsed.inference.predict import predict
from birdsed.outputs import atomic_write
from birdsed.ownership import check_file_output, record_output
from birdsed.scoring.metrics import macro_auc
from birdsed.teacher.agile import agile_inputs, fit_gated, with_agile
from birdsed.teacher.birdnet_tflite import EMBEDDINGS_SUFFIX, read_teacher
from birdsed.teacher.blend import blend_teacher

log = logging.getLogger(__name__)

GRID = (1.0, 0.75, 0.5, 0.25, 0.0)  # teacher shares, the safe side first: a tie keeps the larger share
MARKER = "# birdsed choose"  # the first line of every entry file it writes (and the only ones it replaces)


class ChooseError(BirdsedError, ValueError):
    """The entry cannot be chosen: no labelled soundscapes, or predictions that do not cover them."""


@dataclass
class Choice:
    """The chosen shares and their figures on the labelled windows."""

    teacher_weight: float
    agile_fill_weight: float
    student_weight: float  # the soundscape students' share in the teacher (teacher.student_weight)
    oof_auc: float  # the kept entry, out of fold: the nested figure of the choice where kept, else the safe entry's
    procedure_auc: float  # the choice procedure, nested: each fold blended with the shares chosen on the others
    baseline_auc: float  # BirdNET + agile (both shares 1) on the same windows
    student_auc: float  # the students alone (SED and soundscape students' mean)
    windows: int
    folds: list[dict] = field(default_factory=list)
    infer: dict = field(default_factory=dict)  # the student's chosen inference settings (TTA shifts, clip weight)
    variants: dict = field(default_factory=dict)  # each variant's students-alone figure

    def settings(self) -> str:
        """The chosen keys as ``key=value`` words."""
        words = [
            f"teacher.infer_weight={self.teacher_weight:g}",
            f"teacher.agile_fill_weight={self.agile_fill_weight:g}",
            f"teacher.student_weight={self.student_weight:g}",
        ]
        if self.infer:
            words += [
                f"infer.tta_shifts={self.infer['tta_shifts']}",
                f"infer.clip_weight={self.infer['clip_weight']:g}",
            ]
        return " ".join(words)


def teacher_on_windows(
    cfg: Config, data: BirdCLEFData, teacher_dir: Path, lw: LabelledWindows
) -> tuple[np.ndarray, np.ndarray]:
    """(M, C) BirdNET + agile on the labelled windows, the agile model refitted without each window's fold (NaN
    where neither knows a class), and (C,) bool the classes only the agile model knows. Without ``train_audio``
    embeddings in `teacher_dir`, BirdNET alone."""
    ids = lw.table["row_id"]
    birdnet = read_teacher(teacher_dir / "train_soundscapes.csv", data.classes)
    missing = pd.Index(ids).difference(birdnet.index)
    if len(missing):
        raise ChooseError(
            f"{teacher_dir / 'train_soundscapes.csv'}: no rows for {len(missing)} labelled window(s), e.g. "
            f"{list(missing[:3])}; run `birdsed teacher` on train_soundscapes"
        )
    scores = birdnet.loc[ids, data.classes].to_numpy(dtype=np.float64)
    if not (teacher_dir / f"train_audio{EMBEDDINGS_SUFFIX}").is_file():
        log.info("choose: no train_audio embeddings in %s: BirdNET alone, no agile model", teacher_dir)
        return scores, np.zeros(len(data.classes), dtype=bool)
    inputs = agile_inputs(cfg, data, teacher_dir)  # read once; the labelled windows' embeddings in lw's order
    x = inputs.labelled[0]
    out = np.full_like(scores, np.nan)
    folds = lw.table["fold"].to_numpy()
    for k in np.unique(folds):
        held = folds == k
        model, _, _ = fit_gated(cfg, data, inputs, held_out=held, quiet=True)
        mask = model.blend_mask(cfg.teacher.agile_classes)
        out[held] = with_agile(scores[held], model.predict(x[held]), cfg.teacher.agile_weight, mask)
    return out, ~np.isfinite(scores).any(axis=0) & np.isfinite(out).any(axis=0)


def held_out_rows(runs: list[Path], lw: LabelledWindows, classes: list[str]) -> dict[Path, np.ndarray]:
    """Each run's held-out labelled windows (the rows of its ``labelled_preds.csv``), as row indices of `lw`
    (:func:`held_out_preds` without the predictions)."""
    return {run: rows for run, (rows, _) in held_out_preds(runs, lw, classes).items()}


def held_out_preds(
    runs: list[Path], lw: LabelledWindows, classes: list[str]
) -> dict[Path, tuple[np.ndarray, np.ndarray]]:
    """Each run's held-out labelled windows as row indices of `lw`, with its (rows, C) predictions of them in that
    order (its ``labelled_preds.csv``, read once).

    Raises:
        ChooseError: a run without ``labelled_preds.csv``, or one whose rows are not one held-out fold of these folds
            (it trained with other ``data.soundscape_*`` settings: its predictions would not be out of fold here).
    """
    index = pd.Series(np.arange(len(lw)), index=lw.table["row_id"])
    held = {}
    for run in runs:
        path = Path(run) / "labelled_preds.csv"
        if not path.is_file():
            raise ChooseError(f"{path}: not found; train with data.soundscape_fold=k (k >= 0) to hold a fold out")
        preds = read_teacher(path, classes)
        unknown = preds.index.difference(index.index)
        if len(unknown):
            raise ChooseError(f"{path}: rows that are not labelled windows of this folder, e.g. {list(unknown[:3])}")
        rows = index.loc[preds.index].to_numpy()
        folds = lw.table["fold"].to_numpy()
        if len(np.unique(folds[rows])) != 1:
            raise ChooseError(f"{path}: its rows span several folds here; use the run's data.soundscape_* settings")
        whole = int((folds == folds[rows[0]]).sum())
        gaps = int((~np.isfinite(preds.to_numpy(dtype=float))).any(axis=1).sum())
        if len(rows) != whole or gaps:
            raise ChooseError(
                f"{path}: damaged: {len(rows)} of fold {folds[rows[0]]}'s {whole} labelled windows, {gaps} with "
                "missing values (cut short?); retrain the run or remove it"
            )
        held[Path(run)] = (rows, preds.to_numpy(dtype=np.float64))
    return held


def infer_variants(cfg: Config) -> list[dict]:
    """The students' inference settings tried: the config's own first, then without its TTA and/or with the clip
    output alone (``infer.tta_shifts``, ``infer.clip_weight``)."""
    own = {"tta_shifts": list(cfg.infer.tta_shifts), "clip_weight": cfg.infer.clip_weight}
    out = [own]
    for tta, clip in product((own["tta_shifts"], [0.0]), (own["clip_weight"], 1.0)):
        v = {"tta_shifts": tta, "clip_weight": clip}
        if v not in out:
            out.append(v)
    return out


def student_variants(
    cfg: Config, root: Path, held: dict[Path, np.ndarray], lw: LabelledWindows, classes: list[str]
) -> list[tuple[dict, np.ndarray]]:
    """For each of :func:`infer_variants`: (its settings, (M, C) the runs' predictions of the windows they held out,
    made as ``birdsed infer`` makes them with those settings; the mean where several runs held a window out, NaN
    where none did)."""
    out = []
    for v in infer_variants(cfg):
        vcfg = copy.deepcopy(cfg)
        vcfg.infer.tta_shifts, vcfg.infer.clip_weight = v["tta_shifts"], v["clip_weight"]
        # the students alone: the teacher (with its agile model and soundscape students) is blended by the choice
        vcfg.teacher.infer, vcfg.teacher.agile, vcfg.teacher.student = "", "", []
        parts = []
        for run, rows in held.items():
            names = sorted(set(lw.table["filename"].iloc[rows]))
            files = [root / "train_soundscapes" / n for n in names]
            sub = predict(vcfg, [run], root / "train_soundscapes", files=files, device="cpu", columns=classes)
            table = sub.submission.set_index("row_id")
            parts.append((rows, table.loc[lw.table["row_id"].iloc[rows], classes].to_numpy(dtype=np.float64)))
        out.append((v, mean_over_runs(parts, (len(lw), len(classes)))))
    return out


def blend(
    student: np.ndarray,
    teacher: np.ndarray,
    weight: float,
    fill: float,
    agile_only: np.ndarray,
    soundscape: np.ndarray | None = None,
    share: float = 0.0,
    mode: str = "mean",
) -> np.ndarray:
    """As ``birdsed infer`` blends: the soundscape students (`soundscape`) join the teacher at their share `share`
    (``teacher.student_weight``; they alone where the teacher has no opinion), then that teacher takes `weight` in
    the classes BirdNET knows, `fill` in those only the agile model knows (`agile_only`, (C,) bool), the SED
    students alone where the teacher has no opinion. (M, C)."""
    if soundscape is not None:
        teacher = blend_teacher(soundscape, teacher, 1.0 - share)
    shares = np.where(agile_only, fill, weight)
    return blend_teacher(student, teacher, shares, mode)


SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)  # the soundscape students' share in the teacher, the safe side first


def _candidates(n_variants: int, sed: bool, soundscape: bool) -> list[tuple[int, float, float, float]]:
    """(variant, teacher share, agile fill, soundscape share), the safe entry first: without SED students their
    shares stay 1 (nothing to share with), without soundscape students theirs 0."""
    grid = GRID if sed else (1.0,)
    return list(product(range(n_variants), grid, grid, SHARES if soundscape else (0.0,)))


def _best(
    y: np.ndarray,
    students: list[np.ndarray],
    teacher: np.ndarray,
    agile_only: np.ndarray,
    soundscape: np.ndarray | None,
    candidates: list[tuple[int, float, float, float]],
    mode: str,
) -> tuple[int, float, float, float]:
    """The candidate with the best macro AUC; ties go to the earlier one (the config's own variant, the larger
    teacher shares, the smaller soundscape share)."""
    best, pick = -np.inf, candidates[0]
    for v, w, f, s in candidates:
        auc = macro_auc(y, blend(students[v], teacher, w, f, agile_only, soundscape, s, mode))
        if auc > best + 1e-12:
            best, pick = auc, (v, w, f, s)
    return pick


def choose_shares(
    y: np.ndarray,
    students: list[np.ndarray],
    teacher: np.ndarray,
    agile_only: np.ndarray,
    folds: np.ndarray,
    variants: list[dict] | None = None,
    soundscape: np.ndarray | None = None,
    mode: str = "mean",
) -> Choice:
    """The SED students' inference variant, the teacher's shares and the soundscape students' share, chosen on all
    windows; their nested out-of-fold figure and the baselines'. Shapes: y, each of `students` (one per variant;
    empty: no SED students), teacher, soundscape (M, C); agile_only (C,) bool; folds (M,).

    ``oof_auc`` is the figure of the entry kept: the nested figure of the choice where it beat the safe entry (and
    the choice is kept), else the safe entry's (the choice is dropped, and so is its figure: ``procedure_auc``)."""
    sed = bool(students)
    students = students or [np.full_like(teacher, np.nan)]
    variants = variants or [{} for _ in students]
    candidates = _candidates(len(students), sed, soundscape is not None)
    per_fold, chosen_aucs, safe_aucs = [], [], []
    for k in np.unique(folds):
        held = folds == k
        part = None if soundscape is None else soundscape[~held]
        v, w, f, s = _best(y[~held], [x[~held] for x in students], teacher[~held], agile_only, part, candidates, mode)
        here = None if soundscape is None else soundscape[held]
        chosen_aucs.append(macro_auc(y[held], blend(students[v][held], teacher[held], w, f, agile_only, here, s, mode)))
        safe_aucs.append(
            macro_auc(y[held], blend(students[v][held], teacher[held], 1.0, 1.0, agile_only, here, 0.0, mode))
        )
        per_fold.append({"fold": int(k), "windows": int(held.sum()), "infer": variants[v], "teacher_weight": w,
                         "agile_fill_weight": f, "student_weight": s, "auc": chosen_aucs[-1],
                         "safe_auc": safe_aucs[-1]})  # fmt: skip
    v, w, f, s = _best(y, students, teacher, agile_only, soundscape, candidates, mode)
    # each fold scored on its own windows and the folds averaged: folds blended with other shares are never ranked
    # against each other (a pooled AUC would mix their scales), and the safe entry is scored the same way, paired
    procedure, safe = float(np.nanmean(chosen_aucs)), float(np.nanmean(safe_aucs))
    kept = procedure
    if (w, f, s) != (1.0, 1.0, 0.0) and not procedure > safe:
        # the procedure that chose a student share did not beat the safe entry out of fold: keep the safe shares
        log.warning(
            "choose: student shares (teacher %g, agile fill %g, soundscape students %g) win in sample, but choosing "
            "them scored %.4f out of fold against the safe entry's %.4f: the safe shares are kept", w, f, s,
            procedure, safe,
        )  # fmt: skip
        w, f, s, kept = 1.0, 1.0, 0.0, safe
    alone = [x for x in (students[v] if sed else None, soundscape) if x is not None]
    return Choice(
        teacher_weight=w,
        agile_fill_weight=f,
        student_weight=s,
        oof_auc=kept,
        procedure_auc=procedure,
        baseline_auc=safe,
        student_auc=macro_auc(y, np.nanmean(alone, axis=0)) if alone else float("nan"),
        windows=len(y),
        folds=per_fold,
        infer=variants[v],
        variants={str(var): round(macro_auc(y, x), 4) for var, x in zip(variants, students, strict=True)}
        if sed
        else {},
    )


def soundscape_rows(runs: list[Path], lw: LabelledWindows, classes: list[str]) -> np.ndarray:
    """(M, C) the soundscape students' predictions of the labelled windows they held out (their
    ``labelled_preds.csv``; the mean where several runs held a window out, NaN where none did)."""
    return mean_over_runs(held_out_preds(runs, lw, classes).values(), (len(lw), len(classes)))


def mean_over_runs(parts, shape: tuple[int, int]) -> np.ndarray:
    """(M, C) the mean of several runs' (rows, (n, C) predictions) where they overlap, NaN where no run has a row."""
    total, count = np.zeros(shape), np.zeros(shape[0])
    for rows, values in parts:
        total[rows] += values
        count[rows] += 1
    out = np.full(shape, np.nan)
    out[count > 0] = total[count > 0] / count[count > 0, None]
    return out


def run_choose(
    cfg: Config, teacher_dir: str | Path, runs: list[str | Path], out: str | Path, students: list[str | Path] = ()
) -> Choice:
    """``birdsed choose``: choose ``teacher.infer_weight``, ``teacher.agile_fill_weight`` and, given soundscape
    students (`students`, ``birdsed student`` runs), ``teacher.student_weight`` on the folder's labelled soundscapes
    (see the module's text); write `out` (the config with the chosen shares, ``infer``'s CONFIG) and ``<out>.json``
    (the figures)."""
    if not runs and not students:
        raise ChooseError("nothing to choose a share for: give --runs (SED students) and/or --students")
    out = check_file_output(out, kind="entry")
    record = check_file_output(Path(f"{out}.json"), kind="entry-json")
    data = load_data(cfg)
    lw = read_if_present(cfg, data.root, data.classes)
    if lw is None:
        raise ChooseError(
            f"{data.root}: no labelled soundscapes (train_soundscapes_labels.csv) to choose on; keep the safe "
            "defaults (teacher.infer_weight=1, teacher.agile_fill_weight=1, teacher.student_weight=0)"
        )
    teacher, agile_only = teacher_on_windows(cfg, data, Path(teacher_dir), lw)
    variants = []
    if runs:
        variants = student_variants(cfg, data.root, held_out_rows([Path(r) for r in runs], lw, data.classes), lw,
                                    data.classes)  # fmt: skip
    soundscape = soundscape_rows([Path(r) for r in students], lw, data.classes) if students else None
    covered = np.ones(len(lw), dtype=bool)
    for pred in [p for _, p in variants] + ([soundscape] if soundscape is not None else []):
        covered &= np.isfinite(pred).all(axis=1)
    if not covered.any():
        raise ChooseError("the runs hold out no labelled window in common; train with data.soundscape_fold=k (k >= 0)")
    if not covered.all():
        log.warning(
            "choose: the runs hold out %d of %d labelled windows (folds %s); the choice is made and scored on those",
            int(covered.sum()), len(lw), sorted(set(lw.table["fold"][covered])),
        )  # fmt: skip
    folds = lw.table["fold"].to_numpy()[covered]
    if len(np.unique(folds)) < 2:
        raise ChooseError("the runs hold out one fold only; nested choice needs runs of at least 2 folds")
    choice = choose_shares(
        lw.targets[covered], [p[covered] for _, p in variants], teacher[covered], agile_only, folds,
        [v for v, _ in variants], None if soundscape is None else soundscape[covered], cfg.infer.ensemble,
    )  # fmt: skip
    chosen = copy.deepcopy(cfg)
    t = chosen.teacher
    t.infer_weight, t.agile_fill_weight, t.student_weight = (
        choice.teacher_weight,
        choice.agile_fill_weight,
        choice.student_weight,
    )
    if students:
        t.student = [str(Path(r)) for r in students]
    if runs:
        chosen.infer.tta_shifts, chosen.infer.clip_weight = choice.infer["tta_shifts"], choice.infer["clip_weight"]
    head = (
        f"{MARKER}: {choice.settings()}, chosen on {choice.windows} labelled windows of {data.root}; out of fold "
        f"{choice.oof_auc:.4f} vs BirdNET + agile {choice.baseline_auc:.4f} ({out.name}.json)\n"
    )
    atomic_write(out, head + to_yaml(chosen))
    record_output(out, "entry")
    runs_info = {"runs": [str(r) for r in runs], "students": [str(r) for r in students]}
    atomic_write(record, json.dumps({"birdsed": "choose", **choice.__dict__, **runs_info}, indent=1))
    record_output(record, "entry-json")
    return choice
