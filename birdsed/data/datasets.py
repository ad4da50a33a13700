"""torch Datasets over the waveform cache, and the sampling weights of the training recipe."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from birdsed.config import AugmentConfig, Config
from birdsed.data.augment import add_background, random_gain, time_shift
from birdsed.data.cache import WaveStore

_ITEM = threading.local()  # the seed sequence of the item being made (set by SeededItems)


def _rng() -> np.random.Generator:
    """A generator for one random decision of the current item: from the item's own seed when the sampler gave
    one (:class:`SeededItems`), else from torch's generator (seeded per DataLoader worker and epoch)."""
    seq = getattr(_ITEM, "seq", None)
    if seq is not None:
        return np.random.default_rng(seq.spawn(1)[0])
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for epoch `epoch` of a run seeded by `seed`."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


class EpochSampler(Sampler[tuple[int, int]]):
    """Weighted sampling with replacement, reproducible per epoch: yields (item index, item seed) pairs.

    Epoch e's draws depend only on (seed, e) — Lightning calls :meth:`set_epoch` — so a run resumed at epoch e draws
    what an uninterrupted run would have drawn, and each item's augmentation follows from its own seed wherever it
    is made (any DataLoader worker).
    """

    def __init__(self, weights: np.ndarray, num_samples: int, seed: int) -> None:
        p = np.asarray(weights, dtype=np.float64)
        self.p = p / p.sum()
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        idx = rng.choice(len(self.p), size=self.num_samples, replace=True, p=self.p)
        seeds = rng.integers(0, 2**63 - 1, size=self.num_samples)
        return iter(zip(idx.tolist(), seeds.tolist(), strict=True))


