"""Studies: named variants of one recipe × seeds, each an ordinary run folder, compared with paired statistics.

A study file (YAML) names the command, the base config, shared overrides, the variants (sets of dotted overrides)
and the seeds::

    command: train            # or pseudo: each run is then a pseudo-label folder, scored at its last round
    config: configs/resnet18_sed.yaml
    overrides: [train.epochs=20]
    baseline: base            # the variant every other one is compared with
    seeds: [0, 1, 2]
    variants:
      base: {}
      ema: {train.averaging: ema}

``OUT/<variant>/seed<s>/`` is the run of (variant, seed) with ``train.seed=s``. Finished runs are skipped, unfinished
ones continue after their last finished epoch (``--resume``); a run folder whose config is not the one the study
asks for is an error, never silently reused. Runs are ordered seed by seed, so a half-finished study already holds
paired results. ``--jobs N`` runs N side by side on this machine (Python's process pool, the cores split between
them); on a cluster, ``--shard i/n`` runs every n-th run starting at i (a job array: one task per shard, the same
OUT on a shared file system), and any process of the study writes the tables from whatever has finished.

``study.csv`` lists every run; ``summary.json``/``summary.csv`` give mean ± sd per variant and the paired difference
to the baseline with bootstrap intervals: over seeds (which seeds were drawn), over soundscapes (which labelled
soundscapes were drawn, the seeds fixed) and over both at once, the interval a verdict (given from 3 paired seeds
on) is read from. Both the epoch each run chose (by held-out clips) and its last epoch are compared; runs without
the last epoch's per-window predictions (made before ``soundscape_preds_last.csv`` existed) are compared over seeds
only.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy.stats import rankdata

from birdsed.config import Config, config_from_dict, config_to_dict, load_config, solution_path
from birdsed.errors import BirdsedError, ConfigError
from birdsed.infer import split_row_ids
from birdsed.metrics import read_aligned
from birdsed.outputs import atomic_path, atomic_write, check_dir_output
from birdsed.runs import MARKER as RUN_MARKER

log = logging.getLogger(__name__)

COMMANDS = ("train", "pseudo")
MARKER = "study.json"
# settings that change how a run is executed, not what it computes: a run made with other values still counts
EXECUTION_KEYS = (("train", "threads"), ("train", "progress"))


class StudyError(BirdsedError, ValueError):
    """A study file or study folder is not usable; the message names the file and what is wrong."""


@dataclass
class Study:
    """A parsed study file (see the module docstring)."""

    command: str
    config: str
    variants: dict[str, list[str]]
    seeds: list[int]
    baseline: str
    overrides: list[str] = field(default_factory=list)
    bootstrap: int = 2000

    def runs(self) -> list[tuple[str, int]]:
        """Every (variant, seed), seed by seed (the baseline first in each), the order runs are made in."""
        names = [self.baseline, *(v for v in self.variants if v != self.baseline)]
        return [(v, s) for s in self.seeds for v in names]

    def run_config(self, variant: str, seed: int, threads: int = 0) -> Config:
        """The config of one run: base file, shared overrides, the variant's, then ``train.seed``."""
        items = [*self.overrides, *self.variants[variant], f"train.seed={seed}", "train.progress=false"]
        if threads:
            items.append(f"train.threads={threads}")
        try:
            return load_config(self.config, items)
        except ConfigError as err:
            raise StudyError(f"variant {variant!r}: {err}") from None


def _override(key: str, value: Any) -> str:
    """A dotted override from a YAML key and value (lists and strings as YAML, which OmegaConf parses back)."""
    return f"{key}={json.dumps(value)}" if not isinstance(value, str) else f"{key}={value}"


