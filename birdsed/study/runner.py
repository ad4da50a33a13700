"""Studies: named variants of one recipe × seeds (a study file, :mod:`birdsed.study.spec`), each an ordinary run
folder, compared with paired statistics.

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
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from birdsed.config import Config
from birdsed.config.load import config_from_dict, config_to_dict
from birdsed.outputs import atomic_path, atomic_write, die_with_parent, read_csv_own, read_json, read_yaml
from birdsed.ownership import check_dir_output
from birdsed.rules import check_processes, usable_cores
from birdsed.study.spec import Study, StudyError
from birdsed.study.stats import summarize, summary_frame
from birdsed.training.runs import MARKER as RUN_MARKER

log = logging.getLogger(__name__)

MARKER = "study.json"
# settings that change how a run is executed, not what it computes: a run made with other values still counts
EXECUTION_KEYS = (("train", "threads"), ("train", "progress"))
# validating less often leaves the weights bit for bit the same (tested); with train.select=last it changes only
# which epochs have curves, so it counts as execution too
LAST_ONLY_KEYS = (("train", "val_every"),)
# what `birdsed train` never reads (the settings of `birdsed pseudo`, `agile`, and of the teacher but its mapping, which
# starts a BirdNET-backbone head and maps the distillation targets): a train study's finished run stays valid when a
# recipe's file changes only there
TRAIN_UNREAD = ("pseudo", "agile")
TRAIN_READS_OF_TEACHER = ("mapping",)


def _comparable(cfg: Config, command: str) -> dict[str, Any]:
    d = config_to_dict(cfg)
    for section, key in (*EXECUTION_KEYS, *(LAST_ONLY_KEYS if cfg.train.select == "last" else ())):
        d[section].pop(key, None)
    if command == "train":
        for section in TRAIN_UNREAD:
            d.pop(section, None)
        d["teacher"] = {k: v for k, v in d["teacher"].items() if k in TRAIN_READS_OF_TEACHER}
    return d


def run_state(run_dir: Path, command: str) -> str:
    """``missing``, ``started`` (a birdsed folder killed before it wrote its config: made again), ``unfinished``
    or ``finished``."""
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return "missing"
    if (run_dir / RUN_MARKER).is_file() and not (run_dir / "config.yaml").is_file():
        return "started"
    if command in ("train", "infer"):
        path = run_dir / "metrics.json"
        done = path.is_file() and read_json(path).get("finished", False)
    else:
        cfg_path = run_dir / "config.yaml"
        rounds = config_from_dict(read_yaml(cfg_path)).pseudo.rounds if cfg_path.is_file() else -1
        done = rounds >= 0 and (run_dir / f"round_{rounds}" / "DONE").is_file()
    return "finished" if done else "unfinished"


def check_run(run_dir: Path, cfg: Config, command: str) -> None:
    """A run folder already there must hold the run the study asks for (config equal up to execution keys, and for a
    train run up to the sections training never reads)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise StudyError(f"{run_dir}: exists without config.yaml; remove it or choose another --out")
    have = _comparable(config_from_dict(read_yaml(path)), command)
    want = _comparable(cfg, command)
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
    from birdsed.pseudo.rounds import run_pseudo  # training stack imported only where runs are made
    from birdsed.training.train import fit

    cfg = study.run_config(variant, seed, threads)
    path = Path(run_dir)
    state = run_state(path, study.command)
    if state in ("unfinished", "finished"):
        check_run(path, cfg, study.command)
    if state == "finished" and study.command == "infer":
        made_by = read_json(path / "metrics.json")["summary"]["checkpoint"]
        if Path(made_by).resolve() != study.checkpoint(seed, variant).resolve():
            raise StudyError(f"{path}: predicted by {made_by}, not by the study's {study.checkpoint(seed, variant)}")
    if state == "finished":
        return state
    if study.command == "infer":
        log.info("study run %s seed %d → %s", variant, seed, path)
        infer_run(cfg, study.checkpoint(seed, variant), path)
        return run_state(path, study.command)
    log.info("study run %s seed %d → %s", variant, seed, path)
    resume, overwrite = state == "unfinished", state == "started"
    if study.command == "train":
        fit(cfg, out=path, resume=resume, overwrite=overwrite)
    else:
        run_pseudo(cfg, out=path, resume=resume, overwrite=overwrite)
    return run_state(path, study.command)


