"""``birdsed bundle``: everything a Kaggle code-competition submission needs, offline, in one folder — and proof.

``OUT/`` holds three things to upload:

- ``models/`` (a dataset): one export folder per checkpoint and ``ensemble.json`` — members, and the ``infer`` and
  ``teacher`` settings (weights, TTA shifts, smoothing, clip/frame blend, teacher, agile model) the notebook
  reads: :func:`predict_competition` is the notebook's whole inference;
- ``wheels/`` (a dataset): the birdsed wheel and what the notebook needs that the Kaggle image lacks
  (:mod:`birdsed.kaggle.wheels`, :mod:`birdsed.kaggle.image`);
- ``inference.ipynb`` with its parameter cell filled, and ``kernel-metadata.json`` (``kaggle kernels push -p OUT``);
  each dataset folder has its ``dataset-metadata.json`` (``kaggle datasets create -p OUT/models``).

Then the ensemble's Kaggle time is projected (:mod:`birdsed.inference.budget`) and the notebook is run for real: its
code cells, in order, in one Python process of a fresh virtual environment that holds only the image's packages, the
wheels installed from the bundle with ``--no-index``, against a Kaggle-shaped folder of sample soundscapes whose
inputs are read-only. Its submission must equal ``birdsed infer``'s here. ``bundle.json`` records it all.
The notebook's inference uses torch (in the image) for the mel front-end; the exported models hold the network
only.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from birdsed import __version__
from birdsed.config import Config, ConfigError
from birdsed.config.load import config_to_dict, load_config
from birdsed.kaggle.image import IMAGE, NOTEBOOK_NEEDS, PLATFORM, PYTHON, RUNTIME_NEEDS, TEACHER_NEEDS
from birdsed.kaggle.notebook import BundleError, DryRun, dry_run_notebook, notebook, parameters
from birdsed.outputs import atomic_write, read_json
from birdsed.ownership import check_dir_output, mark_output, staged_dir
from birdsed.rules import renamed_keys
from birdsed.teacher.windows import STUDENT_FILE, load_students

if TYPE_CHECKING:
    from birdsed.inference.ensemble import Member
    from birdsed.inference.submit import InferResult

log = logging.getLogger(__name__)
SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
ENSEMBLE_FILE = "ensemble.json"
RUNTIMES = tuple(RUNTIME_NEEDS)


@dataclass
class Target:
    """Where the bundle goes: the Kaggle account, dataset names, competition, and the image's Python/platform."""

    user: str
    competition: str = "birdclef-2025"
    prefix: str = "birdsed"  # datasets PREFIX-models and PREFIX-wheels, notebook PREFIX-inference
    python: str = PYTHON
    platform: str = PLATFORM
    license: str = "CC-BY-NC-SA-4.0"  # of the models (BirdCLEF training audio is mostly Xeno-canto, CC BY-NC-SA)

    def check(self) -> None:
        """Refuse names Kaggle would refuse, before any work: a slug is lower-case letters, digits and hyphens, 6-50
        characters (``PREFIX-inference`` the longest).

        Raises:
            ConfigError: naming the flag and a name that would do.
        """
        if not SLUG.fullmatch(self.prefix) or len(f"{self.prefix}-inference") > 50:
            fix = re.sub(r"[^a-z0-9]+", "-", self.prefix.lower()).strip("-")[:40] or "birdsed"
            raise ConfigError(
                f"--prefix {self.prefix!r}: Kaggle slugs are lower-case letters, digits and single hyphens, at most 40 "
                f"characters before '-inference'; e.g. --prefix {fix}"
            )
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.user):
            raise ConfigError(f"--kaggle-user {self.user!r}: a Kaggle user name (letters, digits, '-', '_')")
        if self.python != PYTHON:
            log.warning(
                "bundle for Python %s: the Kaggle image has Python %s (its wheels may not install)", self.python, PYTHON
            )

    @property
    def models_slug(self) -> str:
        return f"{self.prefix}-models"

    @property
    def wheels_slug(self) -> str:
        return f"{self.prefix}-wheels"


@dataclass
class BundleResult:
    out: Path
    members: list[str]
    wheels: list[dict[str, str]]
    budget: dict[str, float]
    dry_run: DryRun | None