def parse_study(data: Any, source: str) -> Study:
    """A :class:`Study` from the mapping of a study file; every variant's config is loaded once to check it.

    Raises:
        StudyError: naming `source` and the key that is wrong.
    """
    if not isinstance(data, dict):
        raise StudyError(f"{source}: a study file is a mapping (command:, config:, variants:, seeds:, ...)")
    known = {"command", "config", "variants", "seeds", "baseline", "overrides", "bootstrap"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise StudyError(f"{source}: unknown key(s) {unknown}; known: {sorted(known)}")
    command = data.get("command", "train")
    if command not in COMMANDS:
        raise StudyError(f"{source}: command must be one of {list(COMMANDS)}, got {command!r}")
    if not isinstance(data.get("config"), str):
        raise StudyError(f"{source}: config: the base config file is required")
    variants_in = data.get("variants")
    if not isinstance(variants_in, dict) or not variants_in:
        raise StudyError(f"{source}: variants: a mapping of names to overrides is required")
    variants: dict[str, list[str]] = {}
    for name, over in variants_in.items():
        if not isinstance(name, str) or not name.replace("-", "_").isidentifier():
            raise StudyError(f"{source}: variant name {name!r}: letters, digits, - and _ only (it names a folder)")
        if over is None:
            over = {}
        if isinstance(over, dict):
            variants[name] = [_override(k, v) for k, v in over.items()]
        elif isinstance(over, list) and all(isinstance(o, str) and "=" in o for o in over):
            variants[name] = list(over)
        else:
            raise StudyError(f"{source}: variant {name!r}: a mapping of dotted keys or a list of key=value")
    seeds = data.get("seeds", [0, 1, 2])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise StudyError(f"{source}: seeds: a list of distinct integers, got {seeds!r}")
    baseline = data.get("baseline", next(iter(variants)))
    if baseline not in variants:
        raise StudyError(f"{source}: baseline {baseline!r} is not one of the variants {list(variants)}")
    overrides = data.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
        raise StudyError(f"{source}: overrides: a list of key=value")
    bootstrap = data.get("bootstrap", 2000)
    if not isinstance(bootstrap, int) or bootstrap < 100:
        raise StudyError(f"{source}: bootstrap: an integer ≥ 100 (resamples), got {bootstrap!r}")
    study = Study(command, data["config"], variants, list(seeds), baseline, list(overrides), bootstrap)
    for v in variants:
        study.run_config(v, seeds[0])
    return study


def load_study(path: str | Path) -> Study:
    """Read and check a study file."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: study file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise StudyError(f"{path}: cannot parse: {str(err).splitlines()[0]}") from None
    return parse_study(data, str(path))


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` → (i, n) with 0 ≤ i < n (a job array's task index and its size)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise StudyError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise StudyError(f"--shard {text!r}: need 0 ≤ i < n")
    return i, n


def _comparable(cfg: Config) -> dict[str, Any]:
    d = config_to_dict(cfg)
    for section, key in EXECUTION_KEYS:
        d[section].pop(key, None)
    return d


def run_state(run_dir: Path, command: str) -> str:
    """``missing``, ``started`` (a birdsed folder killed before it wrote its config: made again), ``unfinished``
    or ``finished``."""
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return "missing"
    if (run_dir / RUN_MARKER).is_file() and not (run_dir / "config.yaml").is_file():
        return "started"
    if command == "train":
        path = run_dir / "metrics.json"
        done = path.is_file() and json.loads(path.read_text()).get("finished", False)
    else:
        cfg_path = run_dir / "config.yaml"
        rounds = config_from_dict(yaml.safe_load(cfg_path.read_text())).pseudo.rounds if cfg_path.is_file() else -1
        done = rounds >= 0 and (run_dir / f"round_{rounds}" / "DONE").is_file()
    return "finished" if done else "unfinished"


def check_run(run_dir: Path, cfg: Config) -> None:
    """A run folder already there must hold the run the study asks for (config equal up to execution keys)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise StudyError(f"{run_dir}: exists without config.yaml; remove it or choose another --out")
    have = _comparable(config_from_dict(yaml.safe_load(path.read_text())))
    want = _comparable(cfg)
    if have != want:
        diff = [
            f"{s}.{k}: {have.get(s, {}).get(k)!r} → {want[s][k]!r}"
            for s in want
            if isinstance(want[s], dict)
            for k in want[s]
            if have.get(s, {}).get(k) != want[s][k]
        ] or [k for k in want if have.get(k) != want[k]]
        raise StudyError(f"{run_dir}: made with another config than the study's ({'; '.join(diff[:4])})")


def execute_run(study: Study, variant: str, seed: int, run_dir: str, threads: int = 0) -> str:
    """Make or continue one run of the study (in this process); returns its state afterwards."""
    from birdsed.pseudo import run_pseudo  # training stack imported only where runs are made
    from birdsed.train import fit

    cfg = study.run_config(variant, seed, threads)
    path = Path(run_dir)
    state = run_state(path, study.command)
    if state in ("unfinished", "finished"):
        check_run(path, cfg)
    if state == "finished":
        return state
    log.info("study run %s seed %d → %s", variant, seed, path)
    resume, overwrite = state == "unfinished", state == "started"
    if study.command == "train":
        fit(cfg, out=path, resume=resume, overwrite=overwrite)
    else:
        run_pseudo(cfg, out=path, resume=resume, overwrite=overwrite)
    return run_state(path, study.command)


def _run_in_worker(study: Study, variant: str, seed: int, run_dir: str, threads: int) -> str:
    """:func:`execute_run` in a pool worker (a worker makes several runs: each names itself in the log)."""
    logging.basicConfig(level=logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter(f"%(levelname)s [{variant} seed {seed}] %(name)s: %(message)s"))
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    return execute_run(study, variant, seed, run_dir, threads)


def prepare_out(study: Study, out: Path, resume: bool) -> None:
    """Create `out` (or check that it holds this study, for `resume`) and record the study in ``study.json``.

    `resume` also lets several processes (the shards of a job array) start on one folder at once: the first one
    writes the record, the others check it.
    """
    marker = out / MARKER
    record = json.dumps(asdict(study), indent=1)
    if resume and not marker.is_file():
        check_dir_output(out)
        if any(p.name != MARKER and not p.name.startswith(f".{MARKER}.") for p in out.iterdir()):
            raise StudyError(f"{out}: exists and is not a study folder (no {MARKER}); choose another --out")
        atomic_write(marker, record)
    if out.is_dir() and any(out.iterdir()):
        if not marker.is_file():
            raise StudyError(f"{out}: exists and is not a study folder (no {MARKER}); choose another --out")
        if json.loads(marker.read_text()) != json.loads(record):
            raise StudyError(f"{out}: holds another study ({marker} differs from this study file)")
        if not resume:
            raise StudyError(f"{out}: study folder exists; pass --resume to continue it")
        return
    check_dir_output(out.parent if not out.exists() else out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(marker, record)


def run_study(
    study: Study, out: str | Path, resume: bool = False, jobs: int = 1, shard: tuple[int, int] | None = None
) -> pd.DataFrame:
    """Make the study's runs (those of `shard` only, if given) in `out`, then write its tables.

    Args:
        jobs: runs side by side in worker processes, each with ``cores // jobs`` torch threads.
        shard: ``(i, n)``: only runs i, i+n, i+2n, ... of :meth:`Study.runs` (one task of a job array).

    Returns:
        ``study.csv`` as a frame.
    """
    out = Path(out)
    prepare_out(study, out, resume or shard is not None)
    todo = study.runs()
    if shard is not None:
        todo = todo[shard[0] :: shard[1]]
    if jobs <= 1:
        for v, s in todo:
            execute_run(study, v, s, str(out / v / f"seed{s}"))
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_run_in_worker, study, v, s, str(out / v / f"seed{s}"), threads) for v, s in todo]
            for f in futures:
                f.result()  # the first failure is raised here, naming its run
    return write_tables(study, out)


