"""Issue 49's named cases, each by its family: damaged files birdsed owns or reads from a user, overrides that are
not plain values, settings that would allocate past the machine, outputs that are not birdsed's, the ledger under
concurrent writers, and one answer to "which soundscapes are labelled"."""

from __future__ import annotations

import multiprocessing
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from birdsed.config.load import load_config
from birdsed.data.soundscapes import read_labelled_windows
from birdsed.errors import ConfigError
from birdsed.ownership import LEDGER, _ledger, record_output
from tests.conftest import cli_error


@pytest.mark.parametrize(
    "override, says",
    [
        ('name=!!python/object/apply:os.system ["touch x"]', "not a plain YAML value"),
        ("infer.tta_shifts=[0,", "not a plain YAML value"),
        ("infer.tta_shifts=[[0,1]]", "infer.tta_shifts: a list of plain values"),
        ("infer.window_seconds=0.5", "infer.window_seconds: 0.5 s"),
        ("infer.window_seconds=4.5", "whole number of seconds"),
    ],
)
def test_overrides_are_plain_values_of_the_keys_type_and_windows_fit_the_row_id_grid(override, says, tmp_path):
    with pytest.raises(ConfigError, match=r".*") as err:
        load_config("configs/demo.yaml", [override, "infer.context_seconds=5"])
    assert says in str(err.value)
    assert not (Path.cwd() / "x").exists()


def test_a_stride_whose_chunks_pass_the_machines_memory_is_refused_with_an_estimate(monkeypatch):
    from birdsed import rules

    monkeypatch.setattr(rules, "machine_memory", lambda: 24 * 2**30)
    with pytest.raises(ConfigError, match=r"teacher.stride: 0.0001 s makes 50,000 chunks .* GiB held at once"):
        load_config(None, ["teacher.infer=birdnet", "teacher.stride=0.0001"])
    load_config(None, ["teacher.infer=birdnet", "teacher.stride=0.01"])  # 500 chunks a window: held a window at a time


def test_the_teacher_holds_a_bounded_number_of_chunks_at_once():
    from birdsed.teacher.birdnet_tflite import CHUNK_BUDGET, window_outputs

    sr, chunk = 4800, 14400  # a tenth of BirdNET's rate: the same arithmetic, small arrays
    seen = []

    def run(x):
        seen.append(x.nbytes)
        return np.zeros((len(x), 2), np.float32), None

    wave = np.random.default_rng(0).normal(size=60 * sr).astype(np.float32)
    scores, _ = window_outputs(wave, run, sr, chunk, stride=0.01, window=5.0, rule="inside")
    assert scores.shape == (12, 2) and max(seen) <= max(CHUNK_BUDGET, 201 * chunk * 4)


@pytest.mark.parametrize("shape", ["header_only", "trailing_commas", "bom_crlf"])
def test_a_labels_csv_as_spreadsheets_write_it_is_read_or_refused_naming_the_file(tiny_root26, tmp_path, shape):
    from birdsed.data.folder import DataError, load_birdclef

    src = (tiny_root26 / "train_soundscapes_labels.csv").read_text()
    path = tmp_path / "labels.csv"
    if shape == "header_only":
        path.write_text(src.splitlines()[0] + "\n")
    elif shape == "trailing_commas":
        path.write_text("".join(line + ",\n" for line in src.splitlines()))
    else:
        path.write_bytes(b"\xef\xbb\xbf" + src.replace("\n", "\r\n").encode())
    classes = load_birdclef(tiny_root26).classes
    if shape == "header_only":
        with pytest.raises(DataError, match=re.escape(f"{path}: lists no window")):
            read_labelled_windows(path, tiny_root26 / "train_soundscapes", classes)
        return
    got = read_labelled_windows(path, tiny_root26 / "train_soundscapes", classes)
    want = read_labelled_windows(
        tiny_root26 / "train_soundscapes_labels.csv", tiny_root26 / "train_soundscapes", classes
    )
    assert got.table["row_id"].tolist() == want.table["row_id"].tolist()
    np.testing.assert_array_equal(got.targets, want.targets)


def test_grouping_by_site_without_a_site_in_the_name_pattern_is_refused():
    with pytest.raises(ConfigError, match=re.escape("data.val_group: site, but data.name_pattern has no")):
        load_config(None, ["data.val_group=site", "data.name_pattern=^(?P<number>\\d+)$"])


