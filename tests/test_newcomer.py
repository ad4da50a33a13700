"""The newcomer's path (issue 41): one meaning per argument, honest timings, a line that says what was blended."""

from __future__ import annotations

import pandas as pd

from birdsed.config.load import load_config
from birdsed.inference.budget import Budget, measure
from birdsed.inference.submit import describe_entry, load_ensemble
from birdsed.kaggle.bundle import setting_files
from birdsed.teacher.source import TeacherTable
from tests.conftest import cli_error


def test_budget_gives_its_spread_and_says_when_the_machine_is_busy(trained_run):
    cfg, _, run_dir = trained_run
    members = load_ensemble([run_dir], cfg.infer, "cpu")
    b = measure(members, cfg.infer, soundscapes=10, repeats=3)
    lo, hi = b.projected_range
    assert 0 < b.projected_minutes <= lo <= hi and b.load >= 0  # the projection: the fastest decode + fastest models
    assert Budget(1, 1, 2, 1, 90, (1, 1), load=6.0).busy and not Budget(1, 1, 2, 1, 90, (1, 1), load=1.0).busy


def test_infer_names_what_it_blended(trained_run):
    cfg, _, run_dir = trained_run
    members = load_ensemble([run_dir], cfg.infer, "cpu")
    columns = list(members[0].classes)
    assert describe_entry(cfg, members, None, columns).endswith("; no teacher")
    table = pd.DataFrame({c: [0.5] if k < 2 else [float("nan")] for k, c in enumerate(columns)}, index=["x_5"])
    teacher = TeacherTable(table, [columns[1]])
    cfg = load_config(None, ["teacher.infer=t.csv", "teacher.infer_weight=0.75", "teacher.agile_fill_weight=1"])
    line = describe_entry(cfg, members, teacher, columns)
    assert "share 0.75 on its 1 class(es), 1 on the 1 only the agile model knows" in line
    assert line.endswith(f"our models alone on {len(columns) - 2}")


def test_an_agile_folder_means_the_same_in_bundle_as_in_infer(tmp_path, capsys):
    folder = tmp_path / "agile"
    folder.mkdir()
    (folder / "agile.npz").write_bytes(b"x")
    cfg = load_config(None, [f"teacher.agile={folder}", "teacher.infer=birdnet"])
    assert setting_files(cfg) == (folder / "agile.npz", None)
    missing = tmp_path / "nothing"
    line = cli_error(
        capsys,
        ["bundle", "--checkpoint", tmp_path, "--kaggle-user", "me", "--out", tmp_path / "b", f"teacher.agile={missing}",
         "teacher.infer=birdnet", "--no-dry-run"],
    )  # fmt: skip
    assert "teacher.agile:" in line and "not found" in line and not (tmp_path / "b").exists()


def test_listen_on_a_submission_draws_the_frames_of_the_checkpoint_it_came_from(trained_run, tiny_root, tmp_path):
    import json

    from birdsed.cli import main

    _, _, run_dir = trained_run
    sub = tmp_path / "sub.csv"
    args = ["infer", "--checkpoint", run_dir, "--soundscapes", tiny_root / "test_soundscapes", "--out", sub]
    assert main([*map(str, args), "--no-progress"]) == 0
    out = tmp_path / "r.html"
    args = ["report", "--solution", tiny_root / "test_solution.csv", "--submission", sub, "--listen", "1", "--out", out]
    assert main(list(map(str, args))) == 0
    listening = json.loads(out.with_suffix(".json").read_text())["listening"]
    assert listening["frames"] is True and listening["windows"]


def test_a_long_step_logs_its_progress_when_no_bar_is_drawn(caplog):
    import logging

    from birdsed.outputs import _LogProgress, progress

    assert isinstance(progress(range(3), wanted=False), _LogProgress)  # (pytest's output is no terminal either)
    with caplog.at_level(logging.INFO, logger="birdsed.outputs"):
        bar = _LogProgress(range(4), desc="teacher train_soundscapes", unit="file", every=0.0)
        assert list(bar) == [0, 1, 2, 3]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and lines[-1].startswith("teacher train_soundscapes: 4/4 file(s) (")
    assert "min left" in lines[0]