# ---- the tables -------------------------------------------------------------------------------------------------


def _final_run(run_dir: Path, command: str) -> Path:
    """The training run whose figures stand for a study run: itself, or a pseudo folder's last round."""
    if command == "train":
        return run_dir
    rounds = pd.read_csv(run_dir / "rounds.csv")
    last = int(rounds["round"].max())
    return run_dir / f"round_{last}" / "run"


def collect(study: Study, out: Path) -> pd.DataFrame:
    """One row per (variant, seed): state, held-out AUC, soundscape AUC of the chosen and the last epoch, minutes,
    and the predictions file the soundscape statistics read."""
    rows = []
    for v, s in study.runs():
        run_dir = out / v / f"seed{s}"
        row: dict[str, Any] = {"variant": v, "seed": s, "run_dir": str(run_dir)}
        row["state"] = run_state(run_dir, study.command)
        if row["state"] == "finished":
            final = _final_run(run_dir, study.command)
            metrics = json.loads((final / "metrics.json").read_text())
            summary = metrics["summary"]
            minutes = summary.get("minutes")
            if study.command == "pseudo":  # every round's training time
                minutes = sum(
                    json.loads(p.read_text())["summary"].get("minutes", 0.0)
                    for p in sorted(run_dir.glob("*_*/**/metrics.json"))
                    if json.loads(p.read_text()).get("finished")
                )
            row |= {
                "best_epoch": summary.get("best_epoch"),
                "val_auc": summary.get("val_auc"),
                "soundscape_auc": summary.get("soundscape_auc"),
                "last_soundscape_auc": summary.get("last_soundscape_auc"),
                "minutes": minutes,
                "predictions": _if_file(final / "soundscape_preds.csv"),
                "predictions_last": _if_file(final / "soundscape_preds_last.csv"),
            }
        rows.append(row)
    return pd.DataFrame(rows)


