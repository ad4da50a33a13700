"""The Kaggle notebook, executed for real against a Kaggle-shaped folder made from the synthetic dataset."""

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from birdsed.export import export
from birdsed.metrics import score_files

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_kaggle_notebook_runs_offline_from_a_wheel(trained_run, tiny_root, tmp_path):
    nbclient = pytest.importorskip("nbclient")
    _, summary, run_dir = trained_run
    wheels = tmp_path / "input" / "birdsed-wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(REPO),
        ],
        check=True,
    )
    comp = tmp_path / "input" / "birdclef-2025"
    shutil.copytree(tiny_root / "test_soundscapes", comp / "test_soundscapes")
    shutil.copy(tiny_root / "sample_submission.csv", comp / "sample_submission.csv")
    model = export(run_dir, tmp_path / "input" / "birdsed-models" / "tiny", "onnx")
    out = tmp_path / "working" / "submission.csv"
    out.parent.mkdir()

    nb = nbformat.read(REPO / "notebooks" / "kaggle_inference.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source = "\n".join(
        [
            f"COMPETITION_DIR = {str(comp)!r}",
            f"WHEEL_DIR = {str(wheels)!r}",
            f"MODEL_DIRS = [{str(model)!r}]",
            f"OUTPUT = {str(out)!r}",
            f"PKG_DIR = {str(tmp_path / 'working' / 'pkgs')!r}",
            'RUNTIME = "onnx"',
            "TTA_SHIFTS = [0.0]",
            'OVERRIDES = ["infer.shared_stft=false"]  # exactly the windows the training run scored',
            "THREADS = 2",
            'TEACHER = ""',
            "TEACHER_WEIGHT = 0.5",
            'AGILE = ""',
            "AGILE_WEIGHT = 0.5",
        ]
    )
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert str(tmp_path / "working" / "pkgs") in printed  # birdsed came from the wheel, not the checkout
    score = score_files(tiny_root / "test_solution.csv", out)
    assert score.macro_auc == pytest.approx(summary["soundscape_auc"], abs=0.02)
