"""One typed configuration schema for every birdsed command.

Sections are dataclasses loaded through OmegaConf from ``configs/*.yaml`` and overridden on the command line with
dotted keys (``train.lr=3e-4``). Unknown keys and ill-typed values raise :class:`ConfigError` naming the key.
Derived values (samples per crop, frames per window) are computed here and nowhere else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


@dataclass
class AudioConfig:
    """Decoding and the log-mel front-end (the front-end lives inside the model)."""

    sample_rate: int = 32000
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    fmin: float = 40.0
    fmax: float = 15000.0
    power: float = 2.0
    top_db: float | None = 80.0
    # per-spectrogram normalisation after dB: none | standard (zero mean, unit std) | minmax (to [0, 1])
    normalize: str = "standard"


@dataclass
class DataConfig:
    """Where the BirdCLEF-format folder is, how it is cached, cropped and split."""

    root: str = "data/synth"
    # waveform cache; empty means cache/<name of root>-<sample_rate>hz
    cache_dir: str = ""
    # first_random: random crop inside the first `first_seconds` (2nd place 2025: 7 s); random; first; center; full
    crop_mode: str = "first_random"
    crop_seconds: float = 5.0
    first_seconds: float = 7.0
    # clips shorter than the crop: loop (tile the clip) or zero (pad with silence at the end)
    pad_mode: str = "loop"
    n_folds: int = 5
    fold: int = 0
    seed: int = 42
    # target value given to secondary labels (0 ignores them)
    secondary_label_value: float = 0.5
    # recordings rated below this are dropped (0 keeps all; unrated recordings are kept)
    min_rating: float = 0.0
    batch_size: int = 32
    num_workers: int = 2
    # workers for `birdsed prepare` (0 means all cores)
    prepare_workers: int = 0


@dataclass
class Config:
    """The whole configuration. Sections are added as pipeline steps land."""

    name: str = "run"
    audio: AudioConfig = field(default_factory=AudioConfig)
    data: DataConfig = field(default_factory=DataConfig)

    # ---- derived values: the one place they are computed -------------------------------------------------------
    def seconds_to_samples(self, seconds: float) -> int:
        """Number of samples in `seconds` of audio at the configured rate."""
        return round(seconds * self.audio.sample_rate)

    @property
    def crop_samples(self) -> int:
        """Samples in one training crop."""
        return self.seconds_to_samples(self.data.crop_seconds)

    @property
    def first_samples(self) -> int:
        """Samples in the leading region that `first_random` crops are drawn from."""
        return self.seconds_to_samples(self.data.first_seconds)

    def frames(self, n_samples: int) -> int:
        """Spectrogram frames for `n_samples` of audio (centred STFT)."""
        return 1 + n_samples // self.audio.hop_length

    @property
    def frames_per_crop(self) -> int:
        """Spectrogram frames of one training crop."""
        return self.frames(self.crop_samples)

    @property
    def cache_path(self) -> Path:
        """Folder of the waveform cache for `data.root` at the configured sample rate."""
        if self.data.cache_dir:
            return Path(self.data.cache_dir)
        return Path("cache") / f"{Path(self.data.root).resolve().name}-{self.audio.sample_rate}hz"


CHOICES: dict[str, tuple[str, ...]] = {
    "audio.normalize": ("none", "standard", "minmax"),
    "data.crop_mode": ("first_random", "random", "first", "center", "full"),
    "data.pad_mode": ("loop", "zero"),
}

POSITIVE: tuple[str, ...] = (
    "audio.sample_rate",
    "audio.n_fft",
    "audio.hop_length",
    "audio.n_mels",
    "audio.power",
    "data.crop_seconds",
    "data.first_seconds",
    "data.n_folds",
    "data.batch_size",
)


def _get(cfg: Config, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def validate(cfg: Config) -> None:
    """Check values that types alone cannot; raise ConfigError naming the key."""
    for key, choices in CHOICES.items():
        value = _get(cfg, key)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")
    for key in POSITIVE:
        value = _get(cfg, key)
        if not value > 0:
            raise ConfigError(f"{key}: must be > 0, got {value!r}")
    a, d = cfg.audio, cfg.data
    if not 0 <= a.fmin < a.fmax <= a.sample_rate / 2:
        raise ConfigError(
            f"audio.fmin/audio.fmax: need 0 <= fmin < fmax <= sample_rate/2 = {a.sample_rate / 2:g}, "
            f"got fmin={a.fmin:g}, fmax={a.fmax:g}"
        )
    if a.hop_length > a.n_fft:
        raise ConfigError(f"audio.hop_length: {a.hop_length} is larger than audio.n_fft={a.n_fft}")
    if a.top_db is not None and not a.top_db > 0:
        raise ConfigError(f"audio.top_db: must be > 0 or null, got {a.top_db!r}")
    if not 0 <= d.fold < d.n_folds:
        raise ConfigError(f"data.fold: {d.fold} is outside 0..{d.n_folds - 1} (data.n_folds={d.n_folds})")
    if d.crop_mode == "first_random" and d.first_seconds < d.crop_seconds:
        raise ConfigError(
            f"data.first_seconds: {d.first_seconds:g} is shorter than data.crop_seconds={d.crop_seconds:g}"
        )
    if not 0 <= d.secondary_label_value <= 1:
        raise ConfigError(f"data.secondary_label_value: must be in [0, 1], got {d.secondary_label_value!r}")
    if d.num_workers < 0 or d.prepare_workers < 0:
        raise ConfigError("data.num_workers/data.prepare_workers: must be >= 0")
    if not math.isfinite(a.fmax):
        raise ConfigError("audio.fmax: must be finite")


def _error_text(err: OmegaConfBaseException, source: str) -> str:
    key = getattr(err, "full_key", None)
    msg = getattr(err, "msg", None) or str(err).splitlines()[0]
    msg = msg.splitlines()[0] if msg else type(err).__name__
    return f"{source}: {key}: {msg}" if key else f"{source}: {msg}"


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load the schema defaults, then a YAML file, then dotted overrides, and validate.

    Args:
        path: a YAML file with any subset of the schema's keys, or None for the defaults.
        overrides: ``["train.lr=3e-4", "data.root=/data/birdclef"]``.

    Raises:
        ConfigError: a missing file, an unknown key, a value of the wrong type or out of range.
    """
    conf = OmegaConf.structured(Config)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            conf = OmegaConf.merge(conf, OmegaConf.load(path))
        except OmegaConfBaseException as err:
            raise ConfigError(_error_text(err, str(path))) from None
        except Exception as err:  # YAML syntax errors come from the yaml package
            raise ConfigError(f"{path}: cannot parse: {err}") from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        try:
            conf = OmegaConf.merge(conf, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as err:
            raise ConfigError(_error_text(err, f"override {item!r}")) from None
    try:
        cfg = OmegaConf.to_object(conf)
    except OmegaConfBaseException as err:
        raise ConfigError(_error_text(err, str(path or "config"))) from None
    assert isinstance(cfg, Config)
    validate(cfg)
    return cfg


def to_yaml(cfg: Config) -> str:
    """The resolved configuration as YAML (what run folders store)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved configuration to `path`."""
    Path(path).write_text(to_yaml(cfg))


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config from a plain dict (e.g. the one stored inside a checkpoint), validating it."""
    try:
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(data)))
    except OmegaConfBaseException as err:
        raise ConfigError(_error_text(err, "stored config")) from None
    assert isinstance(cfg, Config)
    validate(cfg)
    return cfg


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The configuration as a plain, picklable dict (for checkpoints)."""
    out = OmegaConf.to_container(OmegaConf.structured(cfg))
    assert isinstance(out, dict)
    return out  # type: ignore[return-value]
