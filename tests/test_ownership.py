"""Ownership by marker (issue 40): birdsed replaces a file or folder only where its own marker says birdsed wrote
it, unchanged since; a user's file that looks like an output (a solution CSV, a folder holding a ``model.json``) is
never replaced, whatever the flags; what a killed writer left beside an output is swept."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from birdsed.cli import main
from birdsed.outputs import OutputError
from birdsed.ownership import OUTPUT_MARKER, check_dir_output, check_file_output, foreign_files, staged_dir
from tests.conftest import cli_error, cli_run, snapshot


def _same(before: dict, path: Path) -> bool:
    return snapshot(path) == before


def test_infer_never_replaces_a_csv_birdsed_did_not_write(trained_run, tiny_root, tmp_path, capsys):
    _, _, run_dir = trained_run
    data = Path(shutil.copytree(tiny_root, tmp_path / "d"))
    key = data / "test_solution.csv"
    before = key.read_bytes()
    args = ["infer", "--checkpoint", run_dir, "--soundscapes", data / "test_soundscapes"]
    line = cli_error(capsys, [*args, "--out", key])
    assert "exists and is not a submission CSV birdsed wrote" in line and key.read_bytes() == before
    out = tmp_path / "sub.csv"
    assert main([*map(str, args), "--out", str(out)]) == 0
    assert main([*map(str, args), "--out", str(out)]) == 0  # its own output: replaced
    out.write_text(out.read_text().replace("0.", "0.1", 1))  # changed by hand since: the user's now
    line = cli_error(capsys, [*args, "--out", out])
    assert "or it was changed since" in line


def test_a_folder_is_birdseds_only_by_its_marker_and_only_with_the_files_it_wrote(tmp_path):
    user = tmp_path / "m"
    user.mkdir()
    (user / "model.json").write_text("{}")
    (user / "notes.txt").write_text("x")
    before = snapshot(user)
    for kind in ("export", "bundle", "teacher", "agile", "synth"):
        with pytest.raises(OutputError, match="birdsed replaces only its own outputs"):
            check_dir_output(user, kind=kind, overwrite=True)
    assert _same(before, user)
    # a finished export folder lists its files; one added by hand makes it the user's
    out = tmp_path / "e"
    with staged_dir(out) as stage:
        (stage / OUTPUT_MARKER).write_text("export\n")
        (stage / "model.json").write_text("{}")
    lines = (out / OUTPUT_MARKER).read_text().splitlines()  # each file with its content's SHA-256
    assert lines[0] == "export" and [line.split("\t")[0] for line in lines[1:]] == ["model.json"]
    check_dir_output(out, kind="export", overwrite=True)  # ours, unchanged: may be replaced
    (out / "notes.txt").write_text("mine")
    assert foreign_files(out) == ["notes.txt"]
    with pytest.raises(OutputError, match=r"holds 1 file\(s\) birdsed did not write \(notes\.txt\)"):
        check_dir_output(out, kind="export", overwrite=True)


def test_synth_replaces_only_its_own_dataset(tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thesis.txt").write_text("years of work")
    line = cli_error(capsys, ["synth", "--out", notes, "--overwrite", "--classes", "2", "--files-per-class", "1"])
    assert "is not a `birdsed synth` dataset" in line and (notes / "thesis.txt").read_text() == "years of work"
    small = ["--classes", "2", "--files-per-class", "1", "--train-soundscapes", "1", "--test-soundscapes", "1"]
    out = tmp_path / "s"
    assert main(["synth", "--out", str(out), *small]) == 0
    line = cli_error(capsys, ["synth", "--out", out, *small])
    assert "pass --overwrite" in line
    assert main(["synth", "--out", str(out), "--overwrite", *small]) == 0


def test_what_a_killed_writer_left_is_swept_and_a_live_ones_kept(tmp_path):
    out = tmp_path / "bundle"
    dead = tmp_path / ".bundle.partial-999999999"  # no such process
    dead.mkdir()
    (dead / "half").write_text("x")
    live = tmp_path / f".bundle.partial-{os.getppid()}"
    live.mkdir()
    with staged_dir(out) as stage:
        (stage / "a").write_text("a")
    assert not dead.exists() and live.exists() and (out / "a").is_file()


def test_reports_of_a_cut_off_oof_csv_name_the_file(trained_run, tmp_path, capsys):
    _, _, run_dir = trained_run
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    text = (run / "oof.csv").read_text()
    (run / "oof.csv").write_text(text[: len(text) - 7])
    line = cli_error(capsys, ["report", run, "--out", tmp_path / "r.html"])
    assert "oof.csv: birdsed's own file cannot be read back" in line and not (tmp_path / "r.html").exists()


def test_onnx_inference_writes_nothing_into_the_working_folder(trained_run, tiny_root, tmp_path):
    _, _, run_dir = trained_run
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "BIRDSED_CACHE": str(tmp_path / "bc")}
    out = tmp_path / "sub.csv"
    run = cli_run(
        ["infer", "--checkpoint", run_dir / "best.pt", "--soundscapes", tiny_root / "test_soundscapes",
         "infer.runtime=onnx", "--out", out],
        cwd=work, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert list(work.iterdir()) == [] and any((tmp_path / "bc" / "exports").iterdir())


def test_check_file_output_refuses_score_and_report_files_it_did_not_write(tmp_path):
    fake = tmp_path / "score.json"
    fake.write_text('{\n  "macro_auc": 1}')  # begins like one, but birdsed never wrote it
    with pytest.raises(OutputError, match="birdsed replaces only its own outputs"):
        check_file_output(fake, kind="score")
