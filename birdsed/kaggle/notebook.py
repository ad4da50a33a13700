"""The Kaggle notebook a bundle ships, and its dry run: the notebook's code cells run, in order, in one Python
process of a fresh virtual environment that holds only the image's packages and the bundle's wheels, against a
Kaggle-shaped folder of sample soundscapes with read-only inputs; its submission must equal ``birdsed infer``'s here.
Imports :mod:`birdsed.kaggle.wheels` (the image stand-in) and the inference stage; :mod:`birdsed.kaggle.bundle`
calls it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from birdsed.config import Config, ConfigError
from birdsed.errors import BirdsedError

if TYPE_CHECKING:
    from birdsed.inference.ensemble import Member
    from birdsed.kaggle.bundle import Target

# the one source of the Kaggle notebook: notebooks/ of the checkout (bundle builds birdsed's wheel from it too)
NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "kaggle_inference.ipynb"


class BundleError(BirdsedError):
    """The bundle could not be made, or its dry run failed."""


@dataclass
class DryRun:
    """The notebook run against sample soundscapes in a stand-in of the Kaggle image."""

    files: int
    rows: int
    seconds: float
    max_abs_diff: float  # against birdsed's own inference here
    version_differences: list[str] = field(default_factory=list)


def parameters(comp: str, wheels: str, models: str, working: str, threads: int) -> str:
    return "\n".join(
        [
            "# parameters (written by birdsed bundle)",
            f"COMPETITION_DIR = {comp!r}",
            f"WHEEL_DIR = {wheels!r}",
            f"MODELS_DIR = {models!r}",
            f"OUTPUT = {working + '/submission.csv'!r}",
            f"PKG_DIR = {working + '/birdsed_pkgs'!r}",
            f"THREADS = {threads}",
            'OVERRIDES = []  # on top of the bundled settings, e.g. ["infer.clip_weight=0.75"]',
        ]
    )


def notebook(parameters: str) -> dict[str, Any]:
    """The inference notebook (JSON) with its parameter cell replaced."""
    nb = json.loads(NOTEBOOK.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    cell["source"] = parameters.splitlines(keepends=True)
    return nb


def _sample_files(root: Path, n: int) -> list[Path]:
    from birdsed.data.audio import list_audio

    for folder in ("test_soundscapes", "train_soundscapes"):
        files = list_audio(root / folder) if (root / folder).is_dir() else []
        if files:
            return [Path(f) for f in files[:n]]
    raise ConfigError(f"--sample-data: {root} has no audio in test_soundscapes/ or train_soundscapes/")


def _read_only(folder: Path, writable: bool = False) -> None:
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            mode = (0o755 if path.is_dir() else 0o644) if writable else (0o555 if path.is_dir() else 0o444)
            path.chmod(mode)


def dry_run_notebook(
    bundle: Path, target: Target, sample: Path, n_files: int, members: list[Member], cfg: Config
) -> DryRun:
    """Run the bundle's notebook in a stand-in of the Kaggle image; its submission must equal ours here."""
    import numpy as np
    import pandas as pd

    from birdsed.inference.predict import predict
    from birdsed.kaggle.wheels import image_environment

    files = _sample_files(sample, n_files)
    with tempfile.TemporaryDirectory(prefix="birdsed-dryrun-") as tmp:
        root = Path(tmp)
        inputs, working = root / "kaggle" / "input", root / "kaggle" / "working"
        comp = inputs / target.competition
        (comp / "test_soundscapes").mkdir(parents=True)
        working.mkdir()
        for f in files:
            shutil.copyfile(f, comp / "test_soundscapes" / f.name)
        for name in ("sample_submission.csv", "taxonomy.csv"):
            if (sample / name).is_file():
                shutil.copyfile(sample / name, comp / name)
        shutil.copytree(bundle / "models", inputs / target.models_slug)
        shutil.copytree(bundle / "wheels", inputs / target.wheels_slug)
        _read_only(inputs)
        try:
            python, differences = image_environment(root)
            params = parameters(
                str(comp),
                str(inputs / target.wheels_slug),
                str(inputs / target.models_slug),
                str(working),
                os.cpu_count() or 1,
            )
            nb = notebook(params)
            script = "\n\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
            (root / "notebook.py").write_text(script)
            env = {"PATH": f"{python.parent}:/usr/bin:/bin", "HOME": str(root), "PYTHONNOUSERSITE": "1"}
            t0 = time.perf_counter()
            done = subprocess.run(
                [str(python), str(root / "notebook.py")], cwd=working, env=env, capture_output=True, text=True
            )
            seconds = time.perf_counter() - t0
            printed = done.stdout + done.stderr
            if done.returncode:
                tail = "\n".join(printed.strip().splitlines()[-15:])
                raise BundleError(f"dry run: the notebook failed in the Kaggle-image stand-in:\n{tail}")
            if str(working / "birdsed_pkgs") not in printed:
                raise BundleError(f"dry run: birdsed was not imported from the bundle's wheels:\n{printed[-500:]}")
            theirs = pd.read_csv(working / "submission.csv")
            comp_sample = comp / "sample_submission.csv"
            ours = predict(cfg, members, comp / "test_soundscapes", comp_sample if comp_sample.is_file() else None,
                           device="cpu")  # fmt: skip
            columns = ours.columns
        finally:
            _read_only(inputs, writable=True)  # so that the folder can be removed
    if list(theirs.columns) != ["row_id", *columns] or theirs["row_id"].tolist() != ours.submission["row_id"].tolist():
        raise BundleError("dry run: the notebook's submission has other rows or columns than birdsed infer's here")
    diff = float(np.abs(theirs[columns].to_numpy() - ours.submission[columns].to_numpy()).max())
    if diff > 1e-5:  # the CSV keeps 6 decimals
        raise BundleError(f"dry run: the notebook's probabilities differ from birdsed infer's by up to {diff:.2g}")
    proof = DryRun(len(files), len(theirs), seconds, diff, differences)
    print(
        f"dry run: the notebook predicted {proof.files} file(s) ({proof.rows} rows) in {seconds:.0f} s in a fresh "
        f"environment with only the image's packages and the bundle's wheels; max |difference| to birdsed infer "
        f"here {diff:.1g}"
        + (f"; {len(differences)} package version(s) here differ from the image's" if differences else "")
    )
    return proof
