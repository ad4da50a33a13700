"""Iterative power-scaled pseudo-labelling of the unlabelled ``train_soundscapes`` (``birdsed pseudo``).

Round 0 is supervised training (or given checkpoints). Round r ≥ 1 predicts every 5-s chunk of the pool with
round r-1's model (with TTA), applies p ↦ p^(1/c) (1st place BirdCLEF 2025), keeps chunks whose top probability
reaches ``min_max_prob`` and zeroes probabilities below ``trim_prob`` (2nd place), and trains the next model on
labelled data mixed with the kept chunks. ``RUN_DIR/round_<k>/`` is a run folder; ``RUN_DIR/rounds.csv`` has one
row per round. A round is finished when its ``DONE`` marker exists; a killed run resumes at the first unfinished
round and inside it: pool labels already written (``pseudo_meta.json`` is written after ``pseudo.csv``) are reused,
and each of its training runs continues after its last finished epoch.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from birdsed.config import Config
from birdsed.config.load import save_config
from birdsed.data.cache import WaveStore
from birdsed.data.datasets import PseudoChunks
from birdsed.data.folder import BirdCLEFData, load_data, split_row_ids
from birdsed.data.prepare import ensure_cache
from birdsed.errors import BirdsedError
from birdsed.inference.ensemble import load_member
from birdsed.inference.predict import predict
from birdsed.models.build import read_checkpoint, resolve_checkpoint
from birdsed.outputs import atomic_path, atomic_write, read_csv_own, read_json
from birdsed.scoring.metrics import macro_auc, read_aligned
from birdsed.teacher.birdnet_tflite import read_teacher
from birdsed.teacher.source import pool_with_teacher
from birdsed.training import tracking
from birdsed.training.runs import check_run_dir, is_run_folder, open_run_dir, run_lock
from birdsed.training.train import fit

log = logging.getLogger(__name__)


class PseudoError(BirdsedError, ValueError):
    """A pseudo-labelling round cannot go on; the message says why and what to change."""


def power_transform(probs: np.ndarray, c: float, normalize: bool = False) -> np.ndarray:
    """p ↦ p^(1/c) element-wise (c < 1 sharpens: small probabilities shrink most), or normalised per row.

    Args:
        probs: (N, C) in [0, 1].
        c: the round's power; c = 1 without normalisation is the identity.
        normalize: p_i^(1/c) / Σ_j p_j^(1/c) per row.
    """
    out = np.power(np.clip(probs, 0.0, 1.0), 1.0 / c)
    if normalize:
        out = out / np.maximum(out.sum(axis=1, keepdims=True), 1e-12)
    return out


def filter_chunks(probs: np.ndarray, min_max_prob: float, trim_prob: float) -> tuple[np.ndarray, np.ndarray]:
    """Keep chunks whose top probability reaches `min_max_prob`; zero probabilities below `trim_prob`.

    Returns:
        keep (N,) bool, and the trimmed probabilities of all chunks (N, C).
    """
    keep = probs.max(axis=1) >= min_max_prob
    return keep, np.where(probs >= trim_prob, probs, 0.0)


def soundscape_weights(soundscape: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Sampling weight of each chunk: the sum over classes of its soundscape's per-class max probability
    (1st place: busy, confident soundscapes are drawn more often). Shapes (N,), (N, C) → (N,)."""
    frame = pd.DataFrame(probs)
    frame["s"] = soundscape
    per_soundscape = frame.groupby("s").max().sum(axis=1)
    return per_soundscape.reindex(soundscape).to_numpy(dtype=np.float64)


def round_power(cfg: Config, r: int) -> float:
    """The power c of round r ≥ 1."""
    return cfg.pseudo.power[min(r, len(cfg.pseudo.power)) - 1]


def soundscape_folds(files: list[Path], k: int, seed: int) -> dict[str, int]:
    """A seeded split of the pool's soundscapes into `k` folds of near-equal size: file name → fold."""
    order = np.random.default_rng(seed).permutation(len(files))
    return {files[i].name: j % k for j, i in enumerate(order)}


