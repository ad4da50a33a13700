"""Iterative power-scaled pseudo-labelling of the unlabelled ``train_soundscapes`` (``birdsed pseudo``).

Round 0 is supervised training (or given checkpoints). Round r ≥ 1 predicts every 5-s chunk of the pool with
round r-1's model (with TTA), applies p ↦ p^(1/c) (1st place BirdCLEF 2025), keeps chunks whose top probability
reaches ``min_max_prob`` and zeroes probabilities below ``trim_prob`` (2nd place), and trains the next model on
labelled data mixed with the kept chunks. ``RUN_DIR/round_<k>/`` is a run folder; ``RUN_DIR/rounds.csv`` has one
row per round. A round is finished when its ``DONE`` marker exists; a killed run resumes at the first unfinished
round, and a half-written round folder is removed, never reused.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from birdsed.cache import WaveStore
from birdsed.config import Config, save_config
from birdsed.data import BirdCLEFData, load_birdclef
from birdsed.datasets import PseudoChunks
from birdsed.ensemble import load_member
from birdsed.models.build import read_checkpoint, resolve_checkpoint
from birdsed.runs import RunExistsError
from birdsed.submit import infer_folder
from birdsed.train import ensure_cache, fit

log = logging.getLogger(__name__)


class PseudoError(ValueError):
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


def label_pool(cfg: Config, data: BirdCLEFData, r: int, models: list[str], out: Path) -> pd.DataFrame:
    """Predict every chunk of ``train_soundscapes`` with `models`, transform, filter; write ``pseudo.csv``.

    Returns:
        the kept chunks: row_id, soundscape, offset_s, weight, then one column per class.
    """
    pool = data.root / "train_soundscapes"
    icfg = copy.deepcopy(cfg.infer)
    icfg.tta_shifts = list(cfg.pseudo.tta_shifts)
    members = [load_member(m, 1.0, "torch", "cpu") for m in models]
    for m in members:
        if m.classes != data.classes:
            raise PseudoError(f"{m.name}: its classes differ from {data.root}'s taxonomy; rounds need one class set")
    result = infer_folder(pool, members, icfg, data.classes, progress=False)
    if result.fallback_files:
        log.warning("round %d: %d pool file(s) unreadable and left out", r, len(result.fallback_files))
    sub = result.submission
    parts = sub["row_id"].str.rsplit("_", n=1)
    bad = set(map(str, result.fallback_files))
    sub = sub[~parts.str[0].isin({Path(b).stem for b in bad})].reset_index(drop=True)
    parts = sub["row_id"].str.rsplit("_", n=1)
    c = round_power(cfg, r)
    probs = power_transform(sub[data.classes].to_numpy(dtype=np.float64), c, cfg.pseudo.power_normalize)
    keep, trimmed = filter_chunks(probs, cfg.pseudo.min_max_prob, cfg.pseudo.trim_prob)
    files = {p.stem: p.name for p in data.train_soundscapes}
    table = pd.DataFrame(
        {
            "row_id": sub["row_id"],
            "soundscape": parts.str[0].map(files),
            "offset_s": parts.str[1].astype(float) - cfg.infer.window_seconds,
            "kept": keep,
        }
    )
    table["weight"] = soundscape_weights(table["soundscape"].to_numpy(), trimmed)
    table = pd.concat([table, pd.DataFrame(trimmed, columns=data.classes)], axis=1)
    table.to_csv(out / "pseudo.csv", index=False, float_format="%.5f")
    meta = {
        "round": r,
        "models": [str(resolve_checkpoint(m)) for m in models],
        "tta_shifts": list(cfg.pseudo.tta_shifts),
        "power": c,
        "power_normalize": cfg.pseudo.power_normalize,
        "min_max_prob": cfg.pseudo.min_max_prob,
        "trim_prob": cfg.pseudo.trim_prob,
        "chunks": len(table),
        "kept": int(keep.sum()),
    }
    (out / "pseudo_meta.json").write_text(json.dumps(meta, indent=1))
    if not keep.any():
        raise PseudoError(
            f"round {r}: the filter kept 0 of {len(table)} chunks (top probability < pseudo.min_max_prob="
            f"{cfg.pseudo.min_max_prob}, after power {c:g}); lower pseudo.min_max_prob, use a smaller power, or "
            "train round 0 longer — training on nothing would only repeat round 0"
        )
    return table[table["kept"]].reset_index(drop=True)


def check_pool(cfg: Config, data: BirdCLEFData) -> None:
    """The pool must hold soundscapes, none of them labelled for reporting (the leak guard)."""
    pool = data.root / "train_soundscapes"
    if not data.train_soundscapes:
        raise PseudoError(f"{pool}: no unlabelled soundscapes to pseudo-label")
    solution = cfg.solution_path
    if solution is not None:
        stems = set(pd.read_csv(solution, usecols=["row_id"])["row_id"].str.rsplit("_", n=1).str[0])
        leaked = sorted(stems & {p.stem for p in data.train_soundscapes})
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


def _round_cfg(cfg: Config, r: int, init: str | None) -> Config:
    rc = copy.deepcopy(cfg)
    rc.name = f"{cfg.name}_round{r}"
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


def run_pseudo(cfg: Config, out: str | Path | None = None, overwrite: bool = False, resume: bool = False) -> Path:
    """Rounds 0..R in `out` (default ``runs/<name>``); returns the folder. See the module docstring."""
    root = Path(out) if out else Path("runs") / cfg.name
    if root.exists() and any(root.iterdir()):
        if overwrite:
            shutil.rmtree(root)
        elif not resume:
            raise RunExistsError(f"{root}: exists; pass --overwrite to replace it or --resume to continue")
    root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, root / "config.yaml")
    rows_path = root / "rounds.csv"
    rows = pd.read_csv(rows_path).to_dict("records") if resume and rows_path.is_file() else []
    data = load_birdclef(cfg.data.root)
    if cfg.pseudo.rounds:
        check_pool(cfg, data)
    ensure_cache(cfg, data, soundscapes=cfg.solution_path is not None)

    prev: list[str] = []
    for r in range(cfg.pseudo.rounds + 1):
        rdir = root / f"round_{r}"
        if (rdir / "DONE").is_file():
            prev = json.loads((rdir / "DONE").read_text())["models"]
            log.info("round %d already finished", r)
            continue
        if rdir.exists():
            log.warning("%s: unfinished round from an earlier attempt; removing it", rdir)
            shutil.rmtree(rdir)
            for ctrl in root.glob(f"control_{r}"):
                shutil.rmtree(ctrl)
        rows = [row for row in rows if row["round"] < r]
        rdir.mkdir()
        if r == 0 and cfg.pseudo.init_checkpoints:
            models = [str(resolve_checkpoint(c)) for c in cfg.pseudo.init_checkpoints]
            for m in models:
                if list(read_checkpoint(m)["classes"]) != data.classes:
                    raise PseudoError(f"{m}: pseudo.init_checkpoints must share {data.root}'s class set")
            given = {"round": 0, "kind": "given", "run_dir": ";".join(models)}
            metrics = Path(models[0]).parent / "metrics.json"  # the given run's own figures, when it has them
            if metrics.is_file():
                best = json.loads(metrics.read_text()).get("best", {})
                given |= {k: best.get(k) for k in ("val_auc", "soundscape_auc")}
            rows.append(given)
        elif r == 0:
            summary = fit(_round_cfg(cfg, 0, None), out=rdir / "run")
            models = [str(rdir / "run")]
            rows.append(_row(0, summary, cfg, 0, 0, "supervised"))
        else:
            table = label_pool(cfg, data, r, prev, rdir)
            n_chunks = len(pd.read_csv(rdir / "pseudo.csv", usecols=["row_id"]))
            init = prev[0] if cfg.pseudo.continue_training else None
            chunks = chunks_from_table(cfg, table, data.classes)
            log.info("round %d: training with %d of %d pseudo-labelled chunks", r, len(table), n_chunks)
            summary = fit(_round_cfg(cfg, r, init), out=rdir / "run", pseudo=chunks)
            models = [str(rdir / "run")]
            rows.append(_row(r, summary, cfg, len(table), n_chunks, "pseudo"))
            if cfg.pseudo.control:  # the control chain: same start and epochs, no pseudo labels
                before = root / f"control_{r - 1}" if r > 1 else Path(prev[0])
                ctrl_init = str(before) if cfg.pseudo.continue_training else None
                ctrl = fit(_round_cfg(cfg, r, ctrl_init), out=root / f"control_{r}")
                rows.append(_row(r, ctrl, cfg, 0, 0, "control"))
        pd.DataFrame(rows).to_csv(rows_path, index=False)
        (rdir / "DONE").write_text(json.dumps({"models": models}))
        prev = models
    return root


def rounds_table(root: str | Path) -> str:
    """rounds.csv as an aligned text table."""
    df = pd.read_csv(Path(root) / "rounds.csv")
    cols = [
        c
        for c in ("round", "kind", "power", "kept_chunks", "pseudo_chunks", "val_auc", "soundscape_auc", "minutes")
        if c in df.columns
    ]
    return df[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}")
