"""Agile modelling on a teacher's embeddings, as Perch/hoplite do: a linear classifier per class on BirdNET's
1,024-d window features, trained on our labelled recordings — for the classes the teacher has no label for (our
frogs and insects) and as a second opinion on the classes it knows.

Training windows (``birdsed teacher ... teacher.embeddings=true`` writes them, one row per 5-s window):

- every window of every ``train_audio`` recording, its target the recording's labels (primary 1, secondary
  ``data.secondary_label_value``);
- with ``teacher_targets=True``, a ``train_audio`` window's target for a class its recording is not labelled with
  is the teacher's probability (soft) where the teacher knows the class, instead of 0;
- with ``pool=True``, the ``train_soundscapes`` windows too, a class's target there the teacher's probability of it
  (soft), for the classes the teacher knows only — a class it cannot know has no target in the pool (masked, not 0);
- BirdCLEF+ 2026's labelled training soundscape windows (``train_soundscapes_labels.csv``) wherever the folder has
  them, their labels as targets: the only examples of soundscape-only classes and the closest to the test domain.
  The gate (:func:`gate_classes`) judges a class on them first.

Each class gets one L2-regularised logistic regression on standardised features; a soft target t is the usual
pair of samples (label 1 with weight t, label 0 with weight 1 − t), and positives and negatives get equal total
weight. A class with no positive has no model: its column is NaN (no opinion), like a teacher's unknown class.
The model is a few arrays (``agile.npz``) that any runtime applies as ``sigmoid(((x − mean) / scale) · coefᵀ + b)``.
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from birdsed.config import Config
from birdsed.data.folder import BirdCLEFData, load_data, split_row_ids
from birdsed.data.soundscapes import read_if_present
from birdsed.errors import BirdsedError
from birdsed.teacher.birdnet_tflite import EMBEDDINGS_SUFFIX, read_teacher
from birdsed.teacher.blend import blend_teacher

log = logging.getLogger(__name__)


class AgileError(BirdsedError, ValueError):
    """Embeddings or an agile model cannot be used; the message names the file."""


@dataclass
class AgileModel:
    """One logistic regression per class on standardised embeddings.

    Shapes: mean, scale (D,); coef (C, D); intercept (C,). A class without a model has a NaN coef row.
    """

    classes: list[str]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    info: dict = field(default_factory=dict)
    blend: np.ndarray | None = None  # (C,) bool: the gate (:func:`gate_classes`); None for a model without one

    def blend_mask(self, mode: str) -> np.ndarray:
        """(C,) bool: the classes BirdNET knows that the agile model is blended into, by ``teacher.agile_classes``:
        ``gated`` (the model's gate; none for a model fitted without one), ``lacking`` (none) or ``all``."""
        if mode == "all":
            return np.ones(len(self.classes), dtype=bool)
        if mode == "gated" and self.blend is not None:
            return self.blend.astype(bool)
        return np.zeros(len(self.classes), dtype=bool)

    @property
    def known(self) -> np.ndarray:
        """(C,) bool: the classes that have a model."""
        return np.isfinite(self.coef).all(axis=1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(N, D) embeddings → (N, C) probabilities; NaN in the columns of classes without a model."""
        if x.ndim != 2 or x.shape[1] != len(self.mean):
            raise AgileError(f"agile model: embeddings of shape {x.shape}, expected (N, {len(self.mean)})")
        z = ((x - self.mean) / self.scale) @ np.nan_to_num(self.coef).T + self.intercept
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
        return np.where(self.known, p, np.nan)

    def save(self, path: str | Path) -> None:
        from birdsed.outputs import atomic_path

        with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
            blend = {} if self.blend is None else {"blend": self.blend.astype(bool)}
            np.savez(f, classes=np.array(self.classes, dtype=str), mean=self.mean, scale=self.scale, coef=self.coef,
                     intercept=self.intercept, info=np.array(json.dumps(self.info)), **blend)  # fmt: skip


def with_agile(teacher: np.ndarray, agile: np.ndarray, weight: float, blend: np.ndarray | None = None) -> np.ndarray:
    """The teacher with an agile model blended in: ``a·agile + (1-a)·teacher`` (a = `weight`, ``teacher.agile_weight``)
    where both have an opinion and the class is in `blend` ((C,) bool; default every class), the teacher alone where
    it has an opinion on a class outside `blend`, the agile model alone where only it has one, NaN where neither.
    Shapes (N, C) → (N, C)."""
    if blend is not None:
        agile = np.where(~blend[None, :] & np.isfinite(teacher), np.nan, agile)
    return blend_teacher(agile, teacher, 1 - weight)


def gate_classes(
    x: np.ndarray,
    y: np.ndarray,
    positives: np.ndarray,
    teacher: np.ndarray,
    groups: np.ndarray,
    classes: list[str],
    c: float,
    weight: float,
    folds: int = 5,
    margin: float = 0.01,
    evidence: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, dict]]:
    """The gate: for each class the teacher knows, whether blending the agile model into it helps, judged on
    evidence the scored soundscapes never see — ``train_audio`` windows held out by recording.

    The agile model is fitted `folds` times, each time without one fold of recordings (grouped, so no window is
    judged by a model that saw its recording), and its held-out predictions are blended into the teacher as
    :func:`with_agile` would. A class is blended only where the blend's ROC-AUC over the held-out windows (positives:
    windows of recordings labelled with it) beats the teacher's own by at least `margin`; a class with fewer than 2
    positive recordings is not (too little evidence).

    With `evidence` (the labelled soundscape windows of BirdCLEF+ 2026, the closest to the test domain), a class is
    judged on those rows alone wherever they hold positives of at least 2 files (groups) and a negative; elsewhere on
    the other rows, as without them.

    Args:
        x: (N, D) embeddings, y: (N, C) targets to fit, positives: (N, C) bool, the windows of recordings labelled
            with a class (what the held-out figures are judged on), teacher: (N, C) teacher scores (NaN where it has
            no opinion), groups: (N,) the recording (or soundscape) of each window; evidence: (N,) bool, the rows
            judged first (see above).

    Returns:
        (C,) bool, and per class the figures it was judged on (``teacher_auc``, ``blend_auc``, ``positive_recordings``).
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold

    n_groups = len(np.unique(groups))
    oof = np.full(y.shape, np.nan)
    if n_groups >= 2:
        for fit_rows, held in GroupKFold(n_splits=min(folds, n_groups)).split(x, groups=groups):
            model = fit_agile(x[fit_rows], y[fit_rows], np.ones_like(y[fit_rows], dtype=bool), classes, c, quiet=True)
            oof[held] = model.predict(x[held])
    blended = with_agile(teacher, oof, weight)
    gate = np.zeros(len(classes), dtype=bool)
    figures: dict[str, dict] = {}
    soundscape = np.zeros(len(y), dtype=bool) if evidence is None else evidence.astype(bool)
    for k, name in enumerate(classes):
        known = np.isfinite(teacher[:, k])
        if not known.any():
            continue  # BirdNET lacks the class: the agile model fills it whatever the gate says
        pos = positives[:, k]
        on = soundscape
        if len(np.unique(groups[pos & known & on])) < 2 or not (known & on & ~pos).any():
            on = ~soundscape  # too little soundscape evidence for this class: the recordings judge it
        recordings = len(np.unique(groups[pos & known & on]))
        rows = known & np.isfinite(blended[:, k]) & on
        entry: dict = {"positive_recordings": recordings, "teacher_auc": None, "blend_auc": None}
        if evidence is not None:
            entry["evidence"] = "soundscapes" if on is soundscape else "train_audio"
        if recordings >= 2 and 0 < pos[rows].sum() < rows.sum():
            t_auc = float(roc_auc_score(pos[rows], teacher[rows, k]))
            b_auc = float(roc_auc_score(pos[rows], blended[rows, k]))
            entry |= {"teacher_auc": round(t_auc, 4), "blend_auc": round(b_auc, 4)}
            gate[k] = b_auc - t_auc >= margin
        entry["blend"] = bool(gate[k])
        figures[name] = entry
    return gate, figures


def load_agile(path: str | Path) -> AgileModel:
    """An ``agile.npz`` written by :meth:`AgileModel.save`."""
    path = Path(path)
    if path.is_dir():
        path = path / "agile.npz"
    if not path.is_file():
        raise AgileError(f"{path}: no agile model here (birdsed agile writes agile.npz)")
    try:
        with np.load(path, allow_pickle=False) as z:
            model = AgileModel(
                classes=z["classes"].tolist(), mean=z["mean"], scale=z["scale"], coef=z["coef"],
                intercept=z["intercept"], info=json.loads(str(z["info"])),
                blend=z["blend"].astype(bool) if "blend" in z.files else None,
            )  # fmt: skip
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise AgileError(f"{path}: not an agile model, or damaged ({type(err).__name__}: {err})") from None
    d = len(model.mean)
    if model.coef.shape != (len(model.classes), d) or model.intercept.shape != (len(model.classes),):
        raise AgileError(f"{path}: inconsistent shapes coef {model.coef.shape}, intercept {model.intercept.shape}")
    return model


def read_embeddings(path: str | Path) -> tuple[pd.Index, np.ndarray]:
    """A ``<folder>.embeddings.npz`` of ``birdsed teacher ... teacher.embeddings=true``: row ids and (N, D) float32
    features.

    Raises:
        AgileError: missing, unreadable, rows and features disagreeing, or non-finite features.
    """
    path = Path(path)
    if not path.is_file():
        raise AgileError(f"{path}: no embeddings; run `birdsed teacher ... teacher.embeddings=true` for this folder")
    try:
        with np.load(path, allow_pickle=False) as z:
            ids, x = z["row_id"].astype(str), z["embeddings"].astype(np.float32)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise AgileError(f"{path}: not a birdsed embeddings file, or damaged ({type(err).__name__}: {err})") from None
    if x.ndim != 2 or len(ids) != len(x):
        raise AgileError(f"{path}: {len(ids)} row ids but embeddings of shape {x.shape}")
    if not np.isfinite(x).all():
        raise AgileError(f"{path}: non-finite embedding values in {int((~np.isfinite(x).any(axis=1)).sum())} row(s)")
    return pd.Index(ids, name="row_id"), x


def clip_targets(data: BirdCLEFData, ids: pd.Index, secondary_value: float) -> np.ndarray:
    """(N, C) targets of ``train_audio`` window rows (``<label folder>/<stem>_<end s>``): their recording's labels.

    Raises:
        AgileError: a row that belongs to no recording of ``train.csv``.
    """
    table = data.targets(secondary_value)  # (recordings, C)
    stems = data.train["filename"].str.rsplit(".", n=1).str[0]  # <label>/<stem>
    where = pd.Series(np.arange(len(stems)), index=stems.to_numpy())
    rec, _ = split_row_ids(pd.Series(ids))
    unknown = sorted(set(rec) - set(where.index))
    if unknown:
        raise AgileError(f"train_audio embeddings: rows of recordings not in {data.root / 'train.csv'}: {unknown[:3]}")
    return table[where.loc[rec].to_numpy()]


def fit_agile(
    x: np.ndarray,
    y: np.ndarray,
    mask: np.ndarray,
    classes: list[str],
    c: float = 0.1,
    max_iter: int = 2000,
    quiet: bool = False,
) -> AgileModel:
    """One logistic regression per class.

    Args:
        x: (N, D) embeddings.
        y: (N, C) soft targets in [0, 1].
        mask: (N, C) bool, False where a row has no target for a class (left out of that class's fit).
        c: inverse L2 strength (sklearn's C) on standardised features.
    """
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / scale
    coef = np.full((len(classes), x.shape[1]), np.nan)
    intercept = np.zeros(len(classes))
    for k in range(len(classes)):
        rows = mask[:, k]
        t = y[rows, k]
        pos, neg = t.sum(), (1 - t).sum()
        if pos < 1e-6 or neg < 1e-6:
            lacking = "positive" if neg else "negative"
            say = log.debug if quiet else log.info
            say("agile: %s has no %s in its training windows: no model", classes[k], lacking)
            continue
        xs = np.concatenate([z[rows], z[rows]])
        labels = np.r_[np.ones(len(t)), np.zeros(len(t))]
        w = np.r_[t / pos, (1 - t) / neg] * len(t)  # equal total weight for positives and negatives
        keep = w > 0
        lr = LogisticRegression(C=c, max_iter=max_iter)
        lr.fit(xs[keep], labels[keep], sample_weight=w[keep])
        coef[k], intercept[k] = lr.coef_[0], lr.intercept_[0]
    return AgileModel(classes, mean, scale, coef, intercept)


def training_windows(
    cfg: Config, data: BirdCLEFData, teacher_dir: Path, pool: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict, pd.Index]:
    """The windows to fit on: (N, D) embeddings, (N, C) targets, (N, C) mask, counts for ``agile.json``, and the
    row ids of the ``train_audio`` windows (the first rows)."""
    ids, x = read_embeddings(teacher_dir / f"train_audio{EMBEDDINGS_SUFFIX}")
    y = clip_targets(data, ids, cfg.data.secondary_label_value)
    mask = np.ones_like(y, dtype=bool)
    counts = {"train_audio_windows": len(ids)}
    if cfg.agile.teacher_targets:  # classes a recording is not labelled with: the teacher's probability, not 0
        t = read_teacher(teacher_dir / "train_audio.csv", data.classes).reindex(ids)[data.classes].to_numpy()
        off = (y == 0) & np.isfinite(t)
        y = np.where(off, t, y)
        counts["teacher_targets"] = int((off & (t >= 0.5)).sum())
    if pool:
        pids, px = read_embeddings(teacher_dir / f"train_soundscapes{EMBEDDINGS_SUFFIX}")
        unlabelled = ~split_row_ids(pids.to_series())[0].isin({Path(f).stem for f in data.labelled_files}).to_numpy()
        pids, px = pids[unlabelled], px[unlabelled]  # the labelled soundscapes have labels of their own
        table = read_teacher(teacher_dir / "train_soundscapes.csv", data.classes)
        missing = pids.difference(table.index)
        if len(missing):
            raise AgileError(f"{teacher_dir}: train_soundscapes.csv lacks {len(missing)} embedding row(s)")
        py = table.loc[pids, data.classes].to_numpy()
        x, y = np.concatenate([x, px]), np.concatenate([y, np.nan_to_num(py)])
        mask = np.concatenate([mask, np.isfinite(py)])
        counts["pool_windows"] = len(pids)
    return x, y, mask, counts, ids


def labelled_rows(
    cfg: Config, data: BirdCLEFData, teacher_dir: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """BirdCLEF+ 2026's labelled training soundscape windows as agile rows: (M, D) embeddings, (M, C) targets, (M, C)
    teacher scores and (M,) groups (``soundscape:<file or site>``); None for a folder without them.

    Raises:
        AgileError: the teacher folder has no embeddings or scores of some labelled window.
    """
    found = read_if_present(cfg, data.root, data.classes)
    if found is None:
        return None
    path = teacher_dir / f"train_soundscapes{EMBEDDINGS_SUFFIX}"
    ids, x = read_embeddings(path)
    where = pd.Series(np.arange(len(ids)), index=ids)
    missing = pd.Index(found.table["row_id"]).difference(ids)
    if len(missing):
        raise AgileError(f"{path}: no embeddings of {len(missing)} labelled window(s), e.g. {list(missing[:3])}")
    rows = where.loc[found.table["row_id"]].to_numpy()
    teacher = _teacher_scores(teacher_dir / "train_soundscapes.csv", data.classes, ids[rows], "train_soundscapes")
    groups = ("soundscape:" + found.table["group"]).to_numpy()
    return x[rows], found.targets.astype(np.float64), teacher, groups


def _teacher_scores(path: Path, classes: list[str], ids: pd.Index, folder: str = "train_audio") -> np.ndarray:
    """(N, C) the teacher CSV's scores of the embedding rows `ids`.

    Raises:
        AgileError: the CSV is missing or lacks some of the rows.
    """
    if not path.is_file():
        raise AgileError(
            f"{path}: the gate compares the agile model with the teacher on {folder}; run `birdsed teacher ... "
            f"--folders {folder} teacher.embeddings=true` (it writes this file beside the embeddings)"
        )
    table = read_teacher(path, classes)
    missing = ids.difference(table.index)
    if len(missing):
        raise AgileError(f"{path}: lacks {len(missing)} row(s) of the {folder} embeddings, e.g. {list(missing[:3])}")
    return table.loc[ids, classes].to_numpy(dtype=np.float64)


@dataclass
class AgileInputs:
    """Everything :func:`fit_gated` fits and judges on, read once from a teacher folder (a nested choice refits on
    it once per fold).

    Shapes: x (N, D) the fitted windows (``train_audio`` first, then pool windows), y and mask (N, C); positives,
    teacher (n, C) and groups (n,) of the n ``train_audio`` windows the gate judges; labelled: the labelled
    soundscape windows' (M, D) embeddings, (M, C) targets, (M, C) teacher scores and (M,) groups, or None.
    """

    x: np.ndarray
    y: np.ndarray
    mask: np.ndarray
    counts: dict
    positives: np.ndarray
    teacher: np.ndarray
    groups: np.ndarray
    labelled: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None


def agile_inputs(cfg: Config, data: BirdCLEFData, teacher_dir: Path) -> AgileInputs:
    """Read the windows ``cfg.agile`` fits on and the gate's evidence from `teacher_dir` (see :class:`AgileInputs`)."""
    x, y, mask, counts, ids = training_windows(cfg, data, teacher_dir, cfg.agile.pool)
    positives = clip_targets(data, ids, cfg.data.secondary_label_value) > 0
    teacher = _teacher_scores(teacher_dir / "train_audio.csv", data.classes, ids)
    groups = split_row_ids(pd.Series(ids))[0].to_numpy()
    return AgileInputs(x, y, mask, counts, positives, teacher, groups, labelled_rows(cfg, data, teacher_dir))


def fit_gated(
    cfg: Config, data: BirdCLEFData, inputs: AgileInputs, held_out: np.ndarray | None = None, quiet: bool = False
) -> tuple[AgileModel, dict, dict[str, dict]]:
    """The agile model of ``cfg.agile`` on `inputs` (:func:`agile_inputs`), with its gate (:func:`gate_classes`).

    Args:
        held_out: (M,) bool over the folder's labelled soundscape windows: those left out of the fit and the gate
            (an outer validation fold, ``birdsed choose``).

    Returns:
        the model (``blend`` set), the window counts, and the gate's figures per class.
    """
    x, y, mask, counts = inputs.x, inputs.y, inputs.mask, dict(inputs.counts)
    n = len(inputs.groups)  # the train_audio windows come first
    gx, gy, positives, teacher, groups = x[:n], y[:n], inputs.positives, inputs.teacher, inputs.groups
    evidence = None
    if inputs.labelled is not None:  # the labelled soundscape windows: fitted on, and the gate's first evidence
        keep = np.ones(len(inputs.labelled[0]), dtype=bool) if held_out is None else ~held_out
        lx, ly, lt, lg = (part[keep] for part in inputs.labelled)
        x, y, mask = np.concatenate([x, lx]), np.concatenate([y, ly]), np.concatenate([mask, np.ones_like(ly, bool)])
        gx, gy, positives = np.concatenate([gx, lx]), np.concatenate([gy, ly]), np.concatenate([positives, ly > 0])
        teacher, groups = np.concatenate([teacher, lt]), np.concatenate([groups, lg])
        evidence = np.r_[np.zeros(n, dtype=bool), np.ones(len(ly), dtype=bool)]
        counts["labelled_windows"] = len(ly)
    a = cfg.agile
    model = fit_agile(x, y, mask, data.classes, a.c, quiet=quiet)
    model.blend, gate = gate_classes(gx, gy, positives, teacher, groups, data.classes, a.c, cfg.teacher.agile_weight,
                                     a.gate_folds, a.gate_margin, evidence)  # fmt: skip
    return model, counts, gate


def run_agile(cfg: Config, teacher_dir: str | Path, out: str | Path, overwrite: bool = False) -> AgileModel:
    """``birdsed agile``: fit on `teacher_dir`'s embeddings with ``cfg.agile``'s settings; write ``OUT/agile.npz``,
    ``OUT/agile.json`` and, for each soundscape folder with embeddings there, two CSVs in the teacher layout:
    ``<folder>.agile.csv`` (the agile model alone) and ``<folder>.csv`` (the teacher with the agile model blended
    in as ``teacher.infer=birdnet teacher.agile=OUT`` would: ``a·agile + (1-a)·teacher`` where both know a class and
    ``teacher.agile_classes`` blends it (by default where the gate, :func:`gate_classes`, says it helps), the teacher
    alone where it knows a class otherwise, the agile model alone where only it does; a = ``teacher.agile_weight``)."""
    from birdsed.outputs import atomic_path, atomic_write
    from birdsed.ownership import check_dir_output, seal_output

    teacher_dir = Path(teacher_dir)
    data = load_data(cfg)
    if Path(out).resolve() == teacher_dir.resolve():
        raise AgileError(f"--out {out}: is the teacher folder; its <folder>.csv files would be replaced")
    out = check_dir_output(out, kind="agile", inputs=(data.root, teacher_dir), overwrite=overwrite)
    pool, c = cfg.agile.pool, cfg.agile.c
    model, counts, gate = fit_gated(cfg, data, agile_inputs(cfg, data, teacher_dir))
    lacking = [k for k, ok in zip(data.classes, model.known, strict=True) if not ok]
    a = cfg.agile
    blended = [k for k, g in zip(data.classes, model.blend, strict=True) if g]
    log.info("agile gate: blended into %d of %d classes BirdNET knows (%s)", len(blended), len(gate),
             ", ".join(blended) or "none")  # fmt: skip
    gate_info = {"folds": a.gate_folds, "margin": a.gate_margin, "blended": blended, "classes": gate}
    model.info = {"teacher": str(teacher_dir), "pool": pool, "teacher_targets": a.teacher_targets, "C": c,
                  **counts, "classes_without_model": lacking, "agile_weight": cfg.teacher.agile_weight,
                  "gate": gate_info}  # fmt: skip
    model.save(out / "agile.npz")
    for folder in ("train_soundscapes", "test_soundscapes"):
        path = teacher_dir / f"{folder}{EMBEDDINGS_SUFFIX}"
        if not path.is_file():
            continue
        ids, feats = read_embeddings(path)
        ours = model.predict(feats)
        tables = {f"{folder}.agile.csv": ours}
        if (teacher_dir / f"{folder}.csv").is_file():
            teacher = read_teacher(teacher_dir / f"{folder}.csv", data.classes).reindex(ids)[data.classes]
            mask_c = model.blend_mask(cfg.teacher.agile_classes)
            tables[f"{folder}.csv"] = with_agile(teacher.to_numpy(), ours, cfg.teacher.agile_weight, mask_c)
        for name, values in tables.items():
            table = pd.DataFrame(values.astype(np.float32), columns=data.classes)
            table.insert(0, "row_id", ids)
            with atomic_path(out / name) as tmp:
                table.to_csv(tmp, index=False, float_format="%.5f")
    atomic_write(out / "agile.json", json.dumps(model.info, indent=1))
    seal_output(out, "agile")  # what birdsed wrote here: any other file makes the folder the user's
    return model