def label_pool(
    cfg: Config, data: BirdCLEFData, r: int, models: list[str], out: Path, folds: dict[str, int] | None = None
) -> pd.DataFrame:
    """Predict every chunk of ``train_soundscapes`` with `models`, transform, filter; write ``pseudo.csv``.

    With `folds` (out-of-fold mode, one model per fold), the soundscapes of fold k are predicted by ``models[k]``
    alone — the model that did not train on them; otherwise every chunk by the ensemble of `models`.

    Returns:
        the kept chunks: row_id, soundscape, offset_s, fold, weight, then one column per class.
    """
    pool = data.root / "train_soundscapes"
    pcfg = copy.deepcopy(cfg)  # the pool is predicted as infer predicts, with the pool's TTA and no infer teacher:
    pcfg.infer.tta_shifts = list(cfg.pseudo.tta_shifts)  # the pool's teacher is teacher.pseudo (pool_with_teacher)
    pcfg.teacher.infer, pcfg.teacher.agile = "", ""
    members = [load_member(m, 1.0, "torch", "cpu") for m in models]
    for m in members:
        if m.classes != data.classes:
            raise PseudoError(f"{m.name}: its classes differ from {data.root}'s taxonomy; rounds need one class set")
    oof = folds is not None and len(members) == max(folds.values()) + 1 and len(members) > 1
    groups = (
        [([f for f in data.unlabelled_soundscapes if folds[f.name] == k], [m]) for k, m in enumerate(members)]
        if oof
        else [(data.unlabelled_soundscapes, members)]
    )
    subs, bad = [], set()
    for files, group in groups:
        # a bar on a terminal, a line every 30 s in a log: at BirdCLEF+ 2026's size the pool is 10,658 files
        result = predict(pcfg, group, pool, files=files, device="cpu", columns=data.classes, progress=True).result
        subs.append(result.submission)
        bad |= {Path(b).stem for b in result.fallback_files}
    if bad:
        log.warning("round %d: %d pool file(s) unreadable and left out", r, len(bad))
    sub = pd.concat(subs, ignore_index=True)
    sub = sub[~split_row_ids(sub["row_id"])[0].isin(bad)].reset_index(drop=True)
    stems, ends = split_row_ids(sub["row_id"])
    c = round_power(cfg, r)
    probs, taught = pool_with_teacher(cfg, r, sub, data.classes)
    probs = power_transform(probs, c, cfg.pseudo.power_normalize)
    keep, trimmed = filter_chunks(probs, cfg.pseudo.min_max_prob, cfg.pseudo.trim_prob)
    files = {p.stem: p.name for p in data.unlabelled_soundscapes}
    table = pd.DataFrame(
        {
            "row_id": sub["row_id"],
            "soundscape": stems.map(files),
            "offset_s": ends.astype(float) - cfg.infer.window_seconds,
            "kept": keep,
        }
    )
    table.insert(3, "fold", table["soundscape"].map(folds) if folds else -1)
    table["weight"] = soundscape_weights(table["soundscape"].to_numpy(), trimmed)
    table = pd.concat([table, pd.DataFrame(trimmed, columns=data.classes)], axis=1)
    with atomic_path(out / "pseudo.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.5f")
    meta = {
        "round": r,
        "models": [str(resolve_checkpoint(m)) for m in models],
        "out_of_fold": bool(oof),
        "labelled_by": {f.name: [m.name for m in group] for files, group in groups for f in files},
        "tta_shifts": list(cfg.pseudo.tta_shifts),
        "power": c,
        "power_normalize": cfg.pseudo.power_normalize,
        "min_max_prob": cfg.pseudo.min_max_prob,
        "trim_prob": cfg.pseudo.trim_prob,
        "chunks": len(table),
        "kept": int(keep.sum()),
        **taught,
    }
    atomic_write(out / "pseudo_meta.json", json.dumps(meta, indent=1))  # written last: the labels are complete
    if not keep.any():
        raise PseudoError(
            f"round {r}: the filter kept 0 of {len(table)} chunks (top probability < pseudo.min_max_prob="
            f"{cfg.pseudo.min_max_prob}, after power {c:g}); lower pseudo.min_max_prob, use a smaller power, or "
            "train round 0 longer — training on nothing would only repeat round 0"
        )
    return read_kept(out / "pseudo.csv")


def read_kept(path: Path) -> pd.DataFrame:
    """The kept chunks of a ``pseudo.csv``, as written (so a resumed round trains on exactly the same numbers)."""
    table = read_csv_own(path, ("row_id", "soundscape", "kept"), dtype={"row_id": str, "soundscape": str})
    return table[table["kept"].astype(bool)].reset_index(drop=True)


def check_pool(cfg: Config, data: BirdCLEFData) -> None:
    """The pool must hold soundscapes, none of them labelled for reporting (the leak guard)."""
    pool = data.root / "train_soundscapes"
    if not data.unlabelled_soundscapes:
        raise PseudoError(f"{pool}: no unlabelled soundscapes to pseudo-label")
    solution = cfg.solution_path
    if solution is not None:
        stems = set(split_row_ids(pd.read_csv(solution, usecols=["row_id"])["row_id"])[0])
        leaked = sorted(stems & {p.stem for p in data.unlabelled_soundscapes})
        if leaked:
            raise PseudoError(f"{pool}: {len(leaked)} soundscape(s) also labelled in {solution}: {leaked[:5]}")