def member_names(checkpoints: Sequence[str | Path]) -> list[str]:
    """A folder name per checkpoint: the run folder's name (a .pt file: its folder's), made unique."""
    names: list[str] = []
    for ckpt in checkpoints:
        path = Path(ckpt)
        base = path.parent.name if path.suffix == ".pt" else path.name
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-.") or "model"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def setting_files(cfg: Config) -> tuple[Path | None, Path | None]:
    """The files the settings name that a bundle carries: the agile model (``teacher.agile``: its ``agile.npz``, or
    a ``birdsed agile`` folder holding one — what ``infer`` and ``budget`` take) and the mapping
    (``teacher.mapping``); None where unset.

    Raises:
        ConfigError: a named file that is not there (checked before any export).
    """
    agile = Path(cfg.teacher.agile) if cfg.teacher.agile else None
    if agile is not None and agile.is_dir():
        agile = agile / "agile.npz"
    mapping = Path(cfg.teacher.mapping) if cfg.teacher.mapping else None
    for key, path in (("teacher.agile", agile), ("teacher.mapping", mapping)):
        if path is not None and not path.is_file():
            raise ConfigError(f"{key}: {path} not found")
    return agile, mapping


def _settings(cfg: Config, models: Path) -> dict[str, Any]:
    """The infer and teacher sections as stored; files they name are copied into `models` and named relatively."""
    data = config_to_dict(cfg)
    infer, teacher = data["infer"], data["teacher"]
    if teacher["infer"] not in ("", "birdnet"):
        raise ConfigError(
            f"teacher.infer: {teacher['infer']!r} is a CSV of soundscapes predicted here; Kaggle's test soundscapes "
            "are hidden, so a bundle takes teacher=birdnet (predicted in the notebook) or none"
        )
    for (section, key, name), src in zip(
        ((teacher, "agile", "agile.npz"), (teacher, "mapping", "teacher_mapping")), setting_files(cfg), strict=True
    ):
        if src is not None:
            name = name if name.endswith(src.suffix) else name + src.suffix
            shutil.copyfile(src, models / name)
            section[key] = name
    names = []
    for i, run in enumerate(cfg.teacher.student):  # the soundscape students: their student.pt, named in order
        src = Path(run) / STUDENT_FILE if Path(run).is_dir() else Path(run)
        names.append(f"student_{i}.pt")
        shutil.copyfile(src, models / names[-1])
    teacher["student"] = names
    teacher["taxonomy"] = ""  # the competition's, found beside the test soundscapes in the notebook
    infer["threads"] = 0
    return {"infer": infer, "teacher": teacher}


def load_bundle(models_dir: str | Path, overrides: Sequence[str] = (), taxonomy: str | Path | None = None):
    """The config and ensemble members of a bundle's models folder, `overrides` applied on the stored settings.

    Returns:
        (Config, list of :class:`birdsed.inference.ensemble.Member`), members on the CPU with the bundle's runtime.
    """
    import torch

    from birdsed.inference.submit import load_ensemble

    models_dir = Path(models_dir)
    path = models_dir / ENSEMBLE_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: not found; is {models_dir} the models folder of a birdsed bundle?")
    meta = read_json(path)
    settings = renamed_keys(meta["config"], str(path), quiet=True)  # a bundle made before issue 39's names
    teacher = settings["teacher"]
    for key in ("agile", "mapping"):
        if teacher[key]:
            teacher[key] = str(models_dir / teacher[key])
    teacher["student"] = [str(models_dir / name) for name in teacher.get("student", [])]
    if teacher["infer"] == "birdnet" and taxonomy is not None:
        teacher["taxonomy"] = str(taxonomy)
    cfg = load_config(settings, overrides)
    if cfg.infer.threads:
        torch.set_num_threads(cfg.infer.threads)
    missing = [m for m in meta["members"] if not (models_dir / m / "model.json").is_file()]
    if missing:
        raise ConfigError(f"{path}: member folder(s) {missing} missing or incomplete in {models_dir}")
    if not meta["members"]:  # the teacher alone (BirdNET, its agile model and soundscape students)
        return cfg, []
    return cfg, load_ensemble([models_dir / m for m in meta["members"]], cfg.infer, "cpu")


