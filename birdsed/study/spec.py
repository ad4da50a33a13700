"""Study files: a recipe's named variants × seeds, as :mod:`birdsed.study.runner` makes and compares them.

A study file (YAML) names the command, the base config, shared overrides, the variants (sets of dotted overrides)
and the seeds::

    command: train            # or pseudo: each run is then a pseudo-label folder, scored at its last round
                              # (with pseudo.rounds=0 and a given round 0, the given run: a baseline at no cost);
                              # or infer: each run predicts the labelled soundscapes with one seed's checkpoint
    config: configs/resnet18_sed.yaml
    overrides: [train.epochs=20]
    baseline: base            # the variant every other one is compared with
    seeds: [0, 1, 2]
    variants:
      base: {}
      ema: {train.averaging: ema}

An **infer** study compares inference settings (TTA shifts, smoothing, the clip/frame blend, a teacher blend) on
models already trained, at no training cost: ``checkpoints: runs/studies/ablation/recipe/seed{seed}`` names each seed's
checkpoint (a ``.pt`` file, or a run folder: its ``best.pt``), its variants may only set ``infer.*`` keys, and each
run predicts the labelled soundscapes of ``data.root`` (those ``test_solution.csv`` names) like ``birdsed infer``.
A variant may name its own models (``fast: {checkpoints: runs/studies/speed/fast/seed{seed}}``): two training
recipes' models, seed by seed, compared under the same inference.

``{seed}`` in an override's value becomes the run's seed, so a pseudo study can start each seed from its own
round 0: ``pseudo.init_checkpoints=[runs/studies/ablation/recipe/seed{seed}]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from birdsed.config import Config
from birdsed.config.load import load_config
from birdsed.config.text import parse_yaml
from birdsed.errors import BirdsedError, ConfigError
from birdsed.rules import RENAMED


class StudyError(BirdsedError, ValueError):
    """A study file or study folder is not usable; the message names the file and what is wrong."""


COMMANDS = ("train", "pseudo", "infer")
SELECTION = {"scheme": "halves", "repeats": 200, "folds": 5}
# what an infer study's variants may set: inference, and the teacher's window rule and mapping (no training)
INFER_KEYS = ("infer.", "teacher.", *RENAMED)  # the teacher's settings (none of them changes a trained model)


@dataclass
class Study:
    """A parsed study file (see the module docstring)."""

    command: str
    config: str
    variants: dict[str, list[str]]
    seeds: list[int]
    baseline: str
    overrides: list[str] = field(default_factory=list)
    bootstrap: int = 2000
    checkpoints: str = ""  # infer studies: each seed's checkpoint, "{seed}" in the path
    variant_checkpoints: dict[str, str] = field(default_factory=dict)  # infer studies: a variant's own models
    # the out-of-sample choice (stats.select_out_of_sample): a variant chosen on part of the labelled soundscapes,
    # scored on the rest; scheme "halves" (repeated random halvings) or "folds" (K folds, repeated)
    selection: dict[str, Any] = field(default_factory=lambda: dict(SELECTION))

    def runs(self) -> list[tuple[str, int]]:
        """Every (variant, seed), seed by seed (the baseline first in each), the order runs are made in."""
        names = [self.baseline, *(v for v in self.variants if v != self.baseline)]
        return [(v, s) for s in self.seeds for v in names]

    def run_config(self, variant: str, seed: int, threads: int = 0) -> Config:
        """The config of one run: base file, shared overrides, the variant's (``{seed}`` in a value becomes the
        seed, e.g. ``pseudo.init_checkpoints=[runs/x/seed{seed}]``), then ``train.seed``."""
        items = [_with_seed(o, seed) for o in (*self.overrides, *self.variants[variant])]
        items += [f"train.seed={seed}", "train.progress=false"]
        if threads:
            items.append(f"train.threads={threads}")
        try:
            return load_config(self.config, items)
        except ConfigError as err:
            raise StudyError(f"variant {variant!r}: {err}") from None

    def checkpoint(self, seed: int, variant: str | None = None) -> Path:
        """An infer study's checkpoint of `seed` (`variant`'s own where it names one): ``checkpoints`` with the seed
        filled in (a run folder → its ``best.pt``)."""
        pattern = self.variant_checkpoints.get(variant or "", self.checkpoints)
        path = Path(_with_seed(pattern, seed))
        return path / "best.pt" if path.is_dir() else path


def _with_seed(text: str, seed: int) -> str:
    """A study file's value with ``{seed}`` filled in (an override's, or an infer study's ``checkpoints``)."""
    return text.replace("{seed}", str(seed))


def _names_each_seed(checkpoints: Any) -> bool:
    """Whether an infer study's ``checkpoints`` (its own or a variant's) is a path with ``{seed}`` in it."""
    return isinstance(checkpoints, str) and "{seed}" in checkpoints


def _override(key: str, value: Any) -> str:
    """A dotted override from a YAML key and value (lists and strings as YAML, which OmegaConf parses back; an empty
    string stays one: ``key=`` would be null)."""
    if not isinstance(value, str):
        return f"{key}={json.dumps(value)}"
    return f"{key}={value}" if value else f"{key}=''"


