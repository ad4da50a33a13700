"""Supervised training with Lightning: the LightningModule, the data module and ``fit(cfg)``.

Multi-GPU and multi-node come from Lightning's own ``devices``/``num_nodes``/``strategy`` (``train.*`` keys).
The run folder bookkeeping lives in :mod:`birdsed.training.runs`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import pickle
import signal
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from birdsed.config import Config
from birdsed.data.augment import mixup, spec_augment
from birdsed.data.datasets import (
    PseudoChunks,
    epoch_seed,
)
from birdsed.data.folder import (
    BirdCLEFData,
    SoundscapeLabels,
    load_data,
    read_soundscape_labels,
)
from birdsed.data.prepare import ensure_cache
from birdsed.data.soundscapes import LabelledWindows, class_groups, read_if_present
from birdsed.errors import BirdsedError, ConfigError, Stopped
from birdsed.models.build import CheckpointError, build_model, check_forward, init_from_checkpoint, load_plain
from birdsed.models.sed import clip_frame_blend
from birdsed.outputs import show_bars
from birdsed.rules import check_backbone_name, check_processes, parse_devices
from birdsed.scoring.metrics import macro_auc
from birdsed.training import tracking
from birdsed.training.averaging import averaging_callback
from birdsed.training.data import BirdDataModule, split_recordings
from birdsed.training.distill import Distiller, distill_on, distill_weights
from birdsed.training.finetune import lr_factor, param_groups, prepare_model
from birdsed.training.losses import activation, build_loss
from birdsed.training.runs import (
    RunFacts,
    RunRecorder,
    check_resume_config,
    check_run_dir,
    open_run_dir,
    read_summary,
    run_lock,
)

log = logging.getLogger(__name__)


class TrainingError(BirdsedError, FloatingPointError):
    """Training cannot go on (a non-finite loss); the message names the step and the files of the batch."""


def probabilities(logits: torch.Tensor, loss: str) -> torch.Tensor:
    """Scores from logits by :func:`birdsed.training.losses.activation` of `loss`, over the last (class) axis.

    (B, C) → (B, C), or frame-level (B, T', C) → (B, T', C).
    """
    return torch.softmax(logits.float(), dim=-1) if activation(loss) == "softmax" else torch.sigmoid(logits.float())


def window_scores(out: dict[str, torch.Tensor], loss: str, clip_weight: float) -> torch.Tensor:
    """A window's scores as ``birdsed infer`` makes them: ``clip_weight`` × clip + the rest × max over its frames.

    Args:
        out: the model's output, ``clip_logits`` (B, C) and ``frame_logits`` (B, T', C).
        loss: the training loss (its activation turns logits into probabilities).
        clip_weight: 1 scores the clip output alone (``infer.clip_weight``).

    Returns:
        (B, C) probabilities.
    """
    clip = probabilities(out["clip_logits"], loss)
    if clip_weight >= 1.0:
        return clip
    return clip_frame_blend(clip, probabilities(out["frame_logits"], loss).amax(dim=1), clip_weight)  # (B, C)


VAL_ROLES = ("fold", "soundscape", "labelled")  # held-out clips, test soundscapes, held-out labelled windows


class SEDModule(L.LightningModule):
    """Training and validation of an SED model (the model itself has no Lightning in it).

    Args:
        cfg: the resolved configuration.
        classes: the C class labels, in the model's output order.
        val_targets: labels of the held-out clips, shape (n_val, C), in validation order.
        soundscapes: labelled soundscape windows scored after every validated epoch (reported, never used to
            choose), with ``infer.clip_weight``'s clip/frame blend as ``birdsed infer`` would score them.
        val_roles: what each validation loader holds, in order: ``"fold"`` | ``"soundscape"`` | ``"labelled"``.
        batch_keys: the training item keys, to name the files of a batch whose loss is not finite.
        labelled: the held-out labelled training soundscape windows (``labelled_auc``), scored like `soundscapes`.
        groups: class indices per reporting group (birds, insects, soundscape_only, ...): each soundscape figure is
            also given per group (``soundscape_auc_insects``).
        trained_classes: (C,) bool, the classes the loss sees (the others have no positive in the training data).
    """

    def __init__(
        self,
        cfg: Config,
        classes: list[str],
        val_targets: np.ndarray | None = None,
        soundscapes: SoundscapeLabels | None = None,
        val_roles: list[str] | None = None,
        batch_keys: list[str] | None = None,
        labelled: SoundscapeLabels | None = None,
        groups: dict[str, np.ndarray] | None = None,
        trained_classes: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.cfg, self.classes = cfg, classes
        self.labelled, self.groups = labelled, dict(groups or {})
        # the classes the loss sees (train.mask_absent_classes); None: all
        self.trained = None if trained_classes is None or trained_classes.all() else torch.from_numpy(trained_classes)
        self.model = build_model(cfg, len(classes))
        if cfg.model.init_from:
            init_from_checkpoint(self.model, cfg.model.init_from, classes)
        prepare_model(self.model, classes, cfg)
        self.distiller = Distiller(cfg, classes, int(self.model.backbone.num_features)) if distill_on(cfg) else None
        self.loss_fn = build_loss(cfg.train)
        self.val_targets, self.soundscapes = val_targets, soundscapes
        self.val_roles = list(val_roles or [])
        self.batch_keys = list(batch_keys or [])
        self._outputs: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {r: [] for r in VAL_ROLES}
        self.last_val: dict[str, float] = {}
        self.val_probs: dict[str, np.ndarray] = {}

    def forward(self, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(wave)

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # MixUp, SpecAugment and dropout draw from torch's global generator: seeding it by (seed, epoch) at the
        # epoch's first step (after the loaders drew their own seeds) makes an epoch after a resume the same as in
        # a run that never stopped
        if batch_idx == 0:
            torch.manual_seed(epoch_seed(self.cfg.train.seed, self.current_epoch))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        y, w, aug = batch["target"], batch["weight"], self.cfg.augment
        alone = None if aug.mixup_soundscapes else batch["soundscape"]  # never mixed, never a partner
        if "mel" in batch:  # loader-side front-end: masks were applied by albumentations
            x, y, w = mixup(batch["mel"], y, w, aug, alone=alone)
            out = self.model.forward_mel(x)
        else:
            wave, y, w = mixup(batch["wave"], y, w, aug, alone=alone)
            mel = spec_augment(self.model.frontend(wave), aug)  # (B, 1, M, T)
            out = self.model.forward_mel(mel, embedding=self.distiller is not None)
        extra = torch.zeros((), device=y.device)
        if self.distiller is not None:  # BirdNET on the same mixed, noised waveform the student saw
            extra, parts = self.distiller.loss(wave, out, distill_weights(self.cfg, self.current_epoch))
            for key, value in parts.items():
                self.log(key, value, on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)
        logits = out["clip_logits"]
        if self.trained is not None:  # classes without a positive anywhere are not trained towards zero
            keep = self.trained.to(logits.device)
            logits, y = logits[:, keep], y[:, keep]
        loss = self.loss_fn(logits, y, w) + extra
        if not torch.isfinite(loss):
            files = [self.batch_keys[i] for i in batch["index"].tolist()] if self.batch_keys else []
            raise TrainingError(
                f"non-finite training loss ({loss.item()}) at epoch {self.current_epoch}, global step "
                f"{self.global_step}, batch {batch_idx}; files in the batch: {files[:8]} (lower train.lr or check "
                "those files)"
            )
        # the epoch's mean (train_loss_epoch) is what the run's history records
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(y), sync_dist=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        out = self.model.forward_mel(batch["mel"]) if "mel" in batch else self.model(batch["wave"])
        role = self.val_roles[dataloader_idx]
        # the soundscape windows are scored as `birdsed infer` scores them with this config (its clip/frame blend)
        weight = self.cfg.infer.clip_weight if role == "soundscape" else 1.0
        self._outputs[role].append((batch["index"], window_scores(out, self.cfg.train.loss, weight)))

    def _collect(self, idx: str, n: int) -> np.ndarray:
        """Probabilities of all `n` items of loader role `idx`, gathered over processes, in item order: (n, C)."""
        if not self._outputs[idx]:
            return np.zeros((0, len(self.classes)))
        index = torch.cat([i for i, _ in self._outputs[idx]])
        probs = torch.cat([p for _, p in self._outputs[idx]])
        if self.trainer.world_size > 1:
            index = self.all_gather(index).flatten(0, 1)
            probs = self.all_gather(probs).flatten(0, 1)
        out = np.zeros((n, len(self.classes)))
        out[index.cpu().numpy()] = probs.float().cpu().numpy()
        self._outputs[idx] = []
        return out

    def on_validation_epoch_end(self) -> None:
        metrics: dict[str, float] = {}
        if self.val_targets is not None and len(self.val_targets):
            probs = self._collect("fold", len(self.val_targets))
            self.val_probs["fold"] = probs
            metrics["val_auc"] = macro_auc(self.val_targets > 0, probs)
        for role, labels in (("soundscape", self.soundscapes), ("labelled", self.labelled)):
            if labels is None:
                continue
            probs = self._collect(role, int(sum(labels.n_windows)))[labels.row_item]
            self.val_probs[role] = probs
            y = labels.solution[self.classes].to_numpy()
            metrics[f"{role}_auc"] = macro_auc(y, probs)
            for group, idx in self.groups.items():
                metrics[f"{role}_auc_{group}"] = macro_auc(y[:, idx], probs[:, idx])
        for key, value in metrics.items():
            self.log(key, float(value) if np.isfinite(value) else float("nan"), prog_bar=True, sync_dist=False)
        self.last_val = metrics

    def configure_optimizers(self):
        t = self.cfg.train
        opt_cls = torch.optim.RAdam if t.optimizer == "radam" else torch.optim.AdamW
        groups = param_groups(self.model, t)
        if self.distiller is not None:  # the projection head learns at the head's rate
            groups.append({"params": list(self.distiller.proj.parameters()), "lr": t.lr})
        opt = opt_cls(groups, lr=t.lr, weight_decay=t.weight_decay)
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, t.epochs))
        warmup, period, ratio = int(t.warmup_epochs * per_epoch), t.restart_epochs * per_epoch, t.min_lr / t.lr
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: lr_factor(step, total, warmup, t.scheduler, period, ratio)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


_HINTED: set[str] = set()  # hints already given by this process


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 autocast is emulated, slower."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def check_machine(cfg: Config) -> None:
    """Refuse, before anything starts, a backbone neither birdsed nor timm knows, and what this machine cannot do:
    an accelerator it lacks, more devices than it has (on a CPU each device is a training process), more loader
    workers than two a core.

    Raises:
        ConfigError: naming the key.
    """
    check_backbone_name(cfg.model.backbone)  # here, not when a config loads: timm is slow to import
    t = cfg.train
    gpus = torch.cuda.device_count()
    if t.accelerator in ("gpu", "cuda") and gpus == 0:
        raise ConfigError(f"train.accelerator: {t.accelerator} but torch sees no CUDA device here; use auto or cpu")
    if t.accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.accelerator: mps is not available on this machine; use auto or cpu")
    if t.accelerator == "tpu" and importlib.util.find_spec("torch_xla") is None:
        raise ConfigError("train.accelerator: tpu needs torch_xla, which is not installed; use auto or cpu")
    devices = parse_devices(t.devices)
    if devices not in ("auto", -1):
        count = len(devices) if isinstance(devices, list) else int(devices)
        if _on_cpu(cfg):
            check_processes("train.devices", count)
        elif gpus and (count > gpus if isinstance(devices, int) else max(devices) >= gpus):
            raise ConfigError(f"train.devices: {t.devices} but this machine has {gpus} CUDA device(s)")
    check_processes("data.num_workers", cfg.data.num_workers, per_core=2)


def _on_cpu(cfg: Config) -> bool:
    return cfg.train.accelerator == "cpu" or (cfg.train.accelerator == "auto" and not torch.cuda.is_available())


def trainer_kwargs(cfg: Config) -> dict:
    """Lightning Trainer arguments from ``train.*``.

    Precision ``auto`` is bf16-mixed on CUDA and 32 on the CPU (numbers that do not depend on the machine). An
    explicit ``bf16-mixed`` on a CPU without bf16 units (where autocast would be emulated and slower) trains in 32
    instead, with a warning; on a CPU with them, 32 says bf16 can be asked for. run.json records the precision.
    """
    t = cfg.train
    precision = t.precision
    if precision == "auto":
        precision = "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"
    elif precision == "bf16-mixed" and _on_cpu(cfg) and not cpu_has_bf16():
        log.warning("train.precision=bf16-mixed: this CPU has no bf16 units (AVX512-BF16/AMX); training in 32-bit")
        precision = "32-true"
    if precision in ("32", "32-true") and _on_cpu(cfg) and cpu_has_bf16() and "bf16" not in _HINTED:
        _HINTED.add("bf16")  # once per command, not once per pseudo round or study run
        log.info("32-bit; this CPU has bf16 units: train.precision=bf16-mixed trains faster (benchmarks/RESULTS.md)")
    return {
        "accelerator": t.accelerator,
        "devices": parse_devices(t.devices),
        "num_nodes": t.num_nodes,
        "strategy": t.strategy,
        "precision": precision,
        "max_epochs": t.epochs,
        "gradient_clip_val": t.grad_clip or None,
        "num_sanity_val_steps": 0,
        "check_val_every_n_epoch": t.val_every,
        "enable_progress_bar": show_bars(t.progress),
        "enable_model_summary": False,
        "log_every_n_steps": 5,
    }


@contextlib.contextmanager
def _signals_to_lightning() -> Iterator[None]:
    """SIGTERM left to Lightning while it trains (it stops at the end of the batch in hand and raises
    SIGTERMException), whatever handler the process had; the handler is restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def fit(
    cfg: Config,
    out: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    pseudo: PseudoChunks | None = None,
) -> dict:
    """Train one model as `cfg` describes into a self-describing run folder.

    Everything (config, data, cache, labelled soundscapes, model) is validated before the run folder is touched,
    so a failing ``--overwrite`` leaves the old run as it was.

    Args:
        cfg: the resolved configuration.
        out: run folder (default ``runs/<cfg.name>``). An existing one is an error unless `overwrite` (a birdsed run
            folder is replaced once everything is validated) or `resume` (training continues after the last
            finished epoch of ``checkpoints/last.ckpt``; without one it starts again in the same folder).
        pseudo: pseudo-labelled soundscape chunks to train with (``birdsed pseudo`` rounds).

    Returns:
        the run summary: ``{"run_dir", "best_epoch", "val_auc", "soundscape_auc", ...}``.
    """
    check_machine(cfg)
    run_dir = Path(out) if out else Path("runs") / cfg.name
    with run_lock(run_dir):
        return _fit(cfg, run_dir, overwrite, resume, pseudo)


