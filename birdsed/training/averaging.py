"""Weight averaging during training (``train.averaging``): an exponential moving average of the weights, or the
mean of the weights of the last epochs, on Lightning's own :class:`~lightning.pytorch.callbacks.WeightAveraging`.

The averaged weights are what a run validates, chooses its best epoch by and saves (``best.pt``/``last.pt``);
the optimiser keeps stepping the raw weights, so averaging never changes the training trajectory.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn


class Averaging(WeightAveraging):
    """Keeps an average of the module's weights (buffers included) over optimiser steps.

    ``ema``: ``avg ← decay·avg + (1-decay)·w`` after every step from the first. ``swa``: the plain mean of the
    weights after every step from epoch `start_epoch` on. Validation swaps the average in only once it holds at least
    one step, so the epochs before an ``swa`` window are validated (and may be chosen) with their raw weights.
    """

    def __init__(self, kind: str, decay: float = 0.97, start_epoch: int = 0) -> None:
        if kind not in ("ema", "swa"):
            raise ValueError(f"averaging kind must be ema or swa, got {kind!r}")
        kwargs: dict[str, Any] = {"multi_avg_fn": get_ema_multi_avg_fn(decay)} if kind == "ema" else {}
        super().__init__(use_buffers=True, **kwargs)
        self.kind, self.start_epoch = kind, start_epoch if kind == "swa" else 0
        self._epoch = 0
        self._swapped = False

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and self._epoch >= self.start_epoch

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._epoch = trainer.current_epoch
        super().on_train_batch_end(trainer, pl_module, *args)

    @property
    def steps(self) -> int:
        """Optimiser steps held in the average."""
        return int(self._average_model.n_averaged) if self._average_model is not None else 0

    def averaged(self) -> torch.nn.Module | None:
        """The averaged LightningModule (its ``.model`` is what a run saves), or None before it holds a step."""
        return self._average_model.module if self.steps else None

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._swapped = self.steps > 0
        if self._swapped:
            self._swap_models(pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._swapped:
            self._swap_models(pl_module)
            self._swapped = False

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.steps:
            self._copy_average_to_current(pl_module)


def averaging_callback(kind: str, decay: float, swa_epochs: int, epochs: int) -> Averaging | None:
    """The callback for ``train.averaging`` (None for ``none``); ``swa`` averages the last `swa_epochs` of `epochs`
    epochs (all of them when the run is shorter)."""
    if kind == "none":
        return None
    return Averaging(kind, decay, max(0, epochs - swa_epochs))


def kept_model(trainer: L.Trainer, pl_module: L.LightningModule) -> torch.nn.Module:
    """The SED model a run validates and saves: the averaged one when ``train.averaging`` holds a step, else the
    module's own."""
    for cb in trainer.callbacks:
        if isinstance(cb, Averaging) and cb.averaged() is not None:
            return cb.averaged().model
    return pl_module.model
