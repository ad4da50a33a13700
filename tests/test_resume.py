"""A run killed with SIGKILL resumes after its last finished epoch and ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from birdsed.cli import main
from birdsed.models import load_checkpoint
from tests.conftest import REPO, cli_error, cli_run, finished_epochs, kill_after_epochs, snapshot, tiny_overrides

pytestmark = pytest.mark.slow
CONFIG = REPO / "configs" / "demo.yaml"


def _overrides(root: Path, cache: Path) -> list[str]:
    # one thread: the killed, resumed and reference runs compute bit for bit alike, and two of them run side by side
    # on two cores as fast as one alone
    return [*tiny_overrides(root, cache), "train.epochs=3", "train.samples_per_epoch=32", "train.threads=1"]


def _start(args: list[str]) -> subprocess.Popen:
    """``birdsed ARGS`` started in a fresh process (stderr kept, as bytes)."""
    return subprocess.Popen(
        [sys.executable, "-m", "birdsed", *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _finish(proc: subprocess.Popen, timeout: float = 300) -> None:
    """Wait for a process of :func:`_start` and fail with its stderr unless it exits 0."""
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()[-2000:]


def _kill_when(args: list[str], metrics: Path, epochs: int, timeout: float = 240) -> None:
    """Start ``birdsed ARGS`` and SIGKILL it as soon as `metrics` lists `epochs` finished epochs."""
    proc = _start(args)
    kill_after_epochs(proc, metrics, epochs, timeout)
    assert proc.returncode == -signal.SIGKILL


def _history(run: Path) -> list[dict]:
    return json.loads((run / "metrics.json").read_text())["history"]


def _same_history(a: list[dict], b: list[dict]) -> None:
    assert [h["epoch"] for h in b] == [h["epoch"] for h in a]
    for x, y in zip(a, b, strict=True):
        for key in ("step", "train_loss", "val_auc", "soundscape_auc", "lr"):
            assert x.get(key) == pytest.approx(y.get(key), abs=1e-9), (key, x, y)


def test_train_killed_mid_run_resumes_like_an_uninterrupted_run(tiny_root, tmp_path):
    # with weight averaging (swa over the last 2 of 3 epochs), the hardest case: the average, the raw weights and
    # the optimiser all travel in the checkpoint across the kill (the pseudo test below resumes without averaging)
    over = [*_overrides(tiny_root, tmp_path / "cache"), "train.averaging=swa", "train.swa_epochs=2"]
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    reference = _start(["train", CONFIG, *over, "--out", ref])  # beside the run that is killed
    _kill_when(["train", CONFIG, *over, "--out", killed], killed / "metrics.json", epochs=1)
    _finish(reference)
    assert not json.loads((killed / "metrics.json").read_text())["finished"]
    done = cli_run(["train", CONFIG, *over, "--out", killed, "--resume"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    _same_history(_history(ref), _history(killed))  # each epoch once, the same numbers
    a, b = (json.loads((r / "metrics.json").read_text()) for r in (ref, killed))
    assert b["finished"] and a["best"]["epoch"] == b["best"]["epoch"]
    assert a["summary"]["val_auc"] == pytest.approx(b["summary"]["val_auc"], abs=1e-9)
    pd.testing.assert_frame_equal(pd.read_csv(ref / "oof.csv"), pd.read_csv(killed / "oof.csv"))
    weights = [load_checkpoint(r / "last.pt")[0].state_dict() for r in (ref, killed)]
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, msg=key)
    resumed = json.loads((killed / "run.json").read_text())["resumed"]
    assert len(resumed) == 1 and resumed[0]["after_epoch"] in (0, 1)  # killed after epoch 0 (or 1), not at the end
    # resuming a finished run changes nothing
    before = (killed / "metrics.json").read_text()
    assert cli_run(["train", CONFIG, *over, "--out", killed, "--resume"]).returncode == 0
    assert (killed / "metrics.json").read_text() == before


def test_pseudo_killed_inside_a_round_resumes_in_that_round(trained_run, tiny_root, tmp_path):
    cfg, _, run_dir = trained_run
    over = [
        *_overrides(tiny_root, cfg.cache_path),
        f"pseudo.init_checkpoints=[{run_dir}]",
        "pseudo.rounds=1",
        "pseudo.min_max_prob=0.05",
    ]
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    reference = _start(["pseudo", CONFIG, *over, "--out", ref])
    _kill_when(["pseudo", CONFIG, *over, "--out", killed], killed / "round_1" / "run" / "metrics.json", epochs=1)
    _finish(reference)
    assert not (killed / "round_1" / "DONE").exists()
    labels = (killed / "round_1" / "pseudo.csv").stat().st_mtime_ns
    done = cli_run(["pseudo", CONFIG, *over, "--out", killed, "--resume"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert (killed / "round_1" / "pseudo.csv").stat().st_mtime_ns == labels  # the labels were reused
    _same_history(_history(ref / "round_1" / "run"), _history(killed / "round_1" / "run"))
    a, b = (pd.read_csv(r / "rounds.csv") for r in (ref, killed))
    assert a["round"].tolist() == b["round"].tolist() == [0, 1]
    assert a["val_auc"].tolist() == pytest.approx(b["val_auc"].tolist(), abs=1e-9)


def test_resume_refuses_a_changed_config_naming_the_keys(trained_run, tmp_path, capsys):
    """`--resume` with another `train.lr` or backbone is refused before any work (the schedule and state_dict would
    be the old run's); a key that only changes how the run is watched (`train.progress`) may differ."""
    _, _, run_dir = trained_run
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    before = snapshot(run)
    over = [f"{k}={v}" for k, v in (("train.lr", 0.5), ("model.backbone", "efficientnet_b0"))]
    line = cli_error(capsys, ["train", run / "config.yaml", *over, "--out", run, "--resume"])
    assert re.search(
        r"--resume continues the run with its own config; 2 key\(s\) differ \(model\.backbone: '\w+' → "
        r"'efficientnet_b0', train\.lr: [0-9.e-]+ → 0\.5\)",
        line,
    ), line
    assert snapshot(run) == before
    assert main(["train", str(run / "config.yaml"), "train.progress=true", "--out", str(run), "--resume"]) == 0


def _signal_when(runs: dict[int, tuple[list[str], Path]], epochs: int) -> dict[int, subprocess.CompletedProcess]:
    """Start ``birdsed ARGS`` for every ``{signal: (ARGS, metrics.json)}`` side by side, send each its signal once
    its `metrics` lists `epochs` finished epochs, and wait for the exits."""
    procs = {
        sig: subprocess.Popen(
            [sys.executable, "-m", "birdsed", *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for sig, (args, _) in runs.items()
    }
    deadline = time.time() + 240
    waiting = set(procs)
    while waiting:
        for sig in list(waiting):
            if finished_epochs(runs[sig][1]) >= epochs:
                procs[sig].send_signal(sig)
                waiting.discard(sig)
            else:
                assert procs[sig].poll() is None, procs[sig].stderr.read()[-2000:]
        assert time.time() < deadline, "a run never reached the epoch to signal it at"
        time.sleep(0.02)
    outputs = {sig: proc.communicate(timeout=120) for sig, proc in procs.items()}
    return {sig: subprocess.CompletedProcess(procs[sig].args, procs[sig].returncode, *outputs[sig]) for sig in procs}


def test_sigterm_and_ctrl_c_stop_training_with_the_codes_a_scheduler_reads(tiny_root, tmp_path):
    """SIGTERM (SLURM's and Kubernetes' first word) stops at a clean point, says where and how to go on, and exits
    143; `--resume` then finishes the run. Ctrl-C exits 130 (Lightning alone would exit 1)."""
    over = [*_overrides(tiny_root, tmp_path / "cache"), "train.epochs=3"]
    run, other = tmp_path / "run", tmp_path / "other"
    runs = {
        sig: (["train", CONFIG, *over, "--out", out], out / "metrics.json")
        for sig, out in ((signal.SIGTERM, run), (signal.SIGINT, other))
    }
    stopped = _signal_when(runs, epochs=1)
    done = stopped[signal.SIGTERM]
    assert done.returncode == 143, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert re.search(r"error: \S+run: stopped by SIGTERM at epoch [12] of 3; --resume continues", done.stderr)
    assert not json.loads((run / "metrics.json").read_text())["finished"]
    resumed = cli_run(["train", CONFIG, *over, "--out", run, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [h["epoch"] for h in _history(run)] == [0, 1, 2]
    done = stopped[signal.SIGINT]
    assert done.returncode == 130, done.stderr[-2000:]
    assert "interrupted" in done.stderr and "Traceback" not in done.stderr
