"""Self-describing run folders.

``runs/<name>/`` holds: ``config.yaml`` (resolved), ``run.json`` (git commit, command, versions, data summary),
``metrics.json`` (per-epoch history), ``logs/version_<N>/metrics.csv`` (Lightning's CSV log, one per start),
``best.pt`` / ``last.pt`` (birdsed checkpoints: config + classes + weights), ``checkpoints/last.ckpt``
(Lightning state for ``--resume``), ``oof.csv`` (held-out predictions of the best epoch),
``soundscape_preds.csv`` (the best epoch's predictions of the labelled soundscapes, a submission
``birdsed score`` accepts) and ``soundscape_preds_last.csv`` (the same for the last finished epoch).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch

from birdsed import __version__
from birdsed.config import Config, ConfigError
from birdsed.config.load import config_to_dict, load_config, save_config
from birdsed.errors import BirdsedError, OutputError
from birdsed.models.build import save_checkpoint
from birdsed.outputs import atomic_path, atomic_write, read_json
from birdsed.ownership import check_dir_output
from birdsed.training.averaging import kept_model

log = logging.getLogger(__name__)


class RunExistsError(BirdsedError, FileExistsError):
    """The run folder exists and neither --overwrite nor --resume was given, or it is not a birdsed folder."""


MARKER = ".birdsed-run"


def is_run_folder(path: Path) -> bool:
    """Whether `path` was made by birdsed (``train`` or ``pseudo``): only such folders are ever deleted."""
    if (path / MARKER).is_file():
        return True
    return (path / "config.yaml").is_file() and any((path / f).is_file() for f in ("run.json", "rounds.csv"))


# Keys that change only how a run is watched or where it runs, not what it computes: --resume may change them
# (train.epochs too: more epochs extend a run, as `--resume train.epochs=N` always has)
WATCH_KEYS = ("train.progress", "train.threads", "train.val_every", "train.epochs", "data.num_workers", "tracking.")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_resume_config(run_dir: Path, cfg: Config) -> None:
    """Refuse ``--resume`` with a config that differs from the run's own (``config.yaml``) in a key that changes
    what it computes: the schedule, the model and the data would silently be the old run's or a mix.

    Raises:
        ConfigError: naming the keys, the run's values and the given ones.
    """
    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    try:
        old = _flat(config_to_dict(load_config(path)))
    except ConfigError as err:
        raise ConfigError(f"{path}: the run's own config cannot be read back ({err})") from None
    new = _flat(config_to_dict(cfg))
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k) and not k.startswith(WATCH_KEYS)]
    if changed:
        detail = ", ".join(f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in changed[:6])
        raise ConfigError(
            f"{run_dir}: --resume continues the run with its own config; {len(changed)} key(s) differ ({detail}). "
            "Resume with the run's settings, or start a new run (--out elsewhere or --overwrite)"
        )


# every file a training run or a pseudo folder writes (its rounds are run folders inside it); anything else in a run
# folder is a user's, and --overwrite refuses to remove it
RUN_FILES = re.compile(
    r"^(?:round_\d+/)*(?:logs/.*|checkpoints/last\.ckpt(?:\.part)?|best\.pt|last\.pt|last\.ckpt(?:\.part)?|config\.yaml|metrics\.json|mlflow\.json|oof\.csv"
    r"|pseudo\.csv|pseudo_meta\.json|pseudo_soundscapes\.json|rounds\.csv|run\.json|soundscape_preds(?:_last)?\.csv"
    r"|taxonomy\.csv|labelled_preds\.csv|DONE|\.birdsed-run|\..*\.part)$"
)


def foreign_run_files(run_dir: Path) -> list[str]:
    """Files in `run_dir` that birdsed does not write in a run folder (:data:`RUN_FILES`), and symbolic links."""
    out = []
    for p in sorted(run_dir.rglob("*")):
        name = p.relative_to(run_dir).as_posix()
        if p.is_symlink() or (p.is_file() and not RUN_FILES.match(name)):
            out.append(name)
    return out


def check_run_dir(run_dir: Path, overwrite: bool, resume: bool) -> None:
    """Check what `overwrite`/`resume` will do with `run_dir`, touching nothing (so errors found later in the
    validation of config and data leave an old run as it was).

    Raises:
        RunExistsError: the folder exists without --overwrite/--resume, or --overwrite names a folder that is not a
            birdsed run.
        BirdsedError: --resume of a folder that does not exist.
    """
    if overwrite and resume:
        raise BirdsedError("--overwrite and --resume exclude each other")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunExistsError(f"{run_dir}: exists and is a file, not a run folder")
    if not (run_dir.is_dir() and any(run_dir.iterdir())):
        if resume:
            raise BirdsedError(f"{run_dir}: nothing to resume (no such run folder)")
        check_dir_output(run_dir.parent)
        return
    if resume:
        if not is_run_folder(run_dir):
            raise RunExistsError(f"{run_dir}: not a birdsed run folder, nothing to resume")
        check_dir_output(run_dir)
        return
    if not overwrite:
        raise RunExistsError(f"{run_dir}: run folder exists; pass --overwrite to replace it or --resume to continue")
    if not is_run_folder(run_dir):
        raise RunExistsError(
            f"{run_dir}: --overwrite replaces only birdsed run folders, and this one is not (no {MARKER}, "
            "config.yaml with run.json or rounds.csv); remove it yourself or choose another --out"
        )
    foreign = foreign_run_files(run_dir)
    if foreign:
        raise RunExistsError(
            f"{run_dir}: holds {len(foreign)} file(s) birdsed does not write in a run folder "
            f"({', '.join(foreign[:5])}); move them out first: --overwrite replaces only what birdsed wrote"
        )
    check_dir_output(run_dir.parent)


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir`'s lock for the whole run, so two commands never write one run folder (two ``train --overwrite
    --out SAME`` would leave the config of one beside the weights of the other).

    The lock is an ``flock`` on ``.<name>.lock`` beside the folder (not inside it: ``--overwrite`` removes the
    folder); the kernel releases it when the process ends, however it ends. Only the first process of a
    distributed run (``RANK``/``LOCAL_RANK`` 0) takes it: the others write nothing of their own.

    Raises:
        RunExistsError: another process holds the lock.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    if os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) != "0":
        yield
        return
    check_dir_output(run_dir.parent)
    lock = run_dir.parent / f".{run_dir.name}.lock"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise OutputError(f"{lock}: cannot create the run folder's lock ({err.strerror or err})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RunExistsError(
                f"{run_dir}: another birdsed command is writing this run folder (it holds {lock}); wait for it to "
                "end or choose another --out"
            ) from None
        yield  # the file stays as it is (no pid written): a resumed run changes nothing beside its folder
    finally:
        os.close(fd)  # closing releases the lock


def open_run_dir(run_dir: Path, overwrite: bool, resume: bool, kind: str) -> Path:
    """Create (or, with `overwrite`, replace) the run folder after :func:`check_run_dir` and all other validation
    passed; mark it as birdsed's."""
    check_run_dir(run_dir, overwrite, resume)
    if overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / MARKER).is_file():
            atomic_write(run_dir / MARKER, json.dumps({"kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}))
    except OSError as err:
        raise OutputError(f"{run_dir}: cannot create the run folder ({err.strerror or err})") from None
    return run_dir


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The summary of a finished run (as :meth:`RunRecorder.summary` returned it), or None if it did not finish."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    metrics = read_json(path)
    return metrics.get("summary") if metrics.get("finished") else None


def git_info() -> dict[str, Any]:
    """The commit of the birdsed checkout (and whether it had uncommitted changes), if it is a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        )
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


@dataclass
class RunFacts:
    """What a run folder records about the data of a run, handed to :class:`RunRecorder` by ``fit``.

    Attributes:
        held_out: one row per held-out clip in validation order: filename, primary_label, fold (-1: tails).
        class_prior: share of training recordings that hold each class (inference's fallback for unreadable rows).
    """

    data_root: str
    classes: list[str]
    train_recordings: int
    items_per_epoch: int
    held_out: pd.DataFrame
    class_prior: list[float]


class RunRecorder(L.Callback):
    """Writes the run folder: its description at the start; after every epoch a resumable checkpoint
    (``checkpoints/last.ckpt``), then ``last.pt``/``best.pt``, the best epoch's predictions and ``metrics.json``.

    Every file is replaced atomically, and the history travels inside the Lightning checkpoint (this callback's
    state), so a run killed at any instant resumes after its last finished epoch with each epoch listed once; files
    a kill left one epoch behind are rewritten from the checkpoint on resume. (Not Lightning's ``ModelCheckpoint``:
    its comparison is strict, so a tie on the held-out AUC — common, the tails saturate at 1.0 — keeps the earlier
    epoch where this takes the later, and its files are not the self-describing ``best.pt`` inference loads.)
    """

    def __init__(self, run_dir: Path, cfg: Config, facts: RunFacts) -> None:
        self.run_dir, self.cfg, self.facts = run_dir, cfg, facts
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {}
        self.best_probs: dict[str, np.ndarray] = {}  # the best epoch's validation probabilities, by loader role
        self.last_soundscape: np.ndarray | None = None  # the last epoch's soundscape probabilities
        self._t0 = time.time()
        self._elapsed0 = 0.0  # seconds spent before a resume
        self.class_prior = facts.class_prior

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / "checkpoints" / "last.ckpt"

    @property
    def monitor(self) -> str | None:
        """The figure that picks the best epoch: AUC on held-out clips (a fold or recording tails) with
        ``train.select=held_out``; None (the last epoch) with ``last`` or when nothing is held out.

        Soundscape AUC is reported, never used to choose.
        """
        return "val_auc" if len(self.facts.held_out) and self.cfg.train.select == "held_out" else None

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "best": self.best,
            "best_probs": {k: v.tolist() for k, v in self.best_probs.items()},
            "last_soundscape": None if self.last_soundscape is None else self.last_soundscape.tolist(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict["history"])
        self.best = dict(state_dict["best"])
        self.best_probs = {k: np.asarray(v, dtype=np.float64) for k, v in state_dict["best_probs"].items()}
        last = state_dict.get("last_soundscape")
        self.last_soundscape = None if last is None else np.asarray(last, dtype=np.float64)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        save_config(self.cfg, self.run_dir / "config.yaml")
        info = {
            "name": self.cfg.name,
            "birdsed": __version__,
            "git": git_info(),
            "command": sys.argv,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "lightning": L.__version__,
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
            "device": str(pl_module.device),
            "precision": str(trainer.precision),
            "world_size": trainer.world_size,
            "data_root": self.facts.data_root,
            "classes": self.facts.classes,
            "train_recordings": self.facts.train_recordings,
            "val_recordings": len(self.facts.held_out),
            "train_items_per_epoch": self.facts.items_per_epoch,
            "monitor": self.monitor or "last epoch (nothing held out)",
        }
        if self.history:  # resumed from checkpoints/last.ckpt
            old = read_json(self.run_dir / "run.json") if (self.run_dir / "run.json").is_file() else {}
            info = {**old, "resumed": [*old.get("resumed", []), {"at": info["started"], "after_epoch": self.epoch}]}
            self._elapsed0 = float(self.history[-1]["elapsed_s"])
            self._repair(kept_model(trainer, pl_module), pl_module)
        atomic_write(self.run_dir / "run.json", json.dumps(info, indent=1))

    @property
    def epoch(self) -> int:
        """The last finished epoch (-1 before the first)."""
        return int(self.history[-1]["epoch"]) if self.history else -1

    def _repair(self, model: torch.nn.Module, pl_module: L.LightningModule) -> None:
        """After a resume: rewrite what a kill between the checkpoint and the other files left behind. `model`
        holds the restored weights of the last finished epoch (averaged, with ``train.averaging``)."""
        extra = {"epoch": self.epoch, "class_prior": self.class_prior}
        save_checkpoint(self.run_dir / "last.pt", model, self.cfg, self.facts.classes, **extra)
        if self.best.get("epoch") == self.epoch:
            save_checkpoint(self.run_dir / "best.pt", model, self.cfg, self.facts.classes, **extra)
        self._write_predictions(pl_module.soundscapes, pl_module.labelled)
        self._write_soundscapes("soundscape_preds_last.csv", self.last_soundscape, pl_module.soundscapes)
        self._write_metrics()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Record the epoch. Reads from the module only what validation leaves there: ``last_val`` (figures),
        ``val_probs`` (probabilities by loader role) and ``soundscapes`` (the labelled windows)."""
        loss = trainer.callback_metrics.get("train_loss_epoch")
        loss = float(loss) if loss is not None else float("nan")
        # with train.val_every > 1, Lightning validates after epochs n-1, 2n-1, ... only
        validated = (trainer.current_epoch + 1) % self.cfg.train.val_every == 0
        entry = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "train_loss": _finite(loss),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "elapsed_s": round(self._elapsed0 + time.time() - self._t0, 1),
            **({k: _finite(v) for k, v in pl_module.last_val.items()} if validated else {}),
        }
        for key in ("distill_cos", "distill_bce"):  # the distillation losses' epoch means, where a run logs them
            if key in trainer.callback_metrics:
                entry[key] = _finite(float(trainer.callback_metrics[key]))
        self.history.append(entry)
        score = entry.get(self.monitor) if self.monitor else entry["epoch"]
        best_score = self.best.get("score")
        # a tie goes to the later epoch: held-out clips of 44 recordings saturate (AUC 1.0 from a few epochs on),
        # and more training at the same held-out score scored better on soundscapes (benchmarks/RESULTS.md)
        is_best = validated and (best_score is None or (score is not None and score >= best_score))
        if is_best:
            self.best = {"epoch": entry["epoch"], "score": score, "monitor": self.monitor or "epoch", **entry}
            self.best_probs = {k: v for k, v in pl_module.val_probs.items() if v is not None}
        if validated:
            self.last_soundscape = pl_module.val_probs.get("soundscape")
        # the resumable state first: every file below can be rebuilt from it
        self._save_resumable(trainer)
        if not trainer.is_global_zero:
            return
        model, classes = kept_model(trainer, pl_module), self.facts.classes
        extra = {"epoch": entry["epoch"], "class_prior": self.class_prior}
        save_checkpoint(self.run_dir / "last.pt", model, self.cfg, classes, **extra)
        if is_best:
            save_checkpoint(self.run_dir / "best.pt", model, self.cfg, classes, **extra)
            self._write_predictions(pl_module.soundscapes, pl_module.labelled)
        self._write_soundscapes("soundscape_preds_last.csv", self.last_soundscape, pl_module.soundscapes)
        self._write_metrics()
        shown = " ".join(
            f"{k}={v:.4f}"
            for k, v in entry.items()
            if k in ("train_loss", "val_auc", "soundscape_auc", "labelled_auc") and v
        )
        log.info("epoch %d: %s (%.0f s)", entry["epoch"], shown, entry["elapsed_s"])

    def _save_resumable(self, trainer: L.Trainer) -> None:
        """Lightning's full training state (weights, optimiser, scheduler, loops, this callback), atomically."""
        self.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.ckpt_path.with_name(self.ckpt_path.name + ".part")
        try:
            trainer.save_checkpoint(str(tmp), weights_only=False)  # the full state: optimiser, scheduler, loops
            if trainer.is_global_zero:
                tmp.replace(self.ckpt_path)
        except (OSError, RuntimeError) as err:  # torch.save's RuntimeError on a full disk names no file
            tmp.unlink(missing_ok=True)
            reason = err.strerror if isinstance(err, OSError) and err.strerror else "write failed"
            raise OutputError(
                f"{self.ckpt_path}: cannot write the resumable checkpoint ({reason}; is the disk full?)"
            ) from None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self._write_metrics(finished=True)

    def _write_metrics(self, finished: bool = False) -> None:
        metrics: dict[str, Any] = {"history": self.history, "best": self.best, "finished": finished}
        if finished:
            metrics["summary"] = self.summary()
        atomic_write(self.run_dir / "metrics.json", json.dumps(metrics, indent=1))

    def _write_predictions(self, soundscapes: Any, labelled: Any = None) -> None:
        classes = self.facts.classes
        fold = self.best_probs.get("fold")
        if fold is not None and len(fold):
            oof = pd.concat([self.facts.held_out, pd.DataFrame(fold, columns=classes)], axis=1)
            with atomic_path(self.run_dir / "oof.csv") as tmp:
                oof.to_csv(tmp, index=False)
        self._write_soundscapes("soundscape_preds.csv", self.best_probs.get("soundscape"), soundscapes)
        # the held-out labelled training windows: out-of-fold predictions to choose an entry on
        self._write_soundscapes("labelled_preds.csv", self.best_probs.get("labelled"), labelled)

    def _write_soundscapes(self, name: str, probs: np.ndarray | None, soundscapes: Any) -> None:
        """Soundscape probabilities (solution rows × classes) as a submission-shaped CSV."""
        if probs is None or soundscapes is None:
            return
        sub = pd.DataFrame(np.clip(probs, 0, 1), columns=self.facts.classes)
        sub.insert(0, "row_id", soundscapes.solution["row_id"].to_numpy())
        with atomic_path(self.run_dir / name) as tmp:
            sub.to_csv(tmp, index=False)

    def summary(self) -> dict[str, Any]:
        """Headline figures of the run."""
        last = self.history[-1] if self.history else {}
        return {
            "run_dir": str(self.run_dir),
            "epochs": len(self.history),
            "best_epoch": self.best.get("epoch"),
            "val_auc": self.best.get("val_auc"),
            "soundscape_auc": self.best.get("soundscape_auc"),
            "last_soundscape_auc": last.get("soundscape_auc"),
            "labelled_auc": self.best.get("labelled_auc"),
            "minutes": round(float(last.get("elapsed_s", 0.0)) / 60, 2),
        }