def _if_file(path: Path) -> str:
    return str(path) if path.is_file() else ""


# the figures a study compares: the epoch each run chose, and its last epoch (study.csv column, predictions column)
FIGURES = {"chosen": ("soundscape_auc", "predictions"), "last": ("last_soundscape_auc", "predictions_last")}


def fast_macro_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """:func:`birdsed.metrics.macro_auc` through ranks (ties averaged), for the many resamples of a bootstrap.

    Shapes (N, C). Classes without a positive or without a negative are left out, as the metric does.
    """
    pos = y.sum(axis=0)
    keep = (pos > 0) & (pos < len(y))
    if not keep.any():
        return math.nan
    y, scores, pos = y[:, keep], scores[:, keep], pos[keep]
    ranks = rankdata(scores, axis=0)
    neg = len(y) - pos
    auc = ((ranks * y).sum(axis=0) - pos * (pos + 1) / 2) / (pos * neg)
    return float(auc.mean())


@dataclass
class Predictions:
    """Every finished run's soundscape predictions on one shared solution: labels (N, C), scores per run, and the
    row groups of each soundscape (what a soundscape bootstrap draws)."""

    y: np.ndarray
    scores: dict[tuple[str, int], np.ndarray]
    groups: list[np.ndarray]


def read_predictions(table: pd.DataFrame, column: str = "predictions") -> Predictions | None:
    """Align each finished run's predictions file (`column` of `table`) with the solution its config names (all
    runs must share one); None when no run has one."""
    scores: dict[tuple[str, int], np.ndarray] = {}
    y = None
    groups: list[np.ndarray] = []
    sol_used = None
    for row in table.itertuples():
        path = getattr(row, column, "")
        if row.state != "finished" or not isinstance(path, str) or not path:
            continue
        final = Path(path).parent
        cfg = yaml.safe_load((final / "config.yaml").read_text())
        sol = solution_path(cfg["data"]["root"], cfg["data"]["solution"])
        if sol is None:
            continue
        if sol_used is not None and Path(sol).resolve() != Path(sol_used).resolve():
            raise StudyError(f"{row.run_dir}: scored on {sol}, other runs on {sol_used}; a study needs one solution")
        y_true, y_score, _ = read_aligned(sol, path)
        if y is None:
            sol_used, y = sol, y_true
            stems = split_row_ids(pd.read_csv(sol, usecols=["row_id"], dtype=str)["row_id"])[0].to_numpy()
            groups = [np.flatnonzero(stems == s) for s in dict.fromkeys(stems)]
        scores[(row.variant, int(row.seed))] = y_score
    return None if y is None else Predictions(y, scores, groups)


def _interval(values: np.ndarray) -> list[float | None]:
    values = values[np.isfinite(values)]
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if len(values) else [None, None]