def chunks_from_table(cfg: Config, table: pd.DataFrame, classes: list[str]) -> PseudoChunks:
    """The kept chunks as a dataset over the waveform cache."""
    store = WaveStore(cfg.cache_path)
    return PseudoChunks(
        store,
        ("train_soundscapes/" + table["soundscape"]).tolist(),
        (table["offset_s"].to_numpy() * cfg.audio.sample_rate).round().astype(np.int64),
        table[classes].to_numpy(dtype=np.float32),
        table["weight"].to_numpy(dtype=np.float64) + 1e-6,
        cfg.seconds_to_samples(cfg.infer.window_seconds),
    )


def _round_cfg(cfg: Config, r: int, init: str | None, k: int | None = None) -> Config:
    rc = copy.deepcopy(cfg)
    rc.name = f"{cfg.name}_round{r}" + (f"_fold{k}" if k is not None else "")
    if k is not None:  # the K models of a round differ in their pseudo data and their seed
        rc.train.seed = cfg.train.seed + k
    if r > 0 and cfg.pseudo.epochs:
        rc.train.epochs = cfg.pseudo.epochs
    if init:
        rc.model.init_from = init
    return rc


def _row(r: int, summary: dict, cfg: Config, kept: int, chunks: int, kind: str) -> dict:
    return {
        "round": r,
        "kind": kind,
        "power": round_power(cfg, r) if r else None,
        "min_max_prob": cfg.pseudo.min_max_prob if r else None,
        "trim_prob": cfg.pseudo.trim_prob if r else None,
        "mode": cfg.pseudo.mode if r and kind == "pseudo" else None,
        "pseudo_chunks": chunks,
        "kept_chunks": kept,
        "epochs": summary.get("epochs"),
        "val_auc": summary.get("val_auc"),
        "soundscape_auc": summary.get("soundscape_auc"),
        "last_soundscape_auc": summary.get("last_soundscape_auc"),
        "minutes": summary.get("minutes"),
        "run_dir": summary.get("run_dir"),
    }


def combine_summaries(summaries: list[dict], cfg: Config) -> dict:
    """One rounds.csv entry for the K models of an out-of-fold round: mean held-out AUC, and the soundscape AUC
    of the K models' averaged best-epoch predictions (the ensemble a submission would use)."""
    if len(summaries) == 1:
        return summaries[0]
    out = {
        "run_dir": ";".join(s["run_dir"] for s in summaries),
        "epochs": summaries[0].get("epochs"),
        "minutes": round(sum(s.get("minutes") or 0 for s in summaries), 2),
        "val_auc": _mean([s.get("val_auc") for s in summaries]),
        "last_soundscape_auc": _mean([s.get("last_soundscape_auc") for s in summaries]),
        "soundscape_auc": None,
    }
    preds = [Path(s["run_dir"]) / "soundscape_preds.csv" for s in summaries]
    if cfg.solution_path is not None and all(p.is_file() for p in preds):
        aligned = [read_aligned(cfg.solution_path, p) for p in preds]  # checked like any submission
        y_true = aligned[0][0]
        out["soundscape_auc"] = macro_auc(y_true, np.mean([scores for _, scores, _ in aligned], axis=0))
    return out


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _train_round(
    cfg: Config, r: int, out: Path, inits: list[str], table: pd.DataFrame | None, classes: list[str]
) -> list[dict]:
    """Train round r's model(s) into `out`: one (``out/``) or, with ``pseudo.oof_folds`` = K, K models
    (``out/run_<k>``), model k without the chunks of soundscape fold k. `table` None trains without pseudo data
    (the control chain). Returns their summaries."""
    k_folds = cfg.pseudo.oof_folds
    if not k_folds:
        pseudo = chunks_from_table(cfg, table, classes) if table is not None else None
        init = inits[0] if cfg.pseudo.continue_training else None
        return [_fit_resumable(_round_cfg(cfg, r, init), out, pseudo)]
    summaries = []
    for k in range(k_folds):
        pseudo = None
        if table is not None:
            part = table[table["fold"] != k]
            if part.empty:
                raise PseudoError(
                    f"round {r}: every kept chunk lies in soundscape fold {k}, so model {k} has no pseudo data; "
                    "lower pseudo.min_max_prob or pseudo.oof_folds"
                )
            pseudo = chunks_from_table(cfg, part, classes)
        init = inits[k % len(inits)] if cfg.pseudo.continue_training else None
        summaries.append(_fit_resumable(_round_cfg(cfg, r, init, k), out / f"run_{k}", pseudo))
        if table is not None:  # provenance: which soundscapes' chunks model k saw
            used = sorted(set(table.loc[table["fold"] != k, "soundscape"]))
            (out / f"run_{k}" / "pseudo_soundscapes.json").write_text(json.dumps({"fold": k, "trained_on": used}))
    return summaries