def check_resumable(path: Path) -> None:
    """A resumable checkpoint is loaded as tensors and plain values only (``weights_only=True``), never unpickled
    whole: one holding anything else (an object, a pickle payload) is refused, a damaged one named.

    Raises:
        CheckpointError: naming the file.
    """
    try:
        load_plain(path)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: holds objects other than tensors and plain values; refused (loading it could run code). "
            "Start again with --overwrite"
        ) from None
    except Exception as err:  # a truncated or foreign file: torch raises RuntimeError, EOFError, ...
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: damaged, cannot resume from it ({reason}); start again with --overwrite"
        ) from None


def labelled_windows(cfg: Config, data: BirdCLEFData) -> LabelledWindows | None:
    """The folder's labelled training soundscapes (``data.soundscape_*``), with a line on how they are used."""
    found = read_if_present(cfg, data.root, data.classes)
    d = cfg.data
    if found is None:
        return None
    held = found.rows(d.soundscape_fold, True)
    rest = f"train at a share of {d.soundscape_share:g}" if d.soundscape_share > 0 else "do not train (share 0)"
    log.info(
        "labelled soundscapes: %d windows in %d files; fold %d (%d windows, grouped by %s) validates, the rest %s",
        len(found), len(found.files), d.soundscape_fold, len(held), d.val_group,
        rest,
    )  # fmt: skip
    return found


