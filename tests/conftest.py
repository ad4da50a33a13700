"""Shared fixtures: a tiny synthetic BirdCLEF folder (made once per session) and the real mini set when present."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdsed.data.synth import make_dataset

REPO = Path(__file__).resolve().parents[1]
REAL_MINI = REPO.parent / "shared" / "data" / "birdclef-real-mini"


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset: 6 classes, 4 recordings each, 3 + 3 soundscapes of 30 s. Read-only by convention."""
    return make_dataset(
        tmp_path_factory.mktemp("synth") / "tiny",
        n_classes=6,
        seed=3,
        files_per_class=4,
        train_soundscapes=3,
        test_soundscapes=3,
        soundscape_seconds=30.0,
        workers=2,
    )


@pytest.fixture(scope="session")
def tiny_root26(tiny_root, tmp_path_factory) -> Path:
    """The tiny synthetic set in the 2026 layout: its labelled test soundscapes become labelled *training*
    soundscapes (every row twice, HH:MM:SS, every third window unlisted), and the first class loses its focal
    recordings (a soundscape-only class)."""
    root = tmp_path_factory.mktemp("synth26") / "tiny26"
    shutil.copytree(tiny_root, root)
    sol = pd.read_csv(root / "test_solution.csv", dtype={"row_id": str})
    classes = list(sol.columns[1:])
    rows = []
    for i, r in sol.iterrows():
        if i % 3 == 2:
            continue
        stem, end = r["row_id"].rsplit("_", 1)
        labels = ";".join(c for c in classes if r[c] == 1)
        start = int(end) - 5
        rows += [f"{stem}.ogg,00:00:{start:02d},00:00:{int(end):02d},{labels}"] * 2
    for f in (root / "test_soundscapes").iterdir():
        shutil.copy(f, root / "train_soundscapes" / f.name)
    (root / "train_soundscapes_labels.csv").write_text("filename,start,end,primary_label\n" + "\n".join(rows) + "\n")
    train = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    train = train[train["primary_label"] != classes[0]].assign(secondary_labels="[]")  # nor as a secondary label
    train.to_csv(root / "train.csv", index=False)
    return root


@pytest.fixture(scope="session")
def real_root() -> Path:
    """The shared real-recording mini set; tests using it skip when ../shared is absent."""
    if not (REAL_MINI / "train.csv").is_file():
        pytest.skip(f"real mini dataset not found at {REAL_MINI} (../shared is absent)")
    return REAL_MINI


def tiny_overrides(root, cache) -> list[str]:
    """What shrinks configs/demo.yaml for tests: few mels, 2-s crops, 16 samples per epoch, 2 epochs."""
    return [
        f"data.root={root}",
        f"data.cache_dir={cache}",
        f"augment.background_dir={Path(root) / 'train_soundscapes'}",
        "audio.n_mels=32",
        "audio.n_fft=1024",
        "data.crop_seconds=2",
        "data.first_seconds=3",
        "data.batch_size=8",
        "data.num_workers=0",
        "data.n_folds=4",
        "train.epochs=2",
        "train.samples_per_epoch=16",
        "train.progress=false",
    ]


def tiny_cfg(root, cache, *over):
    """configs/demo.yaml shrunk (see :func:`tiny_overrides`), then `over`."""
    from birdsed.config.load import load_config

    return load_config(REPO / "configs" / "demo.yaml", [*tiny_overrides(root, cache), *over])


@pytest.fixture(scope="session")
def trained_run(tiny_root, tmp_path_factory):
    """One shrunk demo training run shared by the tests that need a trained model: (cfg, summary, run folder)."""
    from birdsed.training.train import fit

    tmp = tmp_path_factory.mktemp("train")
    cfg = tiny_cfg(tiny_root, tmp / "cache")
    summary = fit(cfg, out=tmp / "run")
    return cfg, summary, tmp / "run"


@pytest.fixture(scope="session")
def pseudo_run(trained_run, tiny_root, tmp_path_factory):
    """One shrunk pseudo-label folder on `trained_run`: round 0 given, one round and its control: (cfg, folder)."""
    from birdsed.pseudo.rounds import run_pseudo

    cfg, _, run_dir = trained_run
    out = tmp_path_factory.mktemp("pseudo") / "p"
    over = [
        f"pseudo.init_checkpoints=[{run_dir}]",
        "pseudo.rounds=1",
        "pseudo.epochs=1",
        "pseudo.min_max_prob=0.05",
        "pseudo.control=true",
    ]
    pcfg = tiny_cfg(tiny_root, cfg.cache_path, *over)
    return pcfg, run_pseudo(pcfg, out).root


def tone(freq: float, seconds: float, sr: int, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    """A sine tone, shape (n,) or (n, channels)."""
    t = np.arange(int(seconds * sr)) / sr
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return x if channels == 1 else np.repeat(x[:, None], channels, axis=1)


def write(path: Path, data: np.ndarray, sr: int, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, **kw)
    return path


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """`path` made read-only the way Kaggle mounts its inputs: a read-only bind mount as root (root ignores file
    modes), file modes otherwise. Skips the test when neither can be had."""
    path = Path(path)
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")]}
        for p, mode in modes.items():
            p.chmod(mode & ~0o222)
        try:
            yield path
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    bind = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True, text=True)
    if bind.returncode != 0:
        pytest.skip(f"cannot make a read-only mount here: {bind.stderr.strip()}")
    try:
        ro = subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], capture_output=True, text=True)
        if ro.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {ro.stderr.strip()}")
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)  # lazy: open memory maps may hold it


def snapshot(path: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file below `path`: equal snapshots mean nothing was written, lost or truncated."""
    path = Path(path)
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file()}


def cli_error(capsys: pytest.CaptureFixture, args: list[str], status: int = 1) -> str:
    """Run ``birdsed ARGS`` in-process; check it fails with `status` and one ``error: ...`` line, no traceback.

    Returns:
        the error line.
    """
    from birdsed.cli import main

    capsys.readouterr()
    assert main([str(a) for a in args]) == status
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def cli_run(args: list[str], timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """``python -m birdsed ARGS`` in a fresh process, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "birdsed", *map(str, args)], capture_output=True, text=True, timeout=timeout, **kw
    )


def finished_epochs(metrics: Path) -> int:
    """Epochs a run's ``metrics.json`` lists as finished (0 while it is missing or half-written)."""
    try:
        return len(json.loads(metrics.read_text())["history"])
    except (OSError, ValueError, KeyError):
        return 0


def kill_after_epochs(proc: subprocess.Popen, metrics: Path, epochs: int, timeout: float = 300) -> None:
    """SIGKILL `proc` as soon as `metrics` lists `epochs` finished epochs (a run killed in the middle)."""
    deadline = time.time() + timeout
    while finished_epochs(metrics) < epochs:
        if proc.poll() is not None:
            pytest.fail(f"the process ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("the run never reached the epoch to kill it at")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