def _fit_resumable(cfg: Config, out: Path, pseudo: PseudoChunks | None = None) -> dict:
    """Train into `out`, continuing a run folder a killed attempt left there (after its last finished epoch)."""
    return fit(cfg, out=out, resume=out.is_dir() and is_run_folder(out), pseudo=pseudo)


def _pool_labels(cfg: Config, data: BirdCLEFData, r: int, prev: list[str], rdir: Path, folds) -> pd.DataFrame:
    """Round r's kept chunks: from ``pseudo.csv`` when a killed attempt finished labelling with the same models,
    else labelled now."""
    meta_path, csv_path = rdir / "pseudo_meta.json", rdir / "pseudo.csv"
    if meta_path.is_file() and csv_path.is_file():
        meta = read_json(meta_path)
        if meta.get("models") == [str(resolve_checkpoint(m)) for m in prev] and meta.get("kept"):
            log.info("round %d: reusing the pool labels of the earlier attempt (%s)", r, csv_path)
            return read_kept(csv_path)
    return label_pool(cfg, data, r, prev, rdir, folds)


@dataclass
class Round:
    """What a finished round leaves for the next: its model(s), the control chain's, and its rows of rounds.csv."""

    models: list[str]
    control_models: list[str]
    rows: list[dict]


@dataclass
class PseudoSummary:
    """The result of :func:`run_pseudo`: the folder and its rounds.csv (one row per round, and per control)."""

    root: Path
    rounds: pd.DataFrame

    @property
    def last(self) -> dict:
        """The last row: the last round's pseudo (or, with rounds=0, supervised) model."""
        return self.rounds.iloc[-1].to_dict()


def _given_round(models: list[str]) -> Round:
    """Round 0 from ``pseudo.init_checkpoints``, with the given run's own figures when it has them."""
    row: dict = {"round": 0, "kind": "given", "run_dir": ";".join(models)}
    metrics = Path(models[0]).parent / "metrics.json"
    if metrics.is_file():
        best = read_json(metrics).get("best", {})
        row |= {k: best.get(k) for k in ("val_auc", "soundscape_auc")}
    return Round(models, [], [row])


def _supervised_round(cfg: Config, rdir: Path) -> Round:
    """Round 0 trained on the labelled clips."""
    summary = _fit_resumable(_round_cfg(cfg, 0, None), rdir / "run")
    return Round([str(rdir / "run")], [], [_row(0, summary, cfg, 0, 0, "supervised")])


def _pseudo_round(
    cfg: Config, data: BirdCLEFData, r: int, rdir: Path, prev: Round, folds: dict[str, int] | None
) -> Round:
    """Round r ≥ 1: label the pool with round r-1's model(s), train on labelled clips + kept chunks; with
    ``pseudo.control`` also the control chain's round (same starts, models and epochs, no pseudo data)."""
    table = _pool_labels(cfg, data, r, prev.models, rdir, folds)
    n_chunks = len(read_csv_own(rdir / "pseudo.csv", ("row_id",)))
    log.info("round %d: training with %d of %d pseudo-labelled chunks", r, len(table), n_chunks)
    runs = _train_round(cfg, r, rdir / "run", prev.models, table, data.classes)
    rows = [_row(r, combine_summaries(runs, cfg), cfg, len(table), n_chunks, "pseudo")]
    control: list[str] = []
    if cfg.pseudo.control:
        ctrl = _train_round(
            cfg, r, rdir.parent / f"control_{r}", prev.control_models or prev.models, None, data.classes
        )
        control = [s["run_dir"] for s in ctrl]
        rows.append(_row(r, combine_summaries(ctrl, cfg), cfg, 0, 0, "control"))
    return Round([s["run_dir"] for s in runs], control, rows)


def run_pseudo(
    cfg: Config, out: str | Path | None = None, overwrite: bool = False, resume: bool = False
) -> PseudoSummary:
    """Rounds 0..R in `out` (default ``runs/<name>``). See the module docstring.

    Config, data, pool and given checkpoints are validated before `out` is touched; `overwrite` replaces only a
    birdsed folder. `resume` skips finished rounds and continues an unfinished one where it stopped: its pool labels
    are reused and each of its runs continues after its last finished epoch.
    """
    root = Path(out) if out else Path("runs") / cfg.name
    with run_lock(root):
        return _run_pseudo(cfg, root, overwrite, resume)