def predict_competition(
    models_dir: str | Path, competition_dir: str | Path, overrides: Sequence[str] = ()
) -> InferResult | None:
    """The notebook's inference: every file of ``test_soundscapes/`` with the bundle's ensemble (and teacher).

    Returns None when the folder holds no audio (Kaggle's save run, where the hidden test set is not mounted).
    """
    from birdsed.data.audio import list_audio
    from birdsed.inference.predict import predict

    comp = Path(competition_dir)
    soundscapes, sample = comp / "test_soundscapes", comp / "sample_submission.csv"
    if not list_audio(soundscapes):
        return None
    cfg, members = load_bundle(models_dir, overrides, comp / "taxonomy.csv")
    pred = predict(cfg, members, soundscapes, sample if sample.is_file() else None, device="cpu")
    pred.result.submission = pred.submission
    return pred.result


def notebook_needs(cfg: Config) -> list[str]:
    """Distributions the notebook imports for this ensemble (birdsed's inference, its runtime, its teacher)."""
    return [*NOTEBOOK_NEEDS, *RUNTIME_NEEDS.get(cfg.infer.runtime, []), *TEACHER_NEEDS.get(cfg.teacher.infer, [])]


def _write_metadata(out: Path, target: Target, names: list[str]) -> None:
    user = target.user
    datasets = {
        "models": (target.models_slug, f"birdsed models: {', '.join(names)}"[:50], target.license),
        "wheels": (target.wheels_slug, f"birdsed {__version__} wheels for offline inference"[:50], "other"),
    }
    for folder, (slug, title, lic) in datasets.items():
        meta = {"title": title, "id": f"{user}/{slug}", "licenses": [{"name": lic}]}
        atomic_write(out / folder / "dataset-metadata.json", json.dumps(meta, indent=1) + "\n")
    kernel = {
        "id": f"{user}/{target.prefix}-inference",
        "title": f"{target.prefix} inference",
        "code_file": "inference.ipynb",
        "language": "python",
        "kernel_type": "notebook",
        "is_private": True,
        "enable_gpu": False,
        "enable_tpu": False,
        "enable_internet": False,
        "dataset_sources": [f"{user}/{target.models_slug}", f"{user}/{target.wheels_slug}"],
        "competition_sources": [target.competition],
        "kernel_sources": [],
    }
    atomic_write(out / "kernel-metadata.json", json.dumps(kernel, indent=1) + "\n")


def write_models(checkpoints: Sequence[str | Path], cfg: Config, models: Path, target: Target) -> Path:
    """The bundle's models folder: each checkpoint exported for ``infer.runtime``, the settings and the files they
    name, and ``ensemble.json`` (what :func:`load_bundle` and the notebook read)."""
    from birdsed.inference.export import export

    models.mkdir()
    names = member_names(checkpoints)
    for ckpt, name in zip(checkpoints, names, strict=True):
        export(ckpt, models / name, cfg.infer.runtime)
    meta = {
        "birdsed": __version__,
        "members": names,
        "sources": [str(c) for c in checkpoints],
        "config": _settings(cfg, models),
        "image": IMAGE,
        "python": target.python,
        "platform": target.platform,
    }
    atomic_write(models / ENSEMBLE_FILE, json.dumps(meta, indent=1) + "\n")
    return models


