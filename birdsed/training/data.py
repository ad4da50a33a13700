"""Training data: the held-out split of the recordings and the Lightning data module that feeds ``fit``.

:func:`split_recordings` holds out recordings (a fold, or the last seconds of each with ``data.fold=-1``);
:class:`BirdDataModule` makes the epoch's training items (clips, pseudo chunks mixed in or added) and the
validation loaders (held-out clips, labelled soundscape windows).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader

from birdsed.config import Config
from birdsed.data.augment import loader_spec_transform
from birdsed.data.cache import WaveStore
from birdsed.data.datasets import (
    ClipDataset,
    EpochSampler,
    LabelledWindowDataset,
    PseudoChunks,
    PseudoExtraDataset,
    PseudoMixDataset,
    SeededItems,
    WindowDataset,
    oversample,
    sampling_weights,
)
from birdsed.data.folder import BirdCLEFData, DataError, SoundscapeLabels, assign_folds
from birdsed.data.prepare import background_sources
from birdsed.data.soundscapes import LabelledWindows
from birdsed.models.frontend import MelFrontend

log = logging.getLogger(__name__)


@dataclass
class Split:
    """Which recordings train and which are held out, and where in each the crops may come from.

    Attributes:
        targets: (n_recordings, C) label matrix of train.csv's rows.
        folds: fold of each recording.
        train_idx / val_idx: rows that train / are held out (a fold, or recording tails).
        spans / val_spans: per row, the sample range training crops / the held-out clip come from (None: all).
        order: the training rows in sampling order, rare classes repeated (``train.min_class_samples``).
    """

    targets: np.ndarray
    folds: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray
    spans: list[tuple[int, int] | None]
    val_spans: list[tuple[int, int] | None]
    order: np.ndarray


def split_recordings(cfg: Config, data: BirdCLEFData, store: WaveStore) -> Split:
    """The train/validation split of ``data.train`` (``data.fold``, or ``data.holdout_seconds`` tails).

    Raises:
        DataError: no usable (cached) training recording.
    """
    train = data.train
    cached = train["key"].isin(store.files).to_numpy()
    if not cached.all():
        log.warning("%d training recording(s) are not in the cache (unusable) and are left out", (~cached).sum())
    folds = assign_folds(train["primary_label"], cfg.data.n_folds, cfg.data.seed)
    keys = train["key"].to_numpy()
    spans: list[tuple[int, int] | None] = [None] * len(train)
    val_spans: list[tuple[int, int] | None] = [None] * len(train)
    if cfg.data.fold >= 0:
        is_val = folds == cfg.data.fold
        train_idx, val_idx = np.flatnonzero(~is_val & cached), np.flatnonzero(is_val & cached)
    else:
        train_idx = np.flatnonzero(cached)
        hold = cfg.seconds_to_samples(cfg.data.holdout_seconds)
        val = []
        for i in train_idx if hold else []:
            n = store.num_samples(keys[i])
            if n >= 2 * hold:  # the tail is validation, training crops stay before it
                spans[i], val_spans[i] = (0, n - hold), (n - hold, n)
                val.append(i)
        val_idx = np.asarray(val, dtype=np.int64)
    if len(train_idx) == 0:
        raise DataError(f"{data.root}: no usable training recording")
    labels = train["primary_label"].to_numpy()[train_idx]
    order = train_idx[oversample(labels, cfg.train.min_class_samples)]
    targets = data.targets(cfg.data.secondary_label_value)
    return Split(targets, folds, train_idx, val_idx, spans, val_spans, order)


class BirdDataModule(L.LightningDataModule):
    """Training crops (weighted sampling, oversampling), the held-out clips and the labelled soundscapes of a
    :class:`Split`; the datasets are built in :meth:`setup`."""

    def __init__(
        self,
        cfg: Config,
        data: BirdCLEFData,
        store: WaveStore,
        split: Split,
        soundscapes: SoundscapeLabels | None,
        pseudo: PseudoChunks | None = None,
        labelled: LabelledWindows | None = None,
    ):
        super().__init__()
        self.cfg, self.data, self.store, self.split = cfg, data, store, split
        self.soundscapes, self.pseudo = soundscapes, pseudo
        if pseudo is not None and cfg.augment.spec_on != "device":
            raise DataError("pseudo-labelled training needs augment.spec_on=device")
        d = cfg.data
        # the labelled training soundscapes: fold `soundscape_fold` validates, the others train (at a share > 0)
        self.labelled, self.labelled_val, self.labelled_rows = labelled, None, np.zeros(0, dtype=np.int64)
        if labelled is not None:
            self.labelled_val = labelled.as_solution(labelled.rows(d.soundscape_fold, True), data.classes)
            if d.soundscape_share > 0:
                self.labelled_rows = labelled.rows(d.soundscape_fold, False)
        # what each validation loader holds, in order: held-out clips, the test soundscapes' labelled windows, the
        # held-out labelled training windows
        self.val_roles = (
            (["fold"] if len(split.val_idx) else [])
            + (["soundscape"] if soundscapes else [])
            + (["labelled"] if self.labelled_val else [])
        )
        keys = data.train["key"].to_numpy()
        self.train_keys = list(keys[split.order])  # item → file, to name the files of a failing batch
        if len(self.labelled_rows):
            table = labelled.table.iloc[self.labelled_rows]
            self.train_keys += [f"{k}@{s:g}s" for k, s in zip(table["key"], table["start"], strict=True)]
        cached = set(store.files)  # the background files the cache holds (an unreadable one is left out)
        self.background_keys = [k for k, _ in background_sources(cfg, data) if k in cached]
        self.unlabelled = self._unlabelled_windows() if cfg.train.distill_unlabelled else ([], [])
        self.train_keys += [f"{k}@{s / cfg.audio.sample_rate:g}s" for k, s in zip(*self.unlabelled, strict=True)]
        if pseudo is not None and cfg.pseudo.mode == "extra":
            self.train_keys += [f"{k}@{s}" for k, s in zip(pseudo.keys, pseudo.starts, strict=True)]
        self.train_set: torch.utils.data.Dataset | None = None

    def trained_targets(self) -> np.ndarray:
        """Every hard target the model trains on (focal recordings, labelled windows): (n, C)."""
        parts = [self.split.targets[self.split.train_idx]]
        if len(self.labelled_rows):
            parts.append(self.labelled.targets[self.labelled_rows])
        return np.concatenate(parts)

    def setup(self, stage: str) -> None:
        if self.train_set is not None:
            return
        cfg, sp = self.cfg, self.split
        keys = self.data.train["key"].to_numpy()
        spec_fn = LoaderSpectrogram(cfg) if cfg.augment.spec_on == "loader" else None
        backgrounds = self.background_keys
        labels = self.data.train["primary_label"].to_numpy()
        self.sample_weights = sampling_weights(labels[sp.order], cfg.train.sample_weight_power)
        self.train_set = ClipDataset(
            self.store,
            keys[sp.order],
            sp.targets[sp.order],
            cfg,
            True,
            None,
            backgrounds,
            spec_fn,
            [sp.spans[i] for i in sp.order],
        )
        if self.pseudo is not None and self.cfg.pseudo.mode == "mixup":  # pseudo chunks go into the focal crops only
            ps = self.cfg.pseudo
            self.train_set = PseudoMixDataset(self.train_set, self.pseudo, ps.mix_weight, ps.mix_targets, ps.mass_cap)
        if len(self.labelled_rows):
            self._add_labelled(backgrounds, spec_fn)
        if cfg.train.distill_unlabelled:
            self._add_unlabelled(backgrounds)
        if self.pseudo is not None and self.cfg.pseudo.mode == "extra":
            self._add_pseudo_extra(self.pseudo)
        val_spec = LoaderSpectrogram(cfg, augment=False) if spec_fn is not None else None
        self.val_set = ClipDataset(
            self.store,
            keys[sp.val_idx],
            sp.targets[sp.val_idx],
            cfg,
            False,
            spec_fn=val_spec,
            spans=[sp.val_spans[i] for i in sp.val_idx],
        )

    def _add_labelled(self, backgrounds: list[str], spec_fn) -> None:
        """Labelled soundscape windows beside the focal crops: ``data.soundscape_share`` of the draws, uniform over
        the windows."""
        table = self.labelled.table.iloc[self.labelled_rows]
        window = self.cfg.seconds_to_samples(self.labelled.window)
        starts = [self.cfg.seconds_to_samples(s) for s in table["start"]]
        targets = self.labelled.targets[self.labelled_rows]
        windows = LabelledWindowDataset(
            self.store, table["key"].tolist(), np.array(starts), window, targets, self.cfg, len(self.train_set),
            backgrounds, spec_fn,
        )  # fmt: skip
        self._append(windows, self.cfg.data.soundscape_share)

    def _unlabelled_windows(self) -> tuple[list[str], list[int]]:
        """Cache key and start sample of every whole window of the unlabelled soundscapes (the background files)."""
        window = self.cfg.seconds_to_samples(self.cfg.infer.window_seconds)
        keys, starts = [], []
        for key in self.background_keys:
            n = self.store.num_samples(key) // window
            keys += [key] * n
            starts += [i * window for i in range(n)]
        if not keys:
            raise DataError(f"train.distill_unlabelled: {self.cfg.augment.background_dir} holds no whole window")
        return keys, starts

    def _add_unlabelled(self, backgrounds: list[str]) -> None:
        """The unlabelled windows as ``train.distill_unlabelled`` of the draws, at loss weight 0: the teacher labels
        them, the classification loss never sees them."""
        keys, starts = self.unlabelled
        window = self.cfg.seconds_to_samples(self.cfg.infer.window_seconds)
        targets = np.zeros((len(keys), len(self.data.classes)), dtype=np.float32)
        windows = LabelledWindowDataset(
            self.store, keys, np.array(starts), window, targets, self.cfg, len(self.train_set), backgrounds, None, 0.0
        )
        self._append(windows, self.cfg.train.distill_unlabelled)
        log.info("distillation: %d unlabelled soundscape windows, %.0f%% of the draws", len(keys),
                 100 * self.cfg.train.distill_unlabelled)  # fmt: skip

    def _add_pseudo_extra(self, pseudo: PseudoChunks) -> None:
        """Pseudo-labelled soundscape chunks as added training items (``pseudo.mode=extra``)."""
        ps = self.cfg.pseudo
        extra = PseudoExtraDataset(pseudo, self.cfg.crop_samples, ps.loss_weight, offset=len(self.train_set))
        self._append(extra, ps.extra_fraction, pseudo.weights)

    def _append(self, dataset: torch.utils.data.Dataset, share: float, weights: np.ndarray | None = None) -> None:
        """Add `dataset` to the training set as `share` of the draws, spread by `weights` ((n,), default uniform);
        the items already there keep their relative weights in the rest."""
        before = self.sample_weights / self.sample_weights.sum() * (1 - share)
        added = np.full(len(dataset), share / len(dataset)) if weights is None else weights / weights.sum() * share
        self.train_set = ConcatDataset([self.train_set, dataset])
        self.sample_weights = np.concatenate([before, added])

    def _loader(self, dataset, **kw) -> DataLoader:
        n = self.cfg.data.num_workers
        return DataLoader(dataset, batch_size=self.cfg.data.batch_size, num_workers=n, persistent_workers=n > 0, **kw)

    @property
    def items_per_epoch(self) -> int:
        """Training items drawn per epoch: ``train.samples_per_epoch``, or one pass over the training items."""
        return self.cfg.train.samples_per_epoch or len(self.train_keys)

    def train_dataloader(self) -> DataLoader:
        n = self.items_per_epoch
        # each epoch's draws and each item's augmentation follow from (seed, epoch) alone, so a resumed run sees
        # the same data as one that was never stopped
        sampler = EpochSampler(self.sample_weights, n, self.cfg.train.seed)
        return self._loader(SeededItems(self.train_set), sampler=sampler, drop_last=n > self.cfg.data.batch_size)

    def val_dataloader(self) -> list[DataLoader]:
        loaders = [self._loader(self.val_set)] if "fold" in self.val_roles else []
        if self.soundscapes is not None:
            windows = WindowDataset(
                self.store,
                self.soundscapes.keys,
                self.cfg.seconds_to_samples(self.cfg.infer.window_seconds),
                self.soundscapes.n_windows,
            )
            loaders.append(self._loader(windows))
        if self.labelled_val is not None:
            lv = self.labelled_val
            window = self.cfg.seconds_to_samples(self.labelled.window)
            loaders.append(self._loader(WindowDataset(self.store, lv.keys, window, lv.n_windows)))
        return loaders


class LoaderSpectrogram:
    """Loader-side front-end (``augment.spec_on=loader``): wave (N,) → log-mel (1, M, T), then albumentations."""

    def __init__(self, cfg: Config, augment: bool = True) -> None:
        self.frontend = MelFrontend.from_config(cfg.audio)
        self.transform = loader_spec_transform(cfg.augment) if augment else None

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            mel = self.frontend(torch.from_numpy(wave)[None])[0].numpy()  # (1, M, T)
        if self.transform is not None:
            mel = self.transform(image=mel[0])["image"][None]
        return np.ascontiguousarray(mel, dtype=np.float32)