def _run_pseudo(cfg: Config, root: Path, overwrite: bool, resume: bool) -> PseudoSummary:
    """:func:`run_pseudo` under the folder's lock."""
    check_run_dir(root, overwrite, resume)
    data = load_data(cfg)
    if cfg.pseudo.rounds:
        check_pool(cfg, data)
    given = [str(resolve_checkpoint(c)) for c in cfg.pseudo.init_checkpoints]
    for m in given:
        if list(read_checkpoint(m)["classes"]) != data.classes:
            raise PseudoError(f"{m}: pseudo.init_checkpoints must share {data.root}'s class set")
    if cfg.teacher.pseudo:  # a bad teacher file fails now, not after round 0's training
        stems = set(split_row_ids(read_teacher(cfg.teacher.pseudo, data.classes).index.to_series())[0])
        uncovered = sorted({p.stem for p in data.unlabelled_soundscapes} - stems)
        if uncovered:
            raise PseudoError(f"{cfg.teacher.pseudo}: no teacher rows for pool soundscape(s) {uncovered[:5]}")
    ensure_cache(cfg, data, soundscapes=cfg.solution_path is not None)
    open_run_dir(root, overwrite, resume, kind="pseudo")
    save_config(cfg, root / "config.yaml")
    parent = ""
    if cfg.tracking.mlflow_uri:  # the folder's MLflow run; every round's training run is nested under it
        tr = cfg.tracking
        parent = tracking.start_run(tr.mlflow_uri, tr.experiment, root, cfg.name, "pseudo", tr.parent_run)
        cfg = copy.deepcopy(cfg)
        cfg.tracking.parent_run = parent
    rows_path = root / "rounds.csv"
    rows = read_csv_own(rows_path, ("round",)).to_dict("records") if resume and rows_path.is_file() else []

    k_folds = cfg.pseudo.oof_folds
    folds = soundscape_folds(data.unlabelled_soundscapes, k_folds, cfg.data.seed) if k_folds else None
    prev = Round([], [], [])
    for r in range(cfg.pseudo.rounds + 1):
        rdir = root / f"round_{r}"
        if (rdir / "DONE").is_file():
            done = read_json(rdir / "DONE")
            prev = Round(done["models"], done.get("control_models", []), [])
            log.info("round %d already finished", r)
            continue
        if rdir.exists():
            log.info("%s: continuing the unfinished round of an earlier attempt", rdir)
        rdir.mkdir(exist_ok=True)
        if r == 0:
            this = _given_round(given) if given else _supervised_round(cfg, rdir)
        else:
            this = _pseudo_round(cfg, data, r, rdir, prev, folds)
            this.control_models = this.control_models or prev.control_models
        rows = [row for row in rows if row["round"] < r] + this.rows
        with atomic_path(rows_path) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        if parent:
            _track_round(cfg, parent, r, this)
        atomic_write(rdir / "DONE", json.dumps({"models": this.models, "control_models": this.control_models}))
        prev = this
    if parent:
        tracking.log_run_files(cfg.tracking.mlflow_uri, parent, root)
        tracking.finish_run(cfg.tracking.mlflow_uri, parent)
    return PseudoSummary(root, pd.DataFrame(rows))


def _track_round(cfg: Config, parent: str, r: int, this: Round) -> None:
    """Round r's figures on the folder's MLflow run (step r, per kind), and its pseudo-chunk counts on each of its
    nested training runs."""
    uri = cfg.tracking.mlflow_uri
    for row in this.rows:
        kind = row["kind"]
        figures = {f"{kind}_{k}": row.get(k) for k in ("val_auc", "soundscape_auc", "kept_chunks", "pseudo_chunks")}
        tracking.log_metrics(uri, parent, figures, step=r)
        for run_dir in str(row.get("run_dir") or "").split(";"):
            record = Path(run_dir) / tracking.RUN_ID_FILE
            if record.is_file():
                counts = {k: row.get(k) for k in ("kept_chunks", "pseudo_chunks")}
                tracking.log_metrics(uri, read_json(record)["run_id"], counts, step=r)


def rounds_table(df: pd.DataFrame) -> str:
    """rounds.csv as an aligned text table."""
    cols = [
        c
        for c in ("round", "kind", "power", "kept_chunks", "pseudo_chunks", "val_auc", "soundscape_auc", "minutes")
        if c in df.columns
    ]
    return df[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}")