def make_bundle(
    checkpoints: Sequence[str | Path],
    cfg: Config,
    out: str | Path,
    target: Target,
    sample_data: str | Path | None = None,
    dry_run: bool = True,
    dry_run_files: int = 2,
    cores: int = 4,
    soundscapes: int = 700,
    find_links: Sequence[str] = (),
    no_index: bool = False,
    overwrite: bool = False,
) -> BundleResult:
    """Write the bundle to `out` (replaced only once complete and, with `dry_run`, proven); see the module doc."""
    from birdsed.kaggle.wheels import ship_wheels

    target.check()
    if checkpoints and cfg.infer.runtime not in RUNTIMES:  # (the teacher alone runs no member)
        raise ConfigError(
            f"infer.runtime: a bundle runs {' or '.join(RUNTIMES)} on Kaggle's CPU, not {cfg.infer.runtime}"
        )
    if not checkpoints and cfg.teacher.infer != "birdnet":
        raise ConfigError("--checkpoint: give at least one, or teacher.infer=birdnet (the teacher alone)")
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if dry_run and ".".join(target.python.split(".")[:2]) != here:
        raise BundleError(
            f"--python-version {target.python}: the dry run installs the wheels for that Python into an environment "
            f"of this interpreter, and this is Python {here}; run bundle under Python {target.python}, or pass "
            "--no-dry-run (the bundle is then not proven)"
        )
    out = Path(out)
    check_dir_output(
        out, kind="bundle", inputs=(*checkpoints, sample_data, *find_links), overwrite=overwrite, create=False
    )
    setting_files(cfg)  # every input checked before the first export
    for run in cfg.teacher.student:
        load_students(run)
    names = member_names(checkpoints)
    with staged_dir(out) as stage:
        mark_output(stage, "bundle")
        models = write_models(checkpoints, cfg, stage / "models", target)
        sample = _sample_root(
            sample_data or (None if checkpoints else cfg.data.root), models
        )  # before the downloads: a bad folder fails fast
        shipped = ship_wheels(
            notebook_needs(cfg), stage / "wheels", target.python, target.platform, list(find_links), no_index
        )
        _write_metadata(stage, target, names)
        kaggle = "/kaggle/input"
        params = parameters(
            f"{kaggle}/{target.competition}",
            f"{kaggle}/{target.wheels_slug}",
            f"{kaggle}/{target.models_slug}",
            "/kaggle/working",
            cores,
        )
        atomic_write(stage / "inference.ipynb", json.dumps(notebook(params), indent=1) + "\n")
        bcfg, members = load_bundle(models, [], sample / "taxonomy.csv")
        budget = _budget(members, bcfg, cores, soundscapes, sample)
        proof = dry_run_notebook(stage, target, sample, dry_run_files, members, bcfg) if dry_run else None
        result = BundleResult(out, names, [asdict(s) for s in shipped], budget, proof)
        record = {**asdict(result), "out": str(out), "target": asdict(target), "dry_run": proof and asdict(proof)}
        atomic_write(stage / "bundle.json", json.dumps(record, indent=1) + "\n")
    return result


def _sample_root(sample_data: str | Path | None, models: Path) -> Path:
    """A BirdCLEF folder to take sample soundscapes from: given, else the first member's training data."""
    if sample_data is None:
        first = read_json(models / ENSEMBLE_FILE)["members"][0]
        sample_data = read_json(models / first / "model.json")["config"]["data"]["root"]
    root = Path(sample_data)
    if not (root / "sample_submission.csv").is_file():
        raise ConfigError(
            f"--sample-data: {root} has no sample_submission.csv; name a BirdCLEF-format folder with soundscapes"
        )
    return root


def _budget(members: list[Member], cfg: Config, cores: int, soundscapes: int, sample: Path) -> dict[str, float]:
    """Project the ensemble's Kaggle time (:func:`birdsed.inference.budget.measure`), print and return it."""
    from birdsed.inference.budget import measure

    teacher = None
    if cfg.teacher.infer == "birdnet":
        from birdsed.inference.submit import output_columns
        from birdsed.teacher.source import teacher_source

        teacher = teacher_source(cfg, output_columns(members, sample / "sample_submission.csv"))
    b = measure(members, cfg.infer, soundscapes, 1.0, cores, teacher=teacher)
    print(
        f"budget: {len(members)} model(s) x {len(cfg.infer.tta_shifts)} shift(s)"
        f"{' + BirdNET' if teacher else ''} ({cfg.infer.runtime}): decode {b.decode_s_per_min:.2f} s + models "
        f"{b.model_s_per_min:.2f} s per minute of audio on {b.local_threads} thread(s) here; {soundscapes} minutes "
        f"on {cores} cores: {b.projected_minutes:.1f} min ({'fits' if b.fits else 'does NOT fit'} the "
        f"{b.limit_minutes:g}-minute limit)"
    )
    return {
        "decode_s_per_min": b.decode_s_per_min,
        "model_s_per_min": b.model_s_per_min,
        "projected_minutes": b.projected_minutes,
        "limit_minutes": b.limit_minutes,
        "cores": cores,
        "soundscapes": soundscapes,
    }