def test_a_checkpoint_whose_class_list_was_edited_or_dropped_is_a_clean_error(trained_run, tmp_path, capsys):
    from birdsed.models.build import CheckpointError, load_checkpoint

    _, _, run = trained_run
    payload = torch.load(run / "best.pt", weights_only=True)
    edited = dict(payload, classes=payload["classes"][:-1])
    torch.save(edited, tmp_path / "edited.pt")
    with pytest.raises(
        CheckpointError, match=re.escape("edited.pt: damaged birdsed checkpoint: its weights do not fit")
    ):
        load_checkpoint(tmp_path / "edited.pt")
    dropped = {k: v for k, v in payload.items() if k != "classes"}
    torch.save(dropped, tmp_path / "dropped.pt")
    with pytest.raises(CheckpointError, match=re.escape("dropped.pt: damaged birdsed checkpoint: no classes")):
        load_checkpoint(tmp_path / "dropped.pt")
    twice = dict(payload, classes=[payload["classes"][0]] * len(payload["classes"]))
    torch.save(twice, tmp_path / "twice.pt")
    with pytest.raises(CheckpointError, match=re.escape("names a class twice")):
        load_checkpoint(tmp_path / "twice.pt")


def test_a_truncated_agile_model_or_embeddings_file_names_the_file(tmp_path):
    from birdsed.teacher.agile import AgileError, load_agile, read_embeddings

    np.savez(tmp_path / "full.npz", row_id=np.array(["a_5"]), embeddings=np.zeros((1, 4), np.float32))
    data = (tmp_path / "full.npz").read_bytes()
    (tmp_path / "agile.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "x.embeddings.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(AgileError, match=re.escape("agile.npz: not an agile model, or damaged")):
        load_agile(tmp_path / "agile.npz")
    with pytest.raises(AgileError, match=re.escape("x.embeddings.npz: not a birdsed embeddings file, or damaged")):
        read_embeddings(tmp_path / "x.embeddings.npz")


def test_a_class_column_named_twice_is_refused_by_score(tmp_path, capsys):
    header = "row_id,a,b,a\n"
    (tmp_path / "sol.csv").write_text(header + "s_5,1,0,1\ns_10,0,1,0\n")
    (tmp_path / "sub.csv").write_text(header + "s_5,0.9,0.1,0.9\ns_10,0.1,0.9,0.1\n")
    line = cli_error(capsys, ["score", "--solution", tmp_path / "sol.csv", "--submission", tmp_path / "sub.csv"])
    assert "names column(s) ['a'] more than once" in line


def test_report_out_must_be_a_page_and_a_screenshot_replaces_only_its_own(tmp_path, capsys):
    line = cli_error(capsys, ["report", "--out", tmp_path / "r.json"])
    assert "r.json: the page is an .html file" in line
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"\x89PNG not birdsed's")
    line = cli_error(capsys, ["report", "--out", tmp_path / "r.html", "--screenshot", mine])
    assert "mine.png: exists and is not" in line and mine.read_bytes() == b"\x89PNG not birdsed's"


def _record(folder: str, start: int) -> None:
    for i in range(start, start + 100):
        path = Path(folder) / f"out{i}.csv"
        path.write_text(f"row_id\n{i}\n")
        record_output(path, "submission")


def test_two_processes_recording_outputs_at_once_lose_no_ledger_entry(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_record, args=(str(tmp_path), k * 100)) for k in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    assert len(_ledger(tmp_path)) == 200 and (tmp_path / LEDGER).is_file()