def trained_classes(
    cfg: Config, classes: list[str], dm: BirdDataModule, pseudo: PseudoChunks | None
) -> np.ndarray | None:
    """(C,) bool: the classes with a positive somewhere in the training data (``train.mask_absent_classes``)."""
    if not cfg.train.mask_absent_classes:
        return None
    seen = (dm.trained_targets() > 0).any(axis=0)
    if pseudo is not None:
        seen |= (pseudo.targets > 0).any(axis=0)
    if not seen.all():
        absent = [c for c, s in zip(classes, seen, strict=True) if not s]
        log.warning(
            "%d class(es) have no positive in the training data and are left out of the loss "
            "(train.mask_absent_classes): %s",
            len(absent), absent[:20],
        )  # fmt: skip
    return seen


def _fit(cfg: Config, run_dir: Path, overwrite: bool, resume: bool, pseudo: PseudoChunks | None) -> dict:
    """:func:`fit` under the run folder's lock."""
    check_run_dir(run_dir, overwrite, resume)
    if resume:
        check_resume_config(run_dir, cfg)
    finished = read_summary(run_dir) if resume else None
    if finished is not None and finished["epochs"] >= cfg.train.epochs:  # nothing to do: no data to load
        log.info("%s: the run had already finished its %d epochs", run_dir, finished["epochs"])
        return finished
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    data = load_data(cfg, min_rating=cfg.data.min_rating)
    sol_path = cfg.solution_path
    store = ensure_cache(cfg, data, soundscapes=sol_path is not None)
    soundscapes = None
    if sol_path:
        soundscapes = read_soundscape_labels(sol_path, data.root, data.classes, cfg.infer.window_seconds)
    labelled = labelled_windows(cfg, data)
    split = split_recordings(cfg, data, store)
    dm = BirdDataModule(cfg, data, store, split, soundscapes, pseudo, labelled)
    module = SEDModule(
        cfg,
        data.classes,
        split.targets[split.val_idx],
        soundscapes,
        dm.val_roles,
        dm.train_keys,
        labelled=dm.labelled_val,
        groups=class_groups(data.taxonomy, data.soundscape_only),
        trained_classes=trained_classes(cfg, data.classes, dm, pseudo),
    )
    check_forward(module.model, cfg, cfg.data.crop_seconds)
    held_out = data.train.iloc[split.val_idx][["filename", "primary_label"]].reset_index(drop=True)
    held_out["fold"] = split.folds[split.val_idx] if cfg.data.fold >= 0 else -1
    facts = RunFacts(
        data_root=str(data.root),
        classes=data.classes,
        train_recordings=len(split.train_idx),
        items_per_epoch=dm.items_per_epoch,
        held_out=held_out,
        class_prior=(split.targets[split.train_idx] > 0).mean(axis=0).round(6).tolist(),
    )
    run_dir = open_run_dir(run_dir, overwrite, resume, kind="train")
    recorder = RunRecorder(run_dir, cfg, facts)
    last = recorder.ckpt_path
    if resume and not last.is_file():
        log.warning("%s: no finished epoch to resume from; training starts at epoch 0", run_dir)
    loggers: list = [L.pytorch.loggers.CSVLogger(str(run_dir), name="logs")]  # a version_N per (re)start
    tr, mlflow_run = cfg.tracking, ""
    if tr.mlflow_uri and rank_zero_only.rank == 0:  # one MLflow run per run folder (made once), continued on resume
        mlflow_run = tracking.start_run(tr.mlflow_uri, tr.experiment, run_dir, cfg.name, "train", tr.parent_run)
        loggers.append(tracking.lightning_logger(tr.mlflow_uri, tr.experiment, mlflow_run))
    kwargs = trainer_kwargs(cfg)
    if not dm.val_roles:
        kwargs["limit_val_batches"] = 0
    t = cfg.train
    averaging = averaging_callback(t.averaging, t.ema_decay, t.swa_epochs, t.epochs)
    callbacks: list[L.Callback] = [recorder] if averaging is None else [averaging, recorder]
    trainer = L.Trainer(logger=loggers, callbacks=callbacks, enable_checkpointing=False, **kwargs)
    ckpt = str(last) if resume and last.is_file() else None
    if ckpt:
        check_resumable(last)
    with warnings.catch_warnings(), _signals_to_lightning():
        # Lightning's own use of a torch API torch deprecated: nothing a user can act on
        warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)
        try:
            # tensors and plain values only: a run folder may come from anywhere, and unpickling can run code
            trainer.fit(module, datamodule=dm, ckpt_path=ckpt, weights_only=True)
        except SIGTERMException:  # Lightning stops after the batch in hand; every finished epoch is on disk
            done = len(recorder.history)
            raise Stopped(f"{run_dir}: stopped by SIGTERM at epoch {done} of {t.epochs}; --resume continues") from None
        except SystemExit:
            if trainer.interrupted:  # Lightning turns Ctrl-C into exit(1): a user's Ctrl-C is 130 here
                raise KeyboardInterrupt from None
            raise
    if mlflow_run and trainer.is_global_zero:
        tracking.log_run_files(tr.mlflow_uri, mlflow_run, run_dir)
    return recorder.summary()