def paired_difference(
    study: Study, variant: str, preds: Predictions, seeds: list[int], rng: np.random.Generator
) -> dict[str, Any]:
    """Mean over `seeds` of AUC(variant) − AUC(baseline) on the same seed, with 95 % bootstrap intervals over seeds,
    over soundscapes and over both (seeds and soundscapes drawn together)."""
    base, var = study.baseline, variant
    a = np.stack([preds.scores[(var, s)] for s in seeds])  # (S, N, C)
    b = np.stack([preds.scores[(base, s)] for s in seeds])
    diff_of = np.array([fast_macro_auc(preds.y, a[i]) - fast_macro_auc(preds.y, b[i]) for i in range(len(seeds))])
    ci_seeds = _seed_interval(diff_of, study.bootstrap, rng)

    def on_rows(rows: np.ndarray, pick: np.ndarray) -> float:
        y = preds.y[rows]
        return float(np.mean([fast_macro_auc(y, a[i][rows]) - fast_macro_auc(y, b[i][rows]) for i in pick]))

    n_boot = max(100, study.bootstrap // 4)  # each soundscape resample scores 2·S runs
    all_seeds = np.arange(len(seeds))
    by_sound, by_both = [], []
    for _ in range(n_boot):
        rows = np.concatenate([preds.groups[g] for g in rng.integers(0, len(preds.groups), len(preds.groups))])
        by_sound.append(on_rows(rows, all_seeds))
        by_both.append(on_rows(rows, rng.integers(0, len(seeds), len(seeds))))
    both = _interval(np.array(by_both))
    return _record(var, seeds, diff_of, ci_seeds, _interval(np.array(by_sound)), both, both, "seeds and soundscapes")


def _seed_interval(diff_of: np.ndarray, n: int, rng: np.random.Generator) -> list[float | None]:
    """95 % interval of the mean paired difference when the seeds are resampled `n` times."""
    k = len(diff_of)
    return _interval(np.array([diff_of[rng.integers(0, k, k)].mean() for _ in range(n)]))


def _record(
    variant: str,
    seeds: list[int],
    diff_of: np.ndarray,
    ci_seeds: list[float | None],
    ci_soundscapes: list[float | None],
    ci_both: list[float | None],
    judged: list[float | None],
    basis: str,
) -> dict[str, Any]:
    """One paired comparison as summary.json holds it; the verdict reads the `judged` interval."""
    return {
        "variant": variant,
        "seeds": seeds,
        "diff_mean": float(diff_of.mean()),
        "diff_sd": float(diff_of.std(ddof=1)) if len(seeds) > 1 else None,
        "diff_per_seed": diff_of.round(6).tolist(),
        "ci_seeds": ci_seeds,
        "ci_soundscapes": ci_soundscapes,
        "ci_both": ci_both,
        "verdict": _verdict(judged, len(seeds)),
        "basis": basis,
    }


MIN_SEEDS = 3  # fewer paired seeds give intervals but no verdict: one run's noise here is as large as the effects


def _verdict(interval: list[float | None], seeds: int) -> str:
    if seeds < MIN_SEEDS:
        return f"needs ≥ {MIN_SEEDS} seeds"
    lo, hi = interval
    if lo is not None and lo > 0:
        return "helps"
    if hi is not None and hi < 0:
        return "hurts"
    return "inside the noise"


def seed_difference(
    study: Study, variant: str, table: pd.DataFrame, key: str, seeds: list[int], rng: np.random.Generator
) -> dict[str, Any]:
    """:func:`paired_difference` from the run table's figures alone (no per-window predictions): the interval is
    over seeds only, and so is the verdict."""
    fig = table.set_index(["variant", "seed"])[key].astype(float)
    diff_of = np.array([fig[(variant, s)] - fig[(study.baseline, s)] for s in seeds])
    ci = _seed_interval(diff_of, study.bootstrap, rng)
    return _record(variant, seeds, diff_of, ci, [None, None], [None, None], ci, "seeds only")


def _stats(values: pd.Series) -> dict[str, float | None]:
    v = pd.to_numeric(values, errors="coerce").dropna()
    return {
        "mean": float(v.mean()) if len(v) else None,
        "sd": float(v.std(ddof=1)) if len(v) > 1 else None,
    }


def summarize(study: Study, table: pd.DataFrame, seed: int = 0) -> dict[str, Any]:
    """Per variant: runs finished, mean ± sd of each figure; per non-baseline variant: the paired difference of
    soundscape AUC to the baseline, at the chosen epoch (``differences``) and at the last (``differences_last``):
    :func:`paired_difference` where every pair has per-window predictions, :func:`seed_difference` otherwise."""
    rng = np.random.default_rng(seed)
    done = table[table["state"] == "finished"]
    variants = []
    for v in study.variants:
        rows = done[done["variant"] == v]
        entry: dict[str, Any] = {"variant": v, "finished": len(rows), "runs": len(study.seeds)}
        for key in ("soundscape_auc", "last_soundscape_auc", "val_auc", "minutes"):
            entry[key] = _stats(rows[key]) if key in rows else {"mean": None, "sd": None}
        variants.append(entry)
    differences: dict[str, list[dict[str, Any]]] = {}
    soundscapes = 0
    for figure, (key, column) in FIGURES.items():
        preds = read_predictions(table, column) if column in table else None
        soundscapes = max(soundscapes, len(preds.groups) if preds is not None else 0)
        differences[figure] = []
        for v in study.variants:
            if v == study.baseline:
                continue
            pair = [s for s in study.seeds if ((done["variant"] == v) & (done["seed"] == s)).any()]
            pair = [s for s in pair if ((done["variant"] == study.baseline) & (done["seed"] == s)).any()]
            if not pair:
                continue
            if preds is not None and all((v, s) in preds.scores and (study.baseline, s) in preds.scores for s in pair):
                differences[figure].append(paired_difference(study, v, preds, pair, rng))
            else:
                differences[figure].append(seed_difference(study, v, done, key, pair, rng))
    return {
        "baseline": study.baseline,
        "command": study.command,
        "config": study.config,
        "variants": variants,
        "differences": differences["chosen"],
        "differences_last": differences["last"],
        "missing": table.loc[table["state"] != "finished", ["variant", "seed", "state"]].to_dict("records"),
        "soundscapes": soundscapes,
    }


def summary_frame(summary: dict[str, Any]) -> pd.DataFrame:
    """The summary as one row per variant (what ``summary.csv`` holds and the report shows)."""
    diffs = {d["variant"]: d for d in summary["differences"]}
    lasts = {d["variant"]: d for d in summary.get("differences_last", [])}
    rows = []
    for e in summary["variants"]:
        d = diffs.get(e["variant"], {})
        dl = lasts.get(e["variant"], {})
        row = {"variant": e["variant"], "finished": f"{e['finished']}/{e['runs']}"}
        for key in ("soundscape_auc", "last_soundscape_auc", "val_auc", "minutes"):
            row[f"{key}_mean"], row[f"{key}_sd"] = e[key]["mean"], e[key]["sd"]
        row["diff_vs_baseline"] = d.get("diff_mean")
        row["diff_sd"] = d.get("diff_sd")
        for k in ("ci_seeds", "ci_soundscapes", "ci_both"):
            lo, hi = d.get(k, [None, None])
            row[f"{k}_low"], row[f"{k}_high"] = lo, hi
        row["verdict"] = d.get("verdict", "baseline" if e["variant"] == summary["baseline"] else "")
        row["diff_last_vs_baseline"] = dl.get("diff_mean")
        last_ci = dl.get("ci_both", [None, None])
        if last_ci[0] is None:  # compared over seeds only
            last_ci = dl.get("ci_seeds", [None, None])
        row["ci_last_low"], row["ci_last_high"] = last_ci
        row["verdict_last"] = dl.get("verdict", "")
        rows.append(row)
    return pd.DataFrame(rows)


def write_tables(study: Study, out: Path) -> pd.DataFrame:
    """Write ``study.csv``, ``summary.json`` and ``summary.csv`` from the run folders in `out` (all shards)."""
    table = collect(study, out)
    summary = summarize(study, table)
    with atomic_path(out / "study.csv") as tmp:
        table.to_csv(tmp, index=False)
    atomic_write(out / "summary.json", json.dumps(summary, indent=1))
    with atomic_path(out / "summary.csv") as tmp:
        summary_frame(summary).to_csv(tmp, index=False)
    return table


def read_study_dir(out: str | Path) -> tuple[Study, pd.DataFrame, dict[str, Any]]:
    """A study folder's study, ``study.csv`` and ``summary.json`` (rewritten from the run folders first)."""
    out = Path(out)
    if not (out / MARKER).is_file():
        raise StudyError(f"{out}: not a study folder (no {MARKER})")
    study = Study(**json.loads((out / MARKER).read_text()))
    table = write_tables(study, out)
    return study, table, json.loads((out / "summary.json").read_text())


def summary_lines(summary: dict[str, Any]) -> Sequence[str]:
    """The summary as aligned text lines (the command's printout)."""
    lines = []
    diffs = {d["variant"]: d for d in summary["differences"]}
    lasts = {d["variant"]: d for d in summary.get("differences_last", [])}
    for e in summary["variants"]:
        s, last = e["soundscape_auc"], e["last_soundscape_auc"]
        text = f"{e['variant']:>16}  {e['finished']}/{e['runs']} runs  soundscape AUC {_pm(s)}  last {_pm(last)}"
        for label, d in (("Δ", diffs.get(e["variant"])), ("Δlast", lasts.get(e["variant"]))):
            if d:
                lo, hi = d["ci_both"] if d["ci_both"][0] is not None else d["ci_seeds"]
                text += f"  {label} {d['diff_mean']:+.4f} [{lo:+.4f}, {hi:+.4f}] {d['verdict']}"
        if e["variant"] == summary["baseline"]:
            text += "  (baseline)"
        lines.append(text)
    return lines


def _pm(stat: dict[str, float | None]) -> str:
    if stat["mean"] is None:
        return "–"
    return f"{stat['mean']:.4f}" + (f" ± {stat['sd']:.4f}" if stat["sd"] is not None else "")