class SeededItems(Dataset):
    """Wraps a dataset so that ``ds[(i, seed)]`` makes item i with every random decision drawn from `seed`."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        i, seed = key
        _ITEM.seq = np.random.SeedSequence(seed)
        try:
            return self.base[i]
        finally:
            _ITEM.seq = None


class ClipDataset(Dataset):
    """Crops of cached recordings with their targets and sample weights.

    Items: ``{"wave": (N,) float32 | "mel": (1, M, T) float32, "target": (C,), "weight": (), "index": ()}``.

    Args:
        store: the waveform cache.
        keys: cache key per item.
        targets: (n_items, C) float32 in [0, 1].
        cfg: crop and augmentation settings.
        train: random crops and waveform augmentation; otherwise the deterministic ``first`` crop.
        weights: (n_items,) per-sample loss weights (default 1).
        backgrounds: cache keys of background-noise recordings (``augment.background_*``).
        spec_fn: loader-side front-end (``augment.spec_on=loader``): (N,) wave → (1, M, T) spectrogram.
        spans: per item, the (start, stop) samples crops may come from (default: the whole file).
    """

    def __init__(
        self,
        store: WaveStore,
        keys: Sequence[str],
        targets: np.ndarray,
        cfg: Config,
        train: bool,
        weights: np.ndarray | None = None,
        backgrounds: Sequence[str] = (),
        spec_fn: Callable[[np.ndarray], np.ndarray] | None = None,
        spans: Sequence[tuple[int, int] | None] | None = None,
    ) -> None:
        if len(keys) != len(targets):
            raise ValueError(f"{len(keys)} keys but {len(targets)} target rows")
        self.store, self.keys, self.targets, self.cfg, self.train = store, list(keys), targets, cfg, train
        self.weights = np.ones(len(keys), dtype=np.float32) if weights is None else weights.astype(np.float32)
        self.backgrounds = list(backgrounds)
        self.spec_fn = spec_fn
        self.spans = list(spans) if spans is not None else [None] * len(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        rng = _rng()
        mode = cfg.data.crop_mode if self.train else ("full" if cfg.data.crop_mode == "full" else "first")
        wave = self.store.crop(
            self.keys[i], cfg.crop_samples, mode, rng, cfg.first_samples, cfg.data.pad_mode, self.spans[i]
        )
        if self.train:
            wave = augment_wave(wave, rng, cfg.augment, self.store, self.backgrounds)
        return make_item(wave, self.targets[i], self.weights[i], i, False, self.spec_fn)


def augment_wave(
    wave: np.ndarray, rng: np.random.Generator, aug: AugmentConfig, store: WaveStore, backgrounds: Sequence[str]
) -> np.ndarray:
    """The loader's waveform augmentation of a training crop (N,): random gain, circular time shift, background
    noise from `backgrounds` (cache keys) — the same for focal crops and labelled soundscape windows."""
    wave = random_gain(wave, rng, aug.gain_db)
    if rng.random() < aug.time_shift_prob:
        wave = time_shift(wave, rng)
    if backgrounds and rng.random() < aug.background_prob:
        key = backgrounds[int(rng.integers(0, len(backgrounds)))]
        noise = store.crop(key, len(wave), "random", rng, pad_mode="loop")
        wave = add_background(wave, noise, float(rng.uniform(*aug.background_snr_db)))
    return wave


def make_item(
    wave: np.ndarray,
    target: np.ndarray,
    weight: float,
    index: int,
    soundscape: bool,
    spec_fn: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, torch.Tensor]:
    """A training item: ``wave`` (N,) (or ``mel`` (1, M, T) with `spec_fn`), ``target`` (C,), ``weight`` (),
    ``index`` () and ``soundscape`` () (a labelled soundscape window: ``augment.mixup_soundscapes`` reads it)."""
    item = {
        "target": torch.from_numpy(np.asarray(target, dtype=np.float32)),
        "weight": torch.tensor(np.float32(weight)),
        "index": torch.tensor(index),
        "soundscape": torch.tensor(soundscape),
    }
    if spec_fn is not None:
        item["mel"] = torch.from_numpy(spec_fn(wave))
    else:
        item["wave"] = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    return item


class LabelledWindowDataset(Dataset):
    """Labelled soundscape windows as training items (like :class:`ClipDataset`'s, ``soundscape`` True).

    A crop shorter than the window is drawn at random inside it; a longer one is centred on it (the soundscape's
    own audio around it, zero-padded at the file's edges). The same augmentation as the focal crops follows.

    Args:
        store: the waveform cache.
        keys: cache key per window; starts: (n,) first sample of each window; window: its length in samples.
        targets: (n, C) 0/1.
        cfg: crop and augmentation settings.
        offset: the index of the first item in the training set (to name the files of a failing batch).
        weight: every item's loss weight (0: unlabelled windows that only distillation reads).
    """

    def __init__(
        self,
        store: WaveStore,
        keys: Sequence[str],
        starts: np.ndarray,
        window: int,
        targets: np.ndarray,
        cfg: Config,
        offset: int,
        backgrounds: Sequence[str] = (),
        spec_fn: Callable[[np.ndarray], np.ndarray] | None = None,
        weight: float = 1.0,
    ) -> None:
        self.store, self.keys, self.starts, self.window = store, list(keys), np.asarray(starts, np.int64), window
        self.targets, self.cfg, self.offset = targets.astype(np.float32), cfg, offset
        self.backgrounds, self.spec_fn, self.weight = list(backgrounds), spec_fn, weight

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, j: int) -> dict[str, torch.Tensor]:
        rng = _rng()
        length = self.cfg.crop_samples
        start = int(self.starts[j])
        if length <= self.window:
            start += int(rng.integers(0, self.window - length + 1))
        else:
            start += self.window // 2 - length // 2
        wave = read_padded(self.store, self.keys[j], start, length)
        wave = augment_wave(wave, rng, self.cfg.augment, self.store, self.backgrounds)
        return make_item(wave, self.targets[j], self.weight, self.offset + j, True, self.spec_fn)


class WindowDataset(Dataset):
    """Consecutive fixed-length windows of cached soundscapes (validation on labelled soundscapes).

    Items: ``{"wave": (window,) float32, "index": ()}`` in order soundscape by soundscape; the last window of a
    file is zero-padded.
    """

    def __init__(self, store: WaveStore, keys: Sequence[str], window: int, n_windows: Sequence[int]) -> None:
        self.store, self.window = store, window
        self.items = [(k, w) for k, n in zip(keys, n_windows, strict=True) for w in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        key, w = self.items[i]
        wave = self.store.read(key, w * self.window, self.window)
        if len(wave) < self.window:
            wave = np.pad(wave, (0, self.window - len(wave)))
        return {"wave": torch.from_numpy(wave), "index": torch.tensor(i)}


def read_padded(store: WaveStore, key: str, start: int, length: int) -> np.ndarray:
    """Samples [start, start + length) of a cached file, exactly `length` long: zeros before its start and after
    its end."""
    lo = max(start, 0)
    out = store.read(key, lo, length - (lo - start))
    return np.pad(out, (lo - start, length - (lo - start) - len(out)))


def sampling_weights(labels: Sequence[str], power: float) -> np.ndarray:
    """Per-recording sampling weight (count/total)^power of its primary label (power -0.5: rare classes up).

    Returns:
        (n,) float64 weights; power 0 gives ones.
    """
    labels = pd.Series(list(labels))
    freq = labels.map(labels.value_counts(normalize=True)).to_numpy(dtype=np.float64)
    return freq**power


def oversample(labels: Sequence[str], min_count: int) -> np.ndarray:
    """Indices of every recording, with recordings of classes below `min_count` repeated until they reach it."""
    labels = pd.Series(list(labels))
    out = [np.arange(len(labels))]
    if min_count > 0:
        for _label, idx in labels.groupby(labels).groups.items():
            idx = np.asarray(idx)
            short = min_count - len(idx)
            if short > 0:
                out.append(np.resize(idx, short))
    return np.concatenate(out)


class PseudoChunks:
    """Pseudo-labelled 5-s soundscape chunks: cache key, start sample, soft targets (C,), sampling weight."""

    def __init__(
        self,
        store: WaveStore,
        keys: Sequence[str],
        starts: np.ndarray,
        targets: np.ndarray,
        weights: np.ndarray,
        window: int,
    ) -> None:
        self.store, self.keys, self.starts = store, list(keys), np.asarray(starts, dtype=np.int64)
        self.window = window  # chunk length in samples
        self.targets = targets.astype(np.float32)
        self.weights = np.asarray(weights, dtype=np.float64)
        self._p = self.weights / self.weights.sum()

    def __len__(self) -> int:
        return len(self.keys)

    def wave(self, j: int, length: int) -> np.ndarray:
        """Samples of chunk `j`, exactly `length` long (a longer crop is centred on the chunk, zero-padded)."""
        return read_padded(self.store, self.keys[j], int(self.starts[j]) + self.window // 2 - length // 2, length)

    def draw(self, rng: np.random.Generator) -> int:
        """A chunk index, drawn by the chunks' sampling weights."""
        return int(rng.choice(len(self.keys), p=self._p))


class PseudoMixDataset(Dataset):
    """1st place BirdCLEF 2025: every labelled crop is mixed with a pseudo-labelled soundscape chunk.

    wave = (1 - w) * crop + w * chunk; targets mixed the same way (``weighted``) or by ``max``. With `mass_cap` > 0
    (``pseudo.mass_cap``, 1st place BirdCLEF+ 2026) the chunk's label mass in the mixed target is at most
    `mass_cap` × the crop's: its probabilities are scaled down where they would weigh more.
    """

    def __init__(
        self, base: ClipDataset, pseudo: PseudoChunks, weight: float, targets_rule: str, mass_cap: float = 0.0
    ) -> None:
        self.base, self.pseudo, self.weight, self.rule = base, pseudo, weight, targets_rule
        self.mass_cap = mass_cap

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = self.base[i]
        if "wave" not in item:
            raise ValueError("pseudo.mode=mixup needs augment.spec_on=device")
        rng = _rng()
        j = self.pseudo.draw(rng)
        w = self.weight
        chunk = self.pseudo.wave(j, len(item["wave"]))
        item["wave"] = (1 - w) * item["wave"] + w * torch.from_numpy(chunk)
        p = torch.from_numpy(self.pseudo.targets[j])
        if self.mass_cap > 0:  # the crop's and the chunk's shares of the mixed target
            crop_share, chunk_share = (1.0, 1.0) if self.rule == "max" else (1 - w, w)
            ours, theirs = crop_share * item["target"].sum(), chunk_share * p.sum()
            if theirs > self.mass_cap * ours:
                p = p * (self.mass_cap * ours / theirs)
        item["target"] = torch.maximum(item["target"], p) if self.rule == "max" else (1 - w) * item["target"] + w * p
        return item


class PseudoExtraDataset(Dataset):
    """Pseudo chunks as extra training samples with soft targets and a loss weight (items like ClipDataset's)."""

    def __init__(self, pseudo: PseudoChunks, length: int, loss_weight: float, offset: int) -> None:
        self.pseudo, self.length, self.loss_weight, self.offset = pseudo, length, loss_weight, offset

    def __len__(self) -> int:
        return len(self.pseudo)

    def __getitem__(self, j: int) -> dict[str, torch.Tensor]:
        wave = self.pseudo.wave(j, self.length)
        return make_item(wave, self.pseudo.targets[j], self.loss_weight, self.offset + j, False)
