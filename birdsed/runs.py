"""Self-describing run folders.

``runs/<name>/`` holds: ``config.yaml`` (resolved), ``run.json`` (git commit, command, versions, data summary),
``metrics.json`` (per-epoch history), ``logs/version_<N>/metrics.csv`` (Lightning's CSV log, one per start),
``best.pt`` / ``last.pt`` (birdsed checkpoints: config + classes + weights), ``checkpoints/last.ckpt``
(Lightning state for ``--resume``), ``oof.csv`` (held-out predictions of the best epoch) and
``soundscape_preds.csv`` (the best epoch's predictions of the labelled soundscapes, a submission
``birdsed score`` accepts).
"""

from __future__ import annotations

import json
import logging
import math
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import pandas as pd
import torch

from birdsed import __version__
from birdsed.config import Config, save_config
from birdsed.models.build import save_checkpoint

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from birdsed.data import BirdCLEFData
    from birdsed.train import BirdDataModule, SEDModule


class RunExistsError(FileExistsError):
    """The run folder exists and neither --overwrite nor --resume was given."""


def prepare_run_dir(run_dir: Path, overwrite: bool, resume: bool) -> Path:
    """Create the run folder; an existing one is an error unless `overwrite` (it is deleted) or `resume`."""
    if overwrite and resume:
        raise ValueError("--overwrite and --resume exclude each other")
    if run_dir.exists() and any(run_dir.iterdir()):
        if resume:
            return run_dir
        if not overwrite:
            raise RunExistsError(
                f"{run_dir}: run folder exists; pass --overwrite to replace it or --resume to continue"
            )
        shutil.rmtree(run_dir)
    elif resume:
        raise FileNotFoundError(f"{run_dir}: nothing to resume")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def git_info() -> dict[str, Any]:
    """The commit of the birdsed checkout (and whether it had uncommitted changes), if it is a git checkout."""
    root = Path(__file__).resolve().parents[1]
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


class RunRecorder(L.Callback):
    """Writes the run folder: description at the start, history and checkpoints after every epoch."""

    def __init__(self, run_dir: Path, cfg: Config, data: BirdCLEFData, dm: BirdDataModule, resume: bool) -> None:
        self.run_dir, self.cfg, self.data, self.dm = run_dir, cfg, data, dm
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {}
        self._t0 = time.time()
        # how often each class is present in training: the fallback for rows inference cannot predict
        self.class_prior = (dm.targets[dm.train_idx] > 0).mean(axis=0).round(6).tolist()
        if resume and (run_dir / "metrics.json").is_file():
            self.history = json.loads((run_dir / "metrics.json").read_text())["history"]
            self.best = json.loads((run_dir / "metrics.json").read_text()).get("best", {})

    @property
    def monitor(self) -> str | None:
        """The figure that picks the best epoch: AUC on held-out clips (a fold or recording tails); None (last
        epoch) when nothing is held out.

        Soundscape AUC is reported, never used to choose.
        """
        return "val_auc" if "fold" in self.dm.val_roles else None

    def on_fit_start(self, trainer: L.Trainer, pl_module: SEDModule) -> None:
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
            "data_root": str(self.data.root),
            "classes": self.data.classes,
            "train_recordings": len(self.dm.train_idx),
            "val_recordings": len(self.dm.val_idx),
            "train_items_per_epoch": self.cfg.train.samples_per_epoch or len(self.dm.train_set),
            "monitor": self.monitor or "last epoch (nothing held out)",
        }
        (self.run_dir / "run.json").write_text(json.dumps(info, indent=1))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: SEDModule) -> None:
        loss = pl_module.take_train_loss()
        if not trainer.is_global_zero:
            return
        entry = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "train_loss": _finite(loss),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "elapsed_s": round(time.time() - self._t0, 1),
            **{k: _finite(v) for k, v in pl_module.last_val.items()},
        }
        self.history.append(entry)
        model, classes = pl_module.model, pl_module.classes
        extra = {"epoch": entry["epoch"], "class_prior": self.class_prior}
        save_checkpoint(self.run_dir / "last.pt", model, self.cfg, classes, **extra)
        score = entry.get(self.monitor) if self.monitor else entry["epoch"]
        best_score = self.best.get("score")
        if best_score is None or (score is not None and score > best_score):
            self.best = {"epoch": entry["epoch"], "score": score, "monitor": self.monitor or "epoch", **entry}
            save_checkpoint(self.run_dir / "best.pt", model, self.cfg, classes, **extra)
            self._write_predictions(pl_module)
        (self.run_dir / "metrics.json").write_text(json.dumps({"history": self.history, "best": self.best}, indent=1))
        shown = " ".join(
            f"{k}={v:.4f}" for k, v in entry.items() if k in ("train_loss", "val_auc", "soundscape_auc") and v
        )
        log.info("epoch %d: %s (%.0f s)", entry["epoch"], shown, entry["elapsed_s"])

    def _write_predictions(self, pl_module: SEDModule) -> None:
        classes = pl_module.classes
        fold = pl_module.val_probs.get("fold")
        if fold is not None and len(fold):
            train = self.data.train.iloc[self.dm.val_idx]
            oof = pd.DataFrame(fold, columns=classes)
            oof.insert(0, "fold", self.dm.folds[self.dm.val_idx] if self.cfg.data.fold >= 0 else -1)
            oof.insert(0, "primary_label", train["primary_label"].to_numpy())
            oof.insert(0, "filename", train["filename"].to_numpy())
            oof.to_csv(self.run_dir / "oof.csv", index=False)
        sound = pl_module.val_probs.get("soundscape")
        if sound is not None and pl_module.soundscapes is not None:
            sub = pd.DataFrame(np.clip(sound, 0, 1), columns=classes)
            sub.insert(0, "row_id", pl_module.soundscapes.solution["row_id"].to_numpy())
            sub.to_csv(self.run_dir / "soundscape_preds.csv", index=False)

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
            "minutes": round((time.time() - self._t0) / 60, 2),
        }