def test_choose_refuses_a_labelled_preds_csv_cut_mid_row(tiny_root26, tmp_path, capsys):
    """A run's held-out predictions cut short: refused naming the file, not chosen on fewer windows."""
    from birdsed.data.folder import load_birdclef
    from birdsed.scoring.metrics import SubmissionError
    from birdsed.study.choose import ChooseError, held_out_rows

    data = load_birdclef(tiny_root26)
    lw = read_labelled_windows(tiny_root26 / "train_soundscapes_labels.csv", tiny_root26 / "train_soundscapes",
                               data.classes, n_folds=2)  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    rows = lw.table["fold"].to_numpy() == 0
    lines = ["row_id," + ",".join(data.classes)]
    lines += [rid + "," + ",".join(["0.5"] * len(data.classes)) for rid in lw.table["row_id"][rows]]
    (run / "labelled_preds.csv").write_text("\n".join(lines) + "\n")
    assert next(iter(held_out_rows([run], lw, data.classes).values())).tolist() == np.flatnonzero(rows).tolist()
    text = "\n".join(lines)
    (run / "labelled_preds.csv").write_text(text[: len(text) - len(lines[-1]) // 2])  # the last row cut in two
    with pytest.raises(SubmissionError, match=r"labelled_preds\.csv line \d+: .* damaged"):
        held_out_rows([run], lw, data.classes)
    (run / "labelled_preds.csv").write_text("\n".join(lines[:-1]) + "\n")  # a whole row lost
    with pytest.raises(ChooseError, match=re.escape("labelled_preds.csv: damaged")):
        held_out_rows([run], lw, data.classes)


def test_labels_given_by_path_keep_the_labelled_files_out_of_the_pool_everywhere(tiny_root26, tmp_path):
    from birdsed.data.folder import load_data

    root = tmp_path / "root"
    shutil.copytree(tiny_root26, root)
    labels = tmp_path / "elsewhere.csv"
    (root / "train_soundscapes_labels.csv").rename(labels)
    cfg = load_config(None, [f"data.root={root}", f"data.soundscape_labels={labels}"])
    data = load_data(cfg)
    assert data.labelled_files and not {p.name for p in data.unlabelled_soundscapes} & data.labelled_files
    assert not load_data(load_config(None, [f"data.root={root}"])).labelled_files  # auto: none beside it


def test_a_run_folder_with_a_users_file_is_not_replaced_by_overwrite(trained_run, tmp_path):
    from birdsed.training.runs import RunExistsError, check_run_dir, foreign_run_files

    _, _, run = trained_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert foreign_run_files(copy) == []  # every file a real run writes is known
    check_run_dir(copy, overwrite=True, resume=False)
    (copy / "notes.txt").write_text("mine\n")
    with pytest.raises(
        RunExistsError, match=re.escape("holds 1 file(s) birdsed does not write in a run folder (notes.txt)")
    ):
        check_run_dir(copy, overwrite=True, resume=False)
    assert (copy / "notes.txt").read_text() == "mine\n"


def test_an_output_folder_is_birdseds_by_content_and_never_through_a_link(tmp_path):
    from birdsed.outputs import OutputError
    from birdsed.ownership import check_dir_output, mark_output, seal_output

    folder = tmp_path / "teacher"
    folder.mkdir()
    mark_output(folder, "teacher")
    (folder / "test_soundscapes.csv").write_text("row_id\n")
    seal_output(folder, "teacher")
    check_dir_output(folder, kind="teacher", overwrite=True)  # its own, unchanged: replaceable
    with pytest.raises(OutputError, match="pass --overwrite"):
        check_dir_output(folder, kind="teacher", overwrite=False)
    (folder / "test_soundscapes.csv").write_text("row_id\nmy edit\n")
    with pytest.raises(OutputError, match=re.escape("test_soundscapes.csv (changed since birdsed wrote it)")):
        check_dir_output(folder, kind="teacher", overwrite=True)
    link = tmp_path / "link"
    link.symlink_to(folder)
    with pytest.raises(OutputError, match="is a symbolic link"):
        check_dir_output(link, kind="teacher", overwrite=True)


def test_a_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    import os

    from birdsed import ownership as outputs

    target = tmp_path / "bundle"
    target.mkdir()
    (target / "old.txt").write_text("old")
    real = os.replace
    calls = []

    def flaky(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # the new folder into place
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(outputs.os, "replace", flaky)
    with pytest.raises(outputs.OutputError), outputs.staged_dir(target) as stage:
        (stage / "new.txt").write_text("new")
    assert (target / "old.txt").read_text() == "old" and not (target / "new.txt").exists()


@pytest.mark.parametrize("key", ["data.batch_size", "infer.batch_size", "student.batch_size"])
def test_a_batch_past_the_machines_memory_is_refused_before_it_allocates(monkeypatch, key):
    from birdsed import rules

    monkeypatch.setattr(rules, "machine_memory", lambda: 24 * 2**30)
    with pytest.raises(ConfigError, match=re.escape(f"{key}: one batch holds ≈")):
        load_config(None, [f"{key}=100000000"])
    load_config(None, [f"{key}=64"])


def test_a_teacher_table_or_submission_cut_mid_row_is_damaged_not_no_opinion(tmp_path):
    from birdsed.scoring.metrics import SubmissionError
    from birdsed.teacher.birdnet_tflite import read_teacher

    text = "row_id,a,b\ns_5,0.1,0.2\ns_10,0.3,0.4\n"
    (tmp_path / "t.csv").write_text(text[:-5])  # the last row cut in two
    with pytest.raises(SubmissionError, match=re.escape("t.csv line 3: 2 field(s), the header has 3")):
        read_teacher(tmp_path / "t.csv", ["a", "b"])
    (tmp_path / "t.csv").write_text(text)
    assert read_teacher(tmp_path / "t.csv", ["a", "b"]).shape == (2, 2)
