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

from birdsed.config import Config, to_yaml
from birdsed.data.folder import BirdCLEFData, load_birdclef
from birdsed.data.soundscapes import LabelledWindows, read_if_present
from birdsed.errors import BirdsedError
from birdsed.inference.predict import predict
from birdsed.outputs import atomic_write, check_file_output, record_output
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
    oof_auc: float  # the choice procedure, nested: each fold blended with the shares chosen on the others
    baseline_auc: float  # BirdNET + agile (both shares 1) on the same windows
    student_auc: float  # the student alone
    windows: int
    folds: list[dict] = field(default_factory=list)
    infer: dict = field(default_factory=dict)  # the student's chosen inference settings (TTA shifts, clip weight)
    variants: dict = field(default_factory=dict)  # each variant's students-alone figure


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
    """Each run's held-out labelled windows (the rows of its ``labelled_preds.csv``), as row indices of `lw`.

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
        if len(np.unique(lw.table["fold"].to_numpy()[rows])) != 1:
            raise ChooseError(f"{path}: its rows span several folds here; use the run's data.soundscape_* settings")
        held[Path(run)] = rows
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
        vcfg.teacher.infer, vcfg.teacher.agile = "", ""  # the students alone: the teacher is blended by the choice
        total, count = np.zeros((len(lw), len(classes))), np.zeros(len(lw))
        for run, rows in held.items():
            names = sorted(set(lw.table["filename"].iloc[rows]))
            files = [root / "train_soundscapes" / n for n in names]
            sub = predict(vcfg, [run], root / "train_soundscapes", files=files, device="cpu", columns=classes)
            table = sub.submission.set_index("row_id")
            total[rows] += table.loc[lw.table["row_id"].iloc[rows], classes].to_numpy(dtype=np.float64)
            count[rows] += 1
        pred = np.full_like(total, np.nan)
        pred[count > 0] = total[count > 0] / count[count > 0, None]
        out.append((v, pred))
    return out


def blend(student: np.ndarray, teacher: np.ndarray, weight: float, fill: float, agile_only: np.ndarray) -> np.ndarray:
    """As ``birdsed infer`` blends: the teacher's share `weight` in the classes BirdNET knows, `fill` in those only
    the agile model knows (`agile_only`, (C,) bool), the student alone where the teacher has no opinion. (M, C)."""
    shares = np.where(agile_only, fill, weight)
    return blend_teacher(student, teacher, shares)


def _best(
    y: np.ndarray, students: list[np.ndarray], teacher: np.ndarray, agile_only: np.ndarray
) -> tuple[int, float, float]:
    """(variant, teacher share, agile fill) with the best macro AUC; ties go to the earlier variant (the config's
    own) and the larger teacher shares (GRID's order)."""
    best, pick = -np.inf, (0, 1.0, 1.0)
    for v, student in enumerate(students):
        for w, f in product(GRID, GRID):
            auc = macro_auc(y, blend(student, teacher, w, f, agile_only))
            if auc > best + 1e-12:
                best, pick = auc, (v, w, f)
    return pick


def choose_shares(
    y: np.ndarray,
    students: list[np.ndarray],
    teacher: np.ndarray,
    agile_only: np.ndarray,
    folds: np.ndarray,
    variants: list[dict] | None = None,
) -> Choice:
    """The students' inference variant and the teacher's shares, chosen on all windows; their nested out-of-fold
    figure and the baselines'. Shapes: y, each of `students` (one per variant), teacher (M, C); agile_only (C,)
    bool; folds (M,)."""
    variants = variants or [{} for _ in students]
    oof = np.full_like(teacher, np.nan)
    per_fold = []
    for k in np.unique(folds):
        held = folds == k
        v, w, f = _best(y[~held], [s[~held] for s in students], teacher[~held], agile_only)
        oof[held] = blend(students[v][held], teacher[held], w, f, agile_only)
        per_fold.append({"fold": int(k), "windows": int(held.sum()), "infer": variants[v], "teacher_weight": w,
                         "agile_fill_weight": f})  # fmt: skip
    v, w, f = _best(y, students, teacher, agile_only)
    oof_auc = macro_auc(y, oof)
    safe = macro_auc(y, blend(students[v], teacher, 1.0, 1.0, agile_only))
    if (w, f) != (1.0, 1.0) and not oof_auc > safe:
        # the procedure that chose a student share did not beat the safe entry out of fold: keep the safe shares
        log.warning(
            "choose: a student share (teacher %g, agile fill %g) wins in sample, but choosing one scored %.4f out of "
            "fold against the safe entry's %.4f: the safe shares (1, 1) are kept", w, f, oof_auc, safe,
        )  # fmt: skip
        w, f = 1.0, 1.0
    return Choice(
        teacher_weight=w,
        agile_fill_weight=f,
        oof_auc=oof_auc,
        baseline_auc=safe,
        student_auc=macro_auc(y, students[v]),
        windows=len(y),
        folds=per_fold,
        infer=variants[v],
        variants={str(var): round(macro_auc(y, s), 4) for var, s in zip(variants, students, strict=True)},
    )


def run_choose(cfg: Config, teacher_dir: str | Path, runs: list[str | Path], out: str | Path) -> Choice:
    """``birdsed choose``: choose ``teacher.infer_weight`` and ``teacher.agile_fill_weight`` on the folder's labelled
    soundscapes (see the module's text); write `out` (the config with the chosen shares, ``infer``'s CONFIG)
    and ``<out>.json`` (the figures)."""
    out = check_file_output(out, kind="entry")
    record = check_file_output(Path(f"{out}.json"), kind="entry-json")
    data = load_birdclef(cfg.data.root)
    lw = read_if_present(cfg, data.root, data.classes)
    if lw is None:
        raise ChooseError(
            f"{data.root}: no labelled soundscapes (train_soundscapes_labels.csv) to choose on; keep the safe "
            "defaults (teacher.infer_weight=1, teacher.agile_fill_weight=1)"
        )
    teacher, agile_only = teacher_on_windows(cfg, data, Path(teacher_dir), lw)
    held = held_out_rows([Path(r) for r in runs], lw, data.classes)
    variants = student_variants(cfg, data.root, held, lw, data.classes)
    covered = np.isfinite(variants[0][1]).all(axis=1)
    if not covered.any():
        raise ChooseError("the runs hold out no labelled window; train with data.soundscape_fold=k (k >= 0)")
    if not covered.all():
        log.warning(
            "choose: the runs hold out %d of %d labelled windows (folds %s); the choice is made and scored on those",
            int(covered.sum()), len(lw), sorted(set(lw.table["fold"][covered])),
        )  # fmt: skip
    folds = lw.table["fold"].to_numpy()[covered]
    if len(np.unique(folds)) < 2:
        raise ChooseError("the runs hold out one fold only; nested choice needs runs of at least 2 folds")
    students = [pred[covered] for _, pred in variants]
    settings = [v for v, _ in variants]
    choice = choose_shares(lw.targets[covered], students, teacher[covered], agile_only, folds, settings)
    chosen = copy.deepcopy(cfg)
    chosen.teacher.infer_weight, chosen.teacher.agile_fill_weight = choice.teacher_weight, choice.agile_fill_weight
    chosen.infer.tta_shifts, chosen.infer.clip_weight = choice.infer["tta_shifts"], choice.infer["clip_weight"]
    head = (
        f"{MARKER}: teacher.infer_weight={choice.teacher_weight:g} teacher.agile_fill_weight="
        f"{choice.agile_fill_weight:g} infer.tta_shifts={choice.infer['tta_shifts']} infer.clip_weight="
        f"{choice.infer['clip_weight']:g}, chosen on {choice.windows} labelled windows of {data.root}; out of fold "
        f"{choice.oof_auc:.4f} vs BirdNET + agile {choice.baseline_auc:.4f} ({out.name}.json)\n"
    )
    atomic_write(out, head + to_yaml(chosen))
    record_output(out, "entry")
    atomic_write(record, json.dumps({"birdsed": "choose", **choice.__dict__, "runs": [str(r) for r in runs]}, indent=1))
    record_output(record, "entry-json")
    return choice
