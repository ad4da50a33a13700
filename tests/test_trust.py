"""Trust (issue 40): nothing executes from a checkpoint, settings the machine cannot honour are refused before
anything starts, a config cannot blow up memory, and index settings, solutions and counts are range-checked."""

from __future__ import annotations

import logging
import pickle
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from birdsed.cli import main
from birdsed.config import ConfigError
from birdsed.config.load import load_config
from birdsed.models.build import resolve_checkpoint
from birdsed.rules import check_processes, usable_cores
from tests.conftest import REPO, cli_error, tiny_overrides

CONFIG = REPO / "configs" / "demo.yaml"


def _args(root: Path, cache: Path, *over: str) -> list:
    return [CONFIG, *tiny_overrides(root, cache), *over]


class _Payload:
    """Unpickling this runs `open(path, 'w')`: what a malicious checkpoint would do."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_resume_never_runs_code_from_a_checkpoint_and_names_a_damaged_one(trained_run, tmp_path, capsys):
    cfg, _, run_dir = trained_run
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    last = run / "checkpoints" / "last.ckpt"
    good = last.read_bytes()
    # a genuine resumable checkpoint holds tensors and plain values only: it loads with weights_only=True
    torch.load(last, map_location="cpu", weights_only=True)
    marker = tmp_path / "pwned"
    state = torch.load(last, map_location="cpu", weights_only=True)
    state["callbacks"]["evil"] = _Payload(marker)
    torch.save(state, last)
    args = ["train", *_args(Path(cfg.data.root), Path(cfg.data.cache_dir), "train.epochs=4"), "--out", run]
    line = cli_error(capsys, [*args, "--resume"])
    assert "last.ckpt: holds objects other than tensors" in line and not marker.exists()
    last.write_bytes(good[: len(good) // 2])  # cut off mid-write
    line = cli_error(capsys, [*args, "--resume"])
    assert "last.ckpt: damaged, cannot resume" in line


def test_settings_the_machine_cannot_honour_are_refused_before_any_run_folder(tiny_root, tmp_path, capsys):
    cache = tmp_path / "cache"
    cases = [
        ("train.accelerator=cuda", "train.accelerator: cuda but torch sees no CUDA device"),
        ("train.devices=99", "train.devices: 99 is more than this machine can run side by side"),
        (f"train.devices={usable_cores() + 1}", "train.devices"),
        ("data.num_workers=999", "data.num_workers: 999 is more than this machine can run side by side"),
        ("model.backbone=efficientnet_b9", "model.backbone: unknown timm model 'efficientnet_b9'; close"),
    ]
    if torch.cuda.is_available():
        cases = cases[1:]
    for override, expected in cases:
        out = tmp_path / "run"
        line = cli_error(capsys, ["train", *_args(tiny_root, cache, override), "--out", out])
        assert expected in line, (override, line)
        assert not out.exists() and not cache.exists(), override  # nothing started, nothing written
    line = cli_error(capsys, ["prepare", *_args(tiny_root, cache, "data.prepare_workers=999")])
    assert "data.prepare_workers: 999" in line and not cache.exists()
    assert check_processes("x", usable_cores()) is None  # as many as the cores is fine


def test_a_yaml_whose_aliases_multiply_is_refused_at_once(tmp_path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    path = tmp_path / "lol.yaml"
    path.write_text("\n".join(lines) + "\n")
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"lol\.yaml: cannot parse: expands to more than 100,000 values"):
        load_config(path)
    assert time.monotonic() - start < 10
    path.write_text("train:\n  epochs: &e 3\n  val_every: *e\n")  # a modest alias is fine
    assert load_config(path).train.val_every == 3


def test_window_shorter_than_birdnets_chunk_blames_the_window_only_with_birdnet():
    cfg = load_config(None, ["infer.window_seconds=2", "infer.context_seconds=2", "infer.tta_shifts=[0]"])
    assert cfg.infer.window_seconds == 2  # no teacher: nothing to blame
    with pytest.raises(ConfigError, match=r"^infer\.window_seconds: 2 s is shorter than BirdNET's 3-s chunk"):
        load_config(None, ["infer.window_seconds=2", "infer.context_seconds=2", "infer.tta_shifts=[0]",
                           "teacher.infer=birdnet"])  # fmt: skip
    # a window the row-id grid (<stem>_<end second>) cannot hold is refused at load, teacher or not (issue 49)
    with pytest.raises(ConfigError, match=r"^infer\.window_seconds: 0\.5 s; row ids name each window's end"):
        load_config(None, ["infer.window_seconds=0.5", "infer.context_seconds=0.5", "infer.tta_shifts=[0]"])


def test_index_settings_solutions_and_counts_are_range_checked(trained_run, tiny_root, tmp_path, capsys):
    _, _, run_dir = trained_run
    out = tmp_path / "sub.csv"
    args = ["infer", "--checkpoint", run_dir, "--soundscapes", tiny_root / "test_soundscapes", "--out", out]
    line = cli_error(capsys, [*args, "infer.specialist=5"])
    assert "infer.specialist: 5 is not a checkpoint's index (0..0" in line and not out.exists()
    # a solution that lists one row id twice is refused, not scored
    sol = pd.read_csv(tiny_root / "test_solution.csv", dtype={"row_id": str})
    twice = pd.concat([sol, sol.iloc[[0]]], ignore_index=True)
    twice.to_csv(tmp_path / "sol.csv", index=False)
    sol.to_csv(tmp_path / "sub.csv", index=False)
    line = cli_error(capsys, ["score", "--solution", tmp_path / "sol.csv", "--submission", tmp_path / "sub.csv"])
    assert "1 row id(s) listed more than once in the solution" in line
    for flag in ("--files-per-class=-3", "--classes=0", "--test-soundscapes=0", "--train-soundscapes=-1"):
        with pytest.raises(SystemExit) as stop:
            main(["synth", "--out", str(tmp_path / "s"), flag])
        assert stop.value.code == 2 and not (tmp_path / "s").exists(), flag


def test_a_run_without_best_pt_falls_back_to_last_pt_and_says_so(trained_run, tmp_path, caplog):
    _, _, run_dir = trained_run
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(run_dir / "last.pt", run / "last.pt")
    with caplog.at_level(logging.WARNING, logger="birdsed.models.build"):
        assert resolve_checkpoint(run) == run / "last.pt"
    assert "no best.pt in the run folder; using last.pt" in caplog.text


def test_pickle_payload_in_best_pt_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    bad = tmp_path / "best.pt"
    bad.write_bytes(pickle.dumps(_Payload(marker)))
    line = cli_error(capsys, ["export", "--checkpoint", bad, "--format", "onnx", "--out", tmp_path / "e"])
    assert "best.pt" in line and not marker.exists()


def test_the_borderline_cases_decided(tmp_path, capsys):
    """A run name that is a path, a section that is a number, `--listen -5`, an 8-Hz WAV: refused, each named."""
    import numpy as np
    import soundfile as sf

    from birdsed.data.audio import AudioError, audio_info

    with pytest.raises(ConfigError, match=r"^name: '\.\./\.\./x' must be a plain name"):
        load_config(None, ["name=../../x"])
    path = tmp_path / "t.yaml"
    path.write_text("train: 5\n")
    with pytest.raises(ConfigError, match=r"t\.yaml: train: must be a section"):
        load_config(path)
    with pytest.raises(SystemExit) as stop:
        main(["report", str(tmp_path), "--out", str(tmp_path / "r.html"), "--listen", "-5"])
    assert stop.value.code == 2
    sf.write(tmp_path / "slow.wav", np.zeros(400, dtype=np.float32), 8)
    with pytest.raises(AudioError, match=r"slow\.wav.*sample rate 8 Hz is below 1000 Hz"):
        audio_info(tmp_path / "slow.wav")
