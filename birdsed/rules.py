"""Rules a config field carries beside its definition, as dataclass field metadata, and the checks that read them.

``choice("a", "b")``, ``positive(1.0)``, ``non_negative(0)``, ``unit(0.5)`` and ``at_least(3, 1)`` define a field
and its allowed values in one place; ``registered("sed", "birdsed.models.sed:HEADS")`` takes its allowed values from
the registry the implementations are listed in (so a new head, pooling or loss is added in one place);
:func:`check_fields` walks any (nested) dataclass and raises :class:`~birdsed.errors.ConfigError` naming the dotted
key. Every float must also be finite.
"""

from __future__ import annotations

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