def parse_study(data: Any, source: str) -> Study:
    """A :class:`Study` from the mapping of a study file; every variant's config is loaded once to check it.

    Raises:
        StudyError: naming `source` and the key that is wrong.
    """
    if not isinstance(data, dict):
        raise StudyError(f"{source}: a study file is a mapping (command:, config:, variants:, seeds:, ...)")
    known = {"command", "config", "variants", "seeds", "baseline", "overrides", "bootstrap", "checkpoints", "selection"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise StudyError(f"{source}: unknown key(s) {unknown}; known: {sorted(known)}")
    command = data.get("command", "train")
    if command not in COMMANDS:
        raise StudyError(f"{source}: command must be one of {list(COMMANDS)}, got {command!r}")
    if not isinstance(data.get("config"), str):
        raise StudyError(f"{source}: config: the base config file is required")
    variants, variant_checkpoints = _variants(data.get("variants"), command, source)
    seeds = data.get("seeds", [0, 1, 2])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise StudyError(f"{source}: seeds: a list of distinct integers, got {seeds!r}")
    baseline = data.get("baseline", next(iter(variants)))
    if baseline not in variants:
        raise StudyError(f"{source}: baseline {baseline!r} is not one of the variants {list(variants)}")
    overrides = data.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
        raise StudyError(f"{source}: overrides: a list of key=value")
    bootstrap = data.get("bootstrap", 2000)
    if not isinstance(bootstrap, int) or bootstrap < 100:
        raise StudyError(f"{source}: bootstrap: an integer ≥ 100 (resamples), got {bootstrap!r}")
    checkpoints = data.get("checkpoints", "")
    _check_infer_study(command, checkpoints, [*overrides, *(o for v in variants.values() for o in v)], source)
    selection = _selection(data.get("selection"), source)
    study = Study(
        command,
        data["config"],
        variants,
        list(seeds),
        baseline,
        list(overrides),
        bootstrap,
        checkpoints,
        variant_checkpoints,
        selection,
    )
    for v in variants:
        study.run_config(v, seeds[0])
    if command == "infer":
        wanted = {study.checkpoint(s, v) for s in seeds for v in variants}
        absent = sorted(str(p) for p in wanted if not p.is_file())
        if absent:
            raise StudyError(f"{source}: checkpoints: no checkpoint at {absent[:3]}")
    return study


def _variants(given: Any, command: str, source: str) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The study file's ``variants:`` as (name → overrides, name → its own checkpoints pattern)."""
    if not isinstance(given, dict) or not given:
        raise StudyError(f"{source}: variants: a mapping of names to overrides is required")
    variants: dict[str, list[str]] = {}
    variant_checkpoints: dict[str, str] = {}
    for name, over in given.items():
        if not isinstance(name, str) or not name.replace("-", "_").isidentifier():
            raise StudyError(f"{source}: variant name {name!r}: letters, digits, - and _ only (it names a folder)")
        if over is None:
            over = {}
        if isinstance(over, dict) and "checkpoints" in over:
            over = dict(over)
            variant_checkpoints[name] = over.pop("checkpoints")
            if command != "infer" or not _names_each_seed(variant_checkpoints[name]):
                raise StudyError(
                    f"{source}: variant {name!r}: checkpoints: an infer study's variant may name its own models, "
                    "each seed's, e.g. runs/x/seed{seed}"
                )
        if isinstance(over, dict):
            variants[name] = [_override(k, v) for k, v in over.items()]
        elif isinstance(over, list) and all(isinstance(o, str) and "=" in o for o in over):
            variants[name] = list(over)
        else:
            raise StudyError(f"{source}: variant {name!r}: a mapping of dotted keys or a list of key=value")
    return variants, variant_checkpoints


def _check_infer_study(command: str, checkpoints: Any, items: list[str], source: str) -> None:
    """An infer study names each seed's checkpoints and sets infer.* / teacher.* only; no other study names any."""
    if command != "infer":
        if checkpoints:
            raise StudyError(f"{source}: checkpoints: only an infer study (command: infer) names trained checkpoints")
        return
    if not _names_each_seed(checkpoints):
        raise StudyError(f"{source}: checkpoints: an infer study names each seed's, e.g. runs/x/seed{{seed}}")
    other = sorted({o.split("=")[0] for o in items if not o.startswith(INFER_KEYS)})
    if other:
        raise StudyError(
            f"{source}: an infer study's overrides and variants may set infer.* and teacher.* only (its models are "
            f"trained): {other}"
        )


def _selection(given: Any, source: str) -> dict[str, Any]:
    """The study file's ``selection:`` (``{scheme: halves|folds, repeats: N, folds: K}``) over the defaults."""
    if given is None:
        return dict(SELECTION)
    if not isinstance(given, dict) or set(given) - set(SELECTION):
        raise StudyError(f"{source}: selection: a mapping of {sorted(SELECTION)}, got {given!r}")
    out = {**SELECTION, **given}
    if out["scheme"] not in ("halves", "folds"):
        raise StudyError(f"{source}: selection.scheme: halves or folds, got {out['scheme']!r}")
    for key, low in (("repeats", 10), ("folds", 2)):
        if not isinstance(out[key], int) or isinstance(out[key], bool) or out[key] < low:
            raise StudyError(f"{source}: selection.{key}: an integer ≥ {low}, got {out[key]!r}")
    return out


def load_study(path: str | Path) -> Study:
    """Read and check a study file."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: study file not found")
    try:
        data = parse_yaml(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise StudyError(f"{path}: cannot parse: {err}") from None
    return parse_study(data, str(path))


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` → (i, n) with 0 ≤ i < n (a job array's task index and its size)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise StudyError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise StudyError(f"--shard {text!r}: need 0 ≤ i < n")
    return i, n
