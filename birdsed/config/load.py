"""Configs read and written: the schema's defaults, then a YAML file (or stored settings), then dotted overrides,
validated (:func:`load_config`); the resolved config as YAML or a plain dict for checkpoints. Imports the schema
(:mod:`birdsed.config`) and the base."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from birdsed.config import Config
from birdsed.config.text import parse_yaml
from birdsed.errors import ConfigError
from birdsed.rules import renamed_keys, renamed_override, validate


def _error_text(err: OmegaConfBaseException, source: str) -> str:
    key = getattr(err, "full_key", None)
    msg = getattr(err, "msg", None) or str(err).splitlines()[0]
    msg = msg.splitlines()[0] if msg else type(err).__name__
    return f"{source}: {key}: {msg}" if key else f"{source}: {msg}"


def load_config(path: str | Path | Mapping[str, Any] | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load the schema defaults, then a YAML file, then dotted overrides, and validate.

    Args:
        path: a YAML file with any subset of the schema's keys, such a mapping itself (e.g. the settings stored in
            a Kaggle bundle), or None for the defaults.
        overrides: ``["train.lr=3e-4", "data.root=/data/birdclef"]``.

    Raises:
        ConfigError: a missing file, an unknown key, a value of the wrong type or out of range.
    """
    conf = OmegaConf.structured(Config)
    if isinstance(path, Mapping):
        try:
            conf = OmegaConf.merge(conf, OmegaConf.create(renamed_keys(dict(path), "stored settings", quiet=True)))
        except OmegaConfBaseException as err:
            raise ConfigError(_error_text(err, "stored settings")) from None
        path = None
    elif path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = parse_yaml(path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as err:
            raise ConfigError(f"{path}: cannot parse: {err}") from None
        data = {} if data is None else data  # an empty file: the defaults
        if not isinstance(data, dict):
            raise ConfigError(
                f"{path}: the top level must be a mapping of sections (audio:, data:, train:, ...), "
                f"got a {'list' if isinstance(data, list) else type(data).__name__}"
            )
        sections = {f.name for f in fields(Config) if f.name != "name"}
        for key, value in data.items():
            if key in sections and value is not None and not isinstance(value, dict):
                raise ConfigError(
                    f"{path}: {key}: must be a section of keys (e.g. {key}:\n  key: value), got {value!r}"
                )
        try:
            loaded = OmegaConf.create(renamed_keys(data, str(path)))
        except OmegaConfBaseException as err:
            raise ConfigError(_error_text(err, str(path))) from None
        try:
            conf = OmegaConf.merge(conf, loaded)
        except OmegaConfBaseException as err:
            raise ConfigError(_error_text(err, str(path))) from None
    for item in map(renamed_override, overrides):
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        try:  # a plain YAML value (no tags, closed brackets), read by the same safe loader as config files
            parse_yaml(item.partition("=")[2] or "null")
        except ValueError as err:
            raise ConfigError(f"override {item!r}: not a plain YAML value ({err})") from None
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
        stored = OmegaConf.create(renamed_keys(data, "stored config", quiet=True))
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), stored))
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
