"""The rules a config's text follows — and every YAML file birdsed reads (studies, mapping files, its own records):
PyYAML's safe loader without repeated keys, and no alias that multiplies a document past a bound. Imports PyYAML
only."""

from __future__ import annotations

from typing import Any

import yaml


class _UniqueKeys(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that repeats a key (PyYAML keeps the last one without a word).
    OmegaConf's own loader refuses them too, but it is private (``omegaconf._yaml``) and ``OmegaConf.create`` expands
    aliases before :func:`parse_yaml` can refuse a document that multiplies; study and mapping files are not configs."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key]})", key_node.start_mark
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


MAX_YAML_VALUES = 100_000  # a config is a few hundred values; aliases that multiply ("billion laughs") are refused


def _expanded_size(data: Any, limit: int) -> int:
    """How many values `data` holds once every alias is expanded (shared sub-trees counted each time they occur,
    each counted once by identity), stopping past `limit`."""
    sizes: dict[int, int] = {}

    def size(node: Any) -> int:
        if not isinstance(node, dict | list):
            return 1
        if id(node) in sizes:
            return sizes[id(node)]
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        total = 1
        for child in children:
            total += size(child)
            if total > limit:
                break
        sizes[id(node)] = total
        return total

    return size(data)


def parse_yaml(text: str) -> Any:
    """YAML text → Python data, rejecting duplicate keys and aliases that expand past :data:`MAX_YAML_VALUES`.

    Raises:
        ValueError: a syntax error, a repeated key or a document that expands too far, as ``line N: what`` (for the
            caller to prefix with the file).
    """
    data = _load_yaml(text)
    if _expanded_size(data, MAX_YAML_VALUES) > MAX_YAML_VALUES:
        raise ValueError(f"expands to more than {MAX_YAML_VALUES:,} values through its aliases (&anchor / *alias)")
    return data


def _load_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeys)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ValueError(f"{where}{err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise ValueError(str(err).splitlines()[0]) from None