def infer_run(cfg: Config, checkpoint: Path, run_dir: Path) -> None:
    """One run of an infer study: the soundscapes ``test_solution.csv`` names, predicted by `checkpoint` with
    ``cfg.infer`` (teacher included) into ``soundscape_preds.csv``, scored into ``metrics.json`` (written last: the
    run is finished once it exists)."""
    import time

    from birdsed.data.folder import read_soundscape_labels
    from birdsed.inference.predict import device_for, predict
    from birdsed.inference.submit import load_ensemble, output_columns
    from birdsed.scoring.metrics import score_files

    start = time.monotonic()
    solution, root = cfg.solution_path, Path(cfg.data.root)
    if solution is None:
        raise StudyError(f"{root}: an infer study scores the labelled soundscapes; no test_solution.csv")
    device = device_for(cfg)
    members = load_ensemble([checkpoint], cfg.infer, device)
    sample = root / "sample_submission.csv"
    columns = output_columns(members, sample if sample.is_file() else None)
    labels = read_soundscape_labels(solution, root, columns, cfg.infer.window_seconds)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    files = [root / k for k in labels.keys]
    sub = predict(cfg, members, root / "test_soundscapes", files=files, device=device, columns=columns).submission
    sub = sub[sub["row_id"].isin(labels.solution["row_id"])]
    preds = run_dir / "soundscape_preds.csv"
    with atomic_path(preds) as tmp:
        sub.to_csv(tmp, index=False)
    auc = score_files(solution, preds).macro_auc
    summary = {"run_dir": str(run_dir), "checkpoint": str(checkpoint), "soundscape_auc": auc}
    summary["minutes"] = round((time.monotonic() - start) / 60, 2)
    atomic_write(run_dir / "metrics.json", json.dumps({"finished": True, "summary": summary}, indent=1))


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
        old = asdict(Study(**read_json(marker)))  # fields added since, at their defaults
        if old != json.loads(record) and not _grows(old, asdict(study)):
            raise StudyError(
                f"{out}: holds another study ({marker} differs from this study file beyond added variants or seeds)"
            )
        if not resume:
            raise StudyError(f"{out}: study folder exists; pass --resume to continue it")
        if old != json.loads(record):
            added = sorted(set(study.variants) - set(old["variants"]))
            log.info(
                "%s: the study grows (variants %s, seeds %s added)",
                out,
                added,
                sorted(set(study.seeds) - set(old["seeds"])),
            )
            atomic_write(marker, record)
        return
    check_dir_output(out.parent if not out.exists() else out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(marker, record)


def _grows(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether study record `new` is `old` with variants or seeds added (the runs made so far stay valid)."""
    same = all(old[k] == new[k] for k in old if k not in ("variants", "seeds", "variant_checkpoints"))
    kept = all(
        new["variants"].get(name) == items
        and new["variant_checkpoints"].get(name) == old["variant_checkpoints"].get(name)
        for name, items in old["variants"].items()
    )
    return same and kept and set(old["seeds"]) <= set(new["seeds"])


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
    check_processes("--jobs", jobs)
    prepare_out(study, out, resume or shard is not None)
    todo = study.runs()
    if shard is not None:
        todo = todo[shard[0] :: shard[1]]
    if jobs <= 1:
        for v, s in todo:
            execute_run(study, v, s, str(out / v / f"seed{s}"))
    else:
        threads = max(1, usable_cores() // jobs)
        spawn = get_context("spawn")
        with ProcessPoolExecutor(jobs, spawn, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
            futures = [pool.submit(_run_in_worker, study, v, s, str(out / v / f"seed{s}"), threads) for v, s in todo]
            for f in futures:
                f.result()  # the first failure is raised here, naming its run
    return write_tables(study, out)


# ---- the tables -------------------------------------------------------------------------------------------------


def _final_run(run_dir: Path, command: str) -> tuple[Path, Path | None]:
    """The training run whose figures stand for a study run — itself, or a pseudo folder's last round — and a pseudo
    folder's given round 0 (``pseudo.init_checkpoints``: the run folder of its model; None when trained here). With
    ``pseudo.rounds=0`` the given run is the final one: round 0 as a baseline."""
    if command in ("train", "infer"):
        return run_dir, None
    rounds = read_csv_own(run_dir / "rounds.csv", ("round", "kind"))
    given_rows = rounds[rounds["kind"] == "given"]
    given = None
    if not given_rows.empty:
        models = str(given_rows.iloc[0]["run_dir"]).split(";")
        if len(models) > 1 or not (Path(models[0]).parent / "metrics.json").is_file():
            raise StudyError(f"{run_dir}: round 0 is given as {';'.join(models)}, not one training run's model")
        given = Path(models[0]).parent
    last = int(rounds["round"].max())
    return (given if last == 0 and given else run_dir / f"round_{last}" / "run"), given


def collect(study: Study, out: Path) -> pd.DataFrame:
    """One row per (variant, seed): state, held-out AUC, soundscape AUC of the chosen and the last epoch, minutes,
    and the predictions file the soundscape statistics read."""
    rows = []
    for v, s in study.runs():
        run_dir = out / v / f"seed{s}"
        row: dict[str, Any] = {"variant": v, "seed": s, "run_dir": str(run_dir)}
        row["state"] = run_state(run_dir, study.command)
        if row["state"] == "finished":
            final, given = _final_run(run_dir, study.command)
            metrics = read_json(final / "metrics.json")
            summary = metrics["summary"]
            minutes = summary.get("minutes")
            if study.command == "pseudo":  # every round's training time, a given round 0's included
                paths = [*([given / "metrics.json"] if given else []), *sorted(run_dir.glob("*_*/**/metrics.json"))]
                runs = [read_json(p) for p in paths]
                minutes = sum(m["summary"].get("minutes", 0.0) for m in runs if m.get("finished"))
            row |= {
                "best_epoch": summary.get("best_epoch"),
                "val_auc": summary.get("val_auc"),
                "soundscape_auc": summary.get("soundscape_auc"),
                "last_soundscape_auc": summary.get("last_soundscape_auc"),
                "minutes": minutes,
                "predictions": _if_file(final / "soundscape_preds.csv"),
                "predictions_last": _if_file(final / "soundscape_preds_last.csv"),
            }
            if study.command == "infer":
                row["checkpoint"] = summary["checkpoint"]
        rows.append(row)
    return pd.DataFrame(rows)


def _if_file(path: Path) -> str:
    return str(path) if path.is_file() else ""


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
    study = Study(**read_json(out / MARKER))
    table = write_tables(study, out)
    return study, table, read_json(out / "summary.json")
