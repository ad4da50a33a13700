"""The bad-input corpus, run through the CLI as a user would.

Every case checks the exit status, a single ``error: <file or key>: <what is wrong>`` line that names the culprit,
no traceback, and that nothing written before (an old run, a dataset, a submission) was lost or half-written.
The troubleshooting page (docs/troubleshooting.md) lists the same cases.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from birdsed.cli import main
from tests.conftest import REPO, cli_error, cli_run, read_only, snapshot, tiny_overrides, tone, write

CONFIG = REPO / "configs" / "demo.yaml"


@pytest.fixture
def data(tiny_root: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny synthetic dataset, free to break."""
    return Path(shutil.copytree(tiny_root, tmp_path / "data"))


def _main(args: list) -> int:
    return main([str(a) for a in args])


def _cfg_args(root: Path, cache: Path, *over: str) -> list[str]:
    return [CONFIG, *tiny_overrides(root, cache), *over]


# ---- configuration: each fails at validation, naming the key, the value and what is allowed --------------------
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.devices=abc", "train.devices: 'abc' is not 'auto', a device count"),
        ("train.threads=-1", "train.threads: must be >= 0, got -1"),
        ("train.samples_per_epoch=-5", "train.samples_per_epoch: must be >= 0, got -5"),
        ("data.n_folds=1", "data.n_folds: must be >= 2, got 1"),
        ("train.lr=inf", "train.lr: must be a finite number, got inf"),
        ("train.lr=nan", "train.lr: must be a finite number"),
        ("data.crop_mode=middle", "data.crop_mode: 'middle' is not one of first_random"),
        ("train.epochs=0", "train.epochs: must be > 0, got 0"),
        ("model.dropout=1.5", "model.dropout: must be in [0, 1], got 1.5"),
        ("train.nosuchkey=1", "train.nosuchkey"),
        ("infer.runtime=onnx infer.precision=bf16", "infer.precision: bf16 needs"),
    ],
)
def test_bad_config_values_fail_before_any_data_is_read(override, expected, tmp_path, capsys):
    # data.root does not exist: a config error must come first
    line = cli_error(capsys, ["train", f"data.root={tmp_path / 'nope'}", *override.split(), "--out", tmp_path / "r"])
    assert expected in line
    assert not (tmp_path / "r").exists()


def test_yaml_whose_top_level_is_a_list(tmp_path, capsys):
    bad = tmp_path / "list.yaml"
    bad.write_text("- train\n- data\n")
    assert "top level must be a mapping" in cli_error(capsys, ["prepare", bad])
    (tmp_path / "syntax.yaml").write_text("train: {lr: [\n")
    assert "syntax.yaml: cannot parse" in cli_error(capsys, ["prepare", tmp_path / "syntax.yaml"])


def test_every_yaml_birdsed_reads_refuses_a_duplicate_key(tmp_path, capsys):
    """A repeated key is an error naming the file, the key and both lines (PyYAML alone keeps the last one): a
    config, a study file (two variants of one name) and a teacher mapping."""
    (tmp_path / "cfg.yaml").write_text("train:\n  lr: 1.0e-3\n  epochs: 2\n  lr: 3.0e-4\n")
    line = cli_error(capsys, ["prepare", tmp_path / "cfg.yaml"])
    assert "cfg.yaml: cannot parse: line 4: duplicate key 'lr' (first on line 2)" in line
    (tmp_path / "study.yaml").write_text(
        "command: train\nconfig: configs/demo.yaml\nvariants:\n  a: {}\n  b: {train.lr: 0.1}\n  a: {train.lr: 0.2}\n"
    )
    line = cli_error(capsys, ["study", tmp_path / "study.yaml", "--out", tmp_path / "s"])
    assert "study.yaml: cannot parse: line 6: duplicate key 'a' (first on line 4)" in line
    assert not (tmp_path / "s").exists()
    from birdsed.teacher.birdnet_tflite import TeacherError, read_overrides

    (tmp_path / "map.yaml").write_text("eurrob1: Erithacus rubecula\neurrob1: Turdus merula\n")
    with pytest.raises(TeacherError, match=r"map\.yaml: cannot parse \(line 2: duplicate key 'eurrob1'"):
        read_overrides(tmp_path / "map.yaml")
    (tmp_path / "empty.yaml").write_text("")
    from birdsed.config import Config
    from birdsed.config.load import load_config

    assert load_config(tmp_path / "empty.yaml") == load_config(None) == Config()  # an empty config: the defaults


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["budget", "--checkpoint", "x", "--cores", "0"], "--cores: must be > 0, got 0"),
        (["budget", "--checkpoint", "x", "--minutes", "nan"], "--minutes: must be > 0, got nan"),
        (["score", "--solution", "a", "--submission", "b", "--threshold", "nan"], "--threshold: must be in [0, 1]"),
        (["train", "--overwrite", "--resume"], "--resume: not allowed with argument --overwrite"),
        (["pseudo", "--overwrite", "--resume"], "--resume: not allowed with argument --overwrite"),
    ],
)
def test_bad_arguments_are_usage_errors(args, expected, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


# ---- data folders -----------------------------------------------------------------------------------------------
def _edit_train(root: Path, fn) -> Path:
    train = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    fn(train).to_csv(root / "train.csv", index=False)
    return root / "train.csv"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t.assign(primary_label=["nosuchbird", *t["primary_label"][1:]]), "absent from taxonomy.csv"),
        (lambda t: t.drop(columns="filename"), "missing column(s) filename"),
        (lambda t: pd.concat([t, t.iloc[:1]]), "listed more than once"),
        (  # one recording spelled three ways is still one recording
            lambda t: pd.concat(
                [
                    t,
                    t.iloc[:1].assign(filename="./" + t.filename[0].replace("/", "//")),
                    t.iloc[:1].assign(filename=t.filename[0].replace("/", "/./")),
                ]
            ),
            "1 recording(s) listed more than once",
        ),
        (lambda t: t.assign(filename=["../../escape.ogg", *t["filename"][1:]]), "leave train_audio/"),
        (lambda t: t.assign(filename=["/etc/passwd", *t["filename"][1:]]), "leave train_audio/"),
        (lambda t: t.assign(filename=["synbrd01/missing.ogg", *t["filename"][1:]]), "missing.ogg"),
    ],
)
def test_bad_train_csv_names_the_file(data, tmp_path, capsys, edit, expected):
    _edit_train(data, edit)
    line = cli_error(capsys, ["prepare", *_cfg_args(data, tmp_path / "cache")])
    assert "train.csv" in line and expected in line
    assert not (tmp_path / "cache").exists()  # nothing decoded, nothing written outside data.root


def test_missing_data_root_and_taxonomy(data, tmp_path, capsys):
    assert "data folder not found" in cli_error(capsys, ["prepare", f"data.root={tmp_path / 'nope'}"])
    (data / "taxonomy.csv").unlink()
    assert "taxonomy.csv: file not found" in cli_error(capsys, ["prepare", *_cfg_args(data, tmp_path / "c")])


def test_two_soundscapes_with_one_stem(data, tmp_path, capsys):
    write(data / "test_soundscapes" / "soundscape_0000.wav", tone(1000, 5, 32000), 32000)
    line = cli_error(capsys, ["prepare", *_cfg_args(data, tmp_path / "c")])
    assert "soundscape_0000.ogg and soundscape_0000.wav share the stem" in line


# ---- audio: unusable training files are skipped and listed, the rest is cached --------------------------------
def _audio_corpus(folder: Path) -> dict[str, str]:
    """Files of every troublesome kind: name → what prepare must say about it ('' for files that must work)."""
    folder.mkdir(parents=True, exist_ok=True)
    sr = 32000
    write(folder / "stereo.wav", tone(800, 6, sr, channels=2), sr)
    write(folder / "surround51.wav", tone(900, 6, sr, channels=6), sr)
    write(folder / "rate8k.flac", tone(1000, 6, 8000), 8000)
    write(folder / "rate96k.wav", tone(1200, 6, 96000), 96000)
    write(folder / "rate44k.mp3", tone(1500, 6, 44100), 44100)
    write(folder / "wav_named.ogg", tone(700, 6, sr), sr, format="WAV")  # wrong extension: decoded by content
    (folder / "empty.ogg").write_bytes(b"")
    (folder / "text.ogg").write_text("not audio at all\n" * 50)
    full = write(folder / "full.flac", tone(600, 20, sr), sr)
    (folder / "truncated.flac").write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    full.unlink()
    write(folder / "silent.wav", np.zeros(sr * 6, dtype=np.float32), sr)
    nan = tone(500, 6, sr)
    nan[sr : sr + 10] = np.nan
    write(folder / "nan.wav", nan, sr, subtype="FLOAT")
    write(folder / "one_sample.wav", np.full(1, 0.5, dtype=np.float32), sr, subtype="FLOAT")
    write(folder / "tenth.wav", tone(900, 0.1, sr), sr)
    return {
        "stereo.wav": "",
        "surround51.wav": "",
        "rate8k.flac": "",
        "rate96k.wav": "",
        "rate44k.mp3": "",
        "wav_named.ogg": "",
        "empty.ogg": "file is empty",
        "text.ogg": "not a readable audio file",
        "truncated.flac": "",  # decodes part-way or not at all: either way it is named if skipped
        "silent.wav": "is silent",
        "nan.wav": "NaN or infinite",
        "one_sample.wav": "is too short (1 samples, 0.000 s; at least 0.25 s)",  # would loop into a constant
        "tenth.wav": "is too short (3200 samples",
    }


def test_prepare_skips_and_lists_every_unusable_file(data, tmp_path, capsys):
    corpus = _audio_corpus(data / "train_audio" / "synbrd01")
    rows = [{"primary_label": "synbrd01", "secondary_labels": "['']", "filename": f"synbrd01/{n}"} for n in corpus]
    _edit_train(data, lambda t: pd.concat([t, pd.DataFrame(rows)], ignore_index=True).fillna(""))
    assert main(["prepare", *map(str, _cfg_args(data, tmp_path / "cache")), "--no-progress"]) == 0
    out = capsys.readouterr().out
    index = json.loads((tmp_path / "cache" / "index.json").read_text())["files"]
    for name, reason in corpus.items():
        key = f"train_audio/synbrd01/{name}"
        if reason:
            assert f"skipped {key}: " in out and reason in out.split(f"skipped {key}: ")[1].splitlines()[0]
            assert key not in index
        elif key not in index:
            assert name == "truncated.flac" and f"skipped {key}: " in out  # named, not silently lost
        else:
            assert index[key]["samples"] > 0
    assert index["train_audio/synbrd01/rate96k.wav"]["samples"] == pytest.approx(6 * 32000, abs=2)
    assert index["train_audio/synbrd01/rate8k.flac"]["source_rate"] == 8000


def test_infer_keeps_every_file_and_repairs_a_nan_stretch(trained_run, tmp_path, caplog, capsys):
    _, _, run_dir = trained_run
    folder = tmp_path / "sounds"
    corpus = _audio_corpus(folder)
    long_nan = tone(700, 60, 32000)
    long_nan[32000 * 31 : 32000 * 31 + 100] = np.nan  # one bad stretch in a minute
    write(folder / "long_nan.wav", long_nan, 32000, subtype="FLOAT")
    (folder / "gone.ogg").symlink_to(tmp_path / "nowhere.ogg")  # a dangling link: rows and a warning, like a bad file
    out = tmp_path / "sub.csv"
    with caplog.at_level("WARNING"):
        assert _main(["infer", "--checkpoint", run_dir, "--soundscapes", folder, "--out", out, "--no-progress"]) == 0
    sub = pd.read_csv(out)
    stems = sub["row_id"].str.rsplit("_", n=1).str[0]
    assert set(stems) == {Path(n).stem for n in [*corpus, "long_nan.wav", "gone.ogg"]}  # a row block for every file
    assert (stems == "long_nan").sum() == 12
    log = caplog.text
    assert "long_nan.wav: 100 non-finite sample(s) between 31.00 s and 31.00 s replaced by silence" in log
    fallback = [line for line in log.splitlines() if "use the fallback prior" in line]
    assert any("empty.ogg" in f for f in fallback) and any("text.ogg" in f for f in fallback)
    assert any("gone.ogg" in f and "a link to a file that does not exist" in f for f in fallback), fallback
    assert not any("long_nan" in f or "stereo" in f or "rate96k" in f for f in fallback)


# ---- checkpoints and submissions --------------------------------------------------------------------------------
def test_checkpoint_problems(trained_run, tiny_root, tmp_path, capsys):
    _, _, run_dir = trained_run
    sounds = tiny_root / "test_soundscapes"
    base = ["infer", "--soundscapes", sounds, "--out", tmp_path / "s.csv", "--no-progress"]
    assert "nope.pt: checkpoint not found" in cli_error(capsys, [*base, "--checkpoint", tmp_path / "nope.pt"])
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 100)
    assert "junk.pt: not a readable torch checkpoint" in cli_error(capsys, [*base, "--checkpoint", junk])
    other = tmp_path / "other.csv"
    pd.DataFrame({"row_id": ["a_5"], "x": [0.1], "y": [0.1]}).to_csv(other, index=False)
    line = cli_error(capsys, [*base, "--checkpoint", run_dir, "--sample-submission", other])
    assert "other.csv: none of its 2 classes is known to the checkpoint" in line
    (tmp_path / "empty.csv").write_text("")
    line = cli_error(capsys, [*base, "--checkpoint", run_dir, "--sample-submission", tmp_path / "empty.csv"])
    assert "empty.csv: cannot parse the sample submission" in line
    assert not (tmp_path / "s.csv").exists()


def test_partial_class_overlap_is_reported(trained_run, tiny_root, tmp_path, caplog):
    _, _, run_dir = trained_run
    sample = pd.read_csv(tiny_root / "sample_submission.csv").assign(newbird=0.1)
    sample.to_csv(tmp_path / "sample.csv", index=False)
    args = ["infer", "--checkpoint", run_dir, "--soundscapes", tiny_root / "test_soundscapes", "--no-progress"]
    with caplog.at_level("WARNING"):
        assert (
            main(
                [*map(str, args), "--sample-submission", str(tmp_path / "sample.csv"), "--out", str(tmp_path / "s.csv")]
            )
            == 0
        )
    assert "1 of 7 class(es) are unknown to every checkpoint and get the fallback prior: ['newbird']" in caplog.text


def test_score_names_the_bad_file(tiny_root, tmp_path, capsys):
    solution = tiny_root / "test_solution.csv"
    sub = pd.read_csv(tiny_root / "sample_submission.csv")
    pd.concat([sub, sub.iloc[:1]]).to_csv(tmp_path / "dup.csv", index=False)
    line = cli_error(capsys, ["score", "--solution", solution, "--submission", tmp_path / "dup.csv"])
    assert "dup.csv: 1 duplicate row_id(s)" in line
    sub.drop(columns=sub.columns[-1]).to_csv(tmp_path / "cols.csv", index=False)
    line = cli_error(capsys, ["score", "--solution", solution, "--submission", tmp_path / "cols.csv"])
    assert "cols.csv: columns differ from the solution" in line


def test_a_solution_without_positives_or_with_a_bad_cell_is_refused(tiny_root, tmp_path, capsys):
    """No class with a positive: Kaggle's metric is undefined, so no score (not macro_auc=nan beside a padded cmAP
    of 1.0); a non-numeric cell: named by row and column — in `score`, and in `train` before any training."""
    sol = pd.read_csv(tiny_root / "test_solution.csv", dtype={"row_id": str})
    sample = tiny_root / "sample_submission.csv"
    empty = sol.copy()
    empty.iloc[:, 1:] = 0
    empty.to_csv(tmp_path / "empty.csv", index=False)
    line = cli_error(capsys, ["score", "--solution", tmp_path / "empty.csv", "--submission", sample])
    assert "empty.csv: no class has a positive" in line
    bad = sol.astype({sol.columns[2]: object})
    bad.iat[3, 2] = "yes"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    line = cli_error(capsys, ["score", "--solution", tmp_path / "bad.csv", "--submission", sample])
    said = f"solution values must be 0 or 1; 1 are not, first 'yes' at row_id {sol.row_id[3]!r}"
    assert f"bad.csv: {said}" in line
    root = tmp_path / "root"
    shutil.copytree(tiny_root, root)
    bad.to_csv(root / "test_solution.csv", index=False)
    line = cli_error(capsys, ["train", *tiny_overrides(root, tmp_path / "cache"), "--out", tmp_path / "run"])
    assert (
        f"test_solution.csv: solution values must be 0 or 1; 1 are not, first 'yes' at row_id {sol.row_id[3]!r}" in line
    )
    assert not (tmp_path / "run" / "metrics.json").exists()  # no epoch was trained


# ---- outputs: checked before the work starts, never half-written, never lost -----------------------------------
def test_an_output_never_replaces_a_file_birdsed_did_not_write(trained_run, tiny_root, tmp_path, capsys):
    """`infer --out DATA/train.csv`, `--out RUN/last.pt`, `score --json DATA/taxonomy.csv`, `report --out
    RUN/metrics.html` (whose JSON would land on RUN/metrics.json): each refused, nothing changed; birdsed's own
    outputs of the same kind are replaced as before."""
    _, _, run_dir = trained_run
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    before = {**snapshot(root), **{f"run/{k}": v for k, v in snapshot(run).items()}}
    infer = ["infer", "--checkpoint", run, "--soundscapes", root / "test_soundscapes", "--no-progress"]
    for target in (root / "train.csv", run / "last.pt"):
        line = cli_error(capsys, [*infer, "--out", target])
        assert f"{target}: exists and is not a submission CSV birdsed wrote" in line
    score = ["score", "--solution", root / "test_solution.csv", "--submission", root / "sample_submission.csv"]
    assert "is not a `birdsed score --json` file" in cli_error(capsys, [*score, "--json", root / "taxonomy.csv"])
    line = cli_error(capsys, ["report", run, "--out", run / "metrics.html"])
    assert f"{run / 'metrics.json'}: exists and is not a `birdsed report` JSON" in line
    assert not (run / "metrics.html").exists()
    assert {**snapshot(root), **{f"run/{k}": v for k, v in snapshot(run).items()}} == before
    for _ in range(2):  # its own outputs: replaced
        assert main([*map(str, infer), "--out", str(tmp_path / "sub.csv")]) == 0
        assert main([*map(str, score), "--json", str(tmp_path / "score.json")]) == 0
        assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["entries"]


def test_unwritable_outputs_fail_first_with_one_line(trained_run, tiny_root, tmp_path, capsys):
    cfg, _, run_dir = trained_run
    sounds = tiny_root / "test_soundscapes"
    solution, sample = tiny_root / "test_solution.csv", tiny_root / "sample_submission.csv"
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "old.csv").write_text("keep me\n")
    (tmp_path / "a_dir").mkdir()
    infer = ["infer", "--checkpoint", run_dir, "--soundscapes", sounds, "--no-progress"]
    with read_only(ro):
        assert "ro: output folder is not writable" in cli_error(capsys, [*infer, "--out", ro / "sub.csv"])
        line = cli_error(capsys, ["train", *_cfg_args(tiny_root, cfg.cache_path), "--out", ro / "run"])
        assert "ro: output folder is not writable" in line
        line = cli_error(capsys, ["score", "--solution", solution, "--submission", sample, "--json", ro / "s.json"])
        assert "ro: output folder is not writable" in line
        line = cli_error(capsys, ["report", run_dir, "--out", ro / "r.html"])
        assert "ro: output folder is not writable" in line
        assert "ro: output folder's parent is not writable" in cli_error(
            capsys, ["export", "--checkpoint", run_dir, "--out", ro / "exp"]
        )
        assert "ro: output folder's parent is not writable" in cli_error(capsys, ["synth", "--out", ro / "s"])
        assert (ro / "old.csv").read_text() == "keep me\n"
    assert "a_dir: is an existing folder" in cli_error(capsys, [*infer, "--out", tmp_path / "a_dir"])
    line = cli_error(capsys, [*infer, "--sample-submission", sample, "--out", sample])
    assert "sample_submission.csv: is also an input" in line
    line = cli_error(capsys, [*infer, "--out", sounds / "soundscape_0000.ogg"])
    assert "soundscape_0000.ogg: is also an input" in line
    (tmp_path / "file").write_text("x")
    assert "file: exists and is a file" in cli_error(
        capsys, ["export", "--checkpoint", run_dir, "--out", tmp_path / "file"]
    )
    assert "a_dir: is an existing folder" in cli_error(
        capsys, ["score", "--solution", solution, "--submission", sample, "--json", tmp_path / "a_dir"]
    )
    assert not list(tmp_path.rglob("*.part"))


def test_overwrite_validates_before_it_deletes(trained_run, tmp_path, capsys):
    cfg, _, shared = trained_run
    run = Path(shutil.copytree(shared, tmp_path / "run"))
    before = snapshot(run)
    for bad in (f"data.root={tmp_path / 'typo'}", "train.lr=-1", f"data.solution={tmp_path / 'nope.csv'}"):
        args = ["train", CONFIG, *tiny_overrides(cfg.data.root, cfg.cache_path), bad, "--out", run, "--overwrite"]
        cli_error(capsys, args)
        assert snapshot(run) == before, bad
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    args = ["train", *_cfg_args(cfg.data.root, cfg.cache_path), "--out", precious, "--overwrite"]
    assert "replaces only birdsed run folders" in cli_error(capsys, args)
    args = ["pseudo", *_cfg_args(cfg.data.root, cfg.cache_path), "--out", precious, "--overwrite"]
    assert "replaces only birdsed run folders" in cli_error(capsys, args)
    assert (precious / "thesis.tex").read_text() == "years of work"
    assert "nothing to resume" in cli_error(
        capsys, ["train", *_cfg_args(cfg.data.root, cfg.cache_path), "--out", tmp_path / "new", "--resume"]
    )


def test_synth_refuses_to_overwrite_a_dataset(data, tmp_path, capsys):
    before = snapshot(data)
    assert "pass --overwrite" in cli_error(capsys, ["synth", "--out", data, "--classes", "3"])
    assert "--classes: need at least 2" in cli_error(capsys, ["synth", "--out", tmp_path / "x", "--classes", "1"])
    assert snapshot(data) == before and not (tmp_path / "x").exists()


# ---- caches: read-only use and concurrent writers ----------------------------------------------------------------
def test_complete_cache_is_used_read_only(tiny_root, tmp_path, capsys):
    cache = tmp_path / "cache"
    args = ["prepare", *map(str, _cfg_args(tiny_root, cache)), "--include-test", "--no-progress"]
    assert main(args) == 0
    before = snapshot(cache)
    with read_only(cache):
        assert main(args) == 0  # Kaggle-style read-only input: nothing to write, nothing written
        assert "30 already current" in capsys.readouterr().out
        no_noise = ["augment.background_dir=''", "augment.background_prob=0"]  # prepare does not cache backgrounds
        train = ["train", *_cfg_args(tiny_root, cache), *no_noise, "train.epochs=1", "--out", tmp_path / "run"]
        assert main([str(a) for a in train]) == 0
    assert snapshot(cache) == before
    empty = tmp_path / "empty_cache"
    empty.mkdir()
    with read_only(empty):
        line = cli_error(capsys, ["prepare", *_cfg_args(tiny_root, empty)])
    assert "empty_cache: the waveform cache lacks 27 file(s) and cannot be written" in line
    assert "set data.cache_dir to a writable folder" in line


def test_two_prepares_on_one_cache_do_not_race(tiny_root, tmp_path):
    cache = tmp_path / "cache"
    args = [sys.executable, "-m", "birdsed", "prepare", *map(str, _cfg_args(tiny_root, cache)), "--no-progress"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    cached = [int(o.strip().splitlines()[-1].split("cached ")[1].split(" ")[0]) for o, _ in outs]
    assert sorted(cached) == [0, 27]  # one decoded everything, the other waited and found it current
    index = json.loads((cache / "index.json").read_text())["files"]
    assert len(index) == 27 and all(v["samples"] > 0 for v in index.values())


# ---- interruption -----------------------------------------------------------------------------------------------
def test_ctrl_c_stops_parallel_inference_promptly(trained_run, tiny_root, tmp_path):
    _, _, run_dir = trained_run
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(1000):  # ~80 files/s on 2 idle cores: well over the second before the interrupt
        os.link(tiny_root / "test_soundscapes" / "soundscape_0000.ogg", folder / f"s{i:04d}.ogg")
    out = tmp_path / "sub.csv"
    args = ["infer", "--checkpoint", run_dir, "--soundscapes", folder, "--out", out, "infer.runtime=onnx"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "birdsed", *map(str, args), "infer.workers=2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    seen = ""
    while "predicting 1000 file(s)" not in seen:  # the log line as the files start (no bar: stderr is a pipe)
        seen += proc.stderr.read(1)
        assert proc.poll() is None, seen
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    t0 = time.time()
    _, err = proc.communicate(timeout=60)
    assert time.time() - t0 < 20
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "error: birdsed infer: interrupted; nothing half-written was kept"
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".*.part"))


def test_cli_run_as_a_user_prints_one_line(tmp_path):
    done = cli_run(["train", "train.lr=inf", "--out", tmp_path / "r"])
    assert (
        done.returncode == 1
        and done.stderr.strip().splitlines()[-1] == "error: train.lr: must be a finite number, got inf"
    )
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_worker_processes_die_with_their_parent(tmp_path):
    """`kill -9` of a command (prepare, synth, study --jobs) takes its pool's workers with it: each worker is started
    with birdsed.outputs.die_with_parent, as they are."""
    script = tmp_path / "pool.py"
    script.write_text(
        "import os, sys, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from birdsed.outputs import die_with_parent\n"
        "pool = ProcessPoolExecutor(2, initializer=die_with_parent, initargs=(os.getpid(),))\n"
        "pids = {pool.submit(os.getpid).result() for _ in range(8)}\n"
        "[pool.submit(time.sleep, 60) for _ in range(2)]\n"
        "print(' '.join(map(str, pids)), flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    workers = [int(p) for p in proc.stdout.readline().split()]
    assert workers and all(Path(f"/proc/{p}").exists() for p in workers)
    proc.kill()
    proc.wait()
    deadline = time.time() + 10
    while any(_alive(p) for p in workers) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in workers), "a worker outlived its killed parent"


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie waiting for its reaper."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file-size limits")
@pytest.mark.parametrize("workers", [1, 2])
def test_prepare_on_a_full_disk_is_one_line_naming_the_cache_file(tiny_root, tmp_path, workers):
    """A file-size limit (what a full disk looks like to a writer) while decoding: exit 1 naming the cache file, not
    exit 0 with the recordings blamed as unusable, no traceback, and no `.part` file left."""
    import resource

    cache = tmp_path / "cache"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))  # bytes: less than one recording in float16

    args = ["prepare", *_cfg_args(tiny_root, cache, f"data.prepare_workers={workers}"), "--no-progress"]
    done = cli_run(args, preexec_fn=limit)
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr and "skipped as unusable" not in done.stdout
    assert re.search(r"error: \S+\.f16: cannot write the cache \(File too large\)", done.stderr), done.stderr[-800:]
    assert not list(cache.rglob("*.part"))


def test_a_damaged_export_folder_is_named_not_a_traceback(trained_run, tiny_root, tmp_path, capsys):
    """An export folder whose model.onnx is truncated or missing, or whose model.json is cut off or foreign (a disk
    that filled, a copy cut short): infer exits 1 naming the file."""
    _, _, run_dir = trained_run
    exp = tmp_path / "exp"
    assert main(["export", "--checkpoint", str(run_dir), "--format", "onnx", "--out", str(exp)]) == 0
    infer = ["infer", "--soundscapes", tiny_root / "test_soundscapes", "infer.runtime=onnx", "--no-progress"]
    cases = {
        "truncated onnx": ("model.onnx", lambda b: b[: len(b) // 3], "model.onnx: cannot be loaded"),
        "missing onnx": ("model.onnx", None, "model.onnx: cannot be loaded"),
        "cut json": ("model.json", lambda b: b[: len(b) // 2], "model.json: not a readable birdsed export"),
        "foreign json": ("model.json", lambda b: b'{"name": "x"}', "model.json: not a birdsed export description"),
    }
    for i, (name, edit, said) in cases.items():
        folder = tmp_path / i.replace(" ", "_")
        shutil.copytree(exp, folder)
        if edit is None:
            (folder / name).unlink()
        else:
            (folder / name).write_bytes(edit((folder / name).read_bytes()))
        line = cli_error(capsys, [*infer, "--checkpoint", folder, "--out", tmp_path / f"{folder.name}.csv"])
        assert said in line, (i, line)
        assert not (tmp_path / f"{folder.name}.csv").exists()


def test_folder_outputs_never_replace_what_birdsed_did_not_write(trained_run, tiny_root, tmp_path, capsys):
    """bundle/export/teacher/agile `--out` onto a run, a dataset folder or a user's folder is refused, with or
    without --overwrite, and nothing in it changes; birdsed's own export folder is replaced whole."""
    cfg, _, run_dir = trained_run
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("my notes")
    sounds = Path(shutil.copytree(tiny_root / "test_soundscapes", tmp_path / "sounds"))
    before = {d.name: snapshot(d) for d in (run, notes, sounds)}
    bundle = ["bundle", "--checkpoint", run, "--kaggle-user", "me", "--no-dry-run", "--overwrite"]
    assert f"{run}: holds {run}, an input of this command" in cli_error(capsys, [*bundle, "--out", run])
    assert "is not a `birdsed bundle` folder" in cli_error(capsys, [*bundle, "--out", notes])
    export = ["export", "--checkpoint", run / "best.pt"]
    assert "holds" in cli_error(capsys, [*export, "--out", run])  # would make the run infer from the ONNX copy
    for folder in (notes, sounds):
        assert f"{folder}: exists and is not a `birdsed export` folder" in cli_error(capsys, [*export, "--out", folder])
    cfg_args = _cfg_args(tiny_root, cfg.cache_path)
    assert "is not a `birdsed teacher` folder" in cli_error(capsys, ["teacher", *cfg_args, "--out", notes])
    line = cli_error(capsys, ["agile", *cfg_args, "--teacher", tmp_path / "t", "--out", notes])
    assert "is not a `birdsed agile` folder" in line
    assert {d.name: snapshot(d) for d in (run, notes, sounds)} == before
    exp = tmp_path / "exp"
    assert main([*map(str, export), "--out", str(exp)]) == 0
    (exp / "notes.txt").write_bytes(b"a user's file put in the export folder")
    line = cli_error(capsys, [*export, "--out", exp])  # no longer only birdsed's: refused, the file kept
    assert "holds 1 file(s) birdsed did not write (notes.txt)" in line and (exp / "notes.txt").is_file()
    (exp / "notes.txt").unlink()
    (exp / "model.onnx").write_bytes(b"edited")  # a file birdsed wrote, changed since: the user's now (issue 49)
    line = cli_error(capsys, [*export, "--out", exp])
    assert "model.onnx (changed since birdsed wrote it)" in line and (exp / "model.onnx").read_bytes() == b"edited"
    (exp / "model.onnx").unlink()
    assert main([*map(str, export), "--out", str(exp)]) == 0  # its own kind, nothing of the user's: replaced whole
    assert (exp / "model.onnx").stat().st_size > 1000 and (exp / "model.json").is_file()


def test_two_trainings_never_share_a_run_folder(trained_run, tiny_root, tmp_path, capsys):
    """While one command holds a run folder (its lock beside the folder), a second `train`/`pseudo --overwrite` of
    the same folder is refused at once, naming the holder, and the folder is untouched."""
    from birdsed.training.runs import run_lock

    cfg, _, run_dir = trained_run
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    before = snapshot(run)
    args = [*_cfg_args(tiny_root, cfg.cache_path), "--out", run, "--overwrite"]
    with run_lock(run):
        for command in ("train", "pseudo"):
            line = cli_error(capsys, [command, *args])
            assert (
                f"{run}: another birdsed command is writing this run folder (it holds {run.parent}/.run.lock)" in line
            )
    assert snapshot(run) == before
    with run_lock(run):  # released when its holder ends: taken again at once
        pass


def test_a_backbone_that_cannot_take_spectrograms_is_refused_before_the_run(tiny_root, trained_run, tmp_path, capsys):
    """A timm ViT built for fixed 224 × 224 images: one line naming the backbone, no run folder."""
    cfg, _, _ = trained_run
    out = tmp_path / "vit"
    args = ["train", *_cfg_args(tiny_root, cfg.cache_path, "model.backbone=vit_tiny_patch16_224"), "--out", out]
    line = cli_error(capsys, args)
    assert "model.backbone: vit_tiny_patch16_224 cannot take a (1, 32," in line and "AssertionError" in line
    assert not out.exists()


def test_a_full_disk_while_saving_a_checkpoint_is_one_line(tiny_root, trained_run, tmp_path):
    """A file-size limit below the checkpoint's size (a full disk or quota): exit 1 naming the checkpoint, no
    traceback, no partial file."""
    import resource

    cfg, _, _ = trained_run

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))  # bytes: the ResNet-18 checkpoint is ~46 MB

    out = tmp_path / "run"
    done = cli_run(["train", *_cfg_args(tiny_root, cfg.cache_path, "train.epochs=1"), "--out", out], preexec_fn=limit)
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert re.search(r"error: \S+(last|best)\.(pt|ckpt): cannot write", done.stderr), done.stderr[-800:]
    assert not list(out.rglob("*.part"))


def test_ctrl_c_in_prepare_leaves_no_half_written_cache_file(data, tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) while workers are writing: exit 130, and
    no `.f16.part` file is left behind — the message says nothing half-written was kept, and that is true."""
    long = tone(440, 300, 44100)  # 5 min at 44.1 kHz: seconds of decoding and resampling per file
    for i in range(2):
        write(data / "train_audio" / "synbrd01" / f"long{i}.flac", long, 44100)
    rows = [{"primary_label": "synbrd01", "secondary_labels": "['']", "filename": f"synbrd01/long{i}.flac"}
            for i in range(2)]  # fmt: skip
    _edit_train(data, lambda t: pd.concat([pd.DataFrame(rows), t], ignore_index=True).fillna(""))
    cache = tmp_path / "cache"
    args = ["prepare", *_cfg_args(data, cache, "data.prepare_workers=2"), "--no-progress"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "birdsed", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the SIGINT below reaches it and its workers, not pytest
    )
    deadline = time.time() + 120
    while not list(cache.rglob("*.f16.part")):
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.time() < deadline, "no cache file was ever being written"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "nothing half-written was kept" in err and "Traceback" not in err, err[-2000:]
    assert not list(cache.rglob("*.part"))


def test_birdsed_s_own_files_cut_short_are_named_or_rebuilt(trained_run, tiny_root, tmp_path, capsys):
    """Files birdsed wrote and reads back — a cache index, a run's metrics.json, a study's record — cut in half (a
    disk that filled, a copy cut short): the cache index is rebuilt by prepare; the others are one line naming the
    file, never a JSONDecodeError traceback."""
    cfg, _, run_dir = trained_run
    cache = Path(shutil.copytree(cfg.cache_path, tmp_path / "cache"))
    index = cache / "index.json"
    index.write_text(index.read_text()[: index.stat().st_size // 2])
    assert _main(["prepare", *_cfg_args(tiny_root, cache), "--no-progress"]) == 0
    assert json.loads(index.read_text())["files"]  # whole again
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    metrics = run / "metrics.json"
    metrics.write_text(metrics.read_text()[:100])
    line = cli_error(capsys, ["report", run, "--out", tmp_path / "r.html"])
    assert f"{metrics}: birdsed's own file cannot be read back (not valid JSON" in line
    line = cli_error(capsys, ["train", run / "config.yaml", "--out", run, "--resume"])
    assert "metrics.json: birdsed's own file cannot be read back" in line
    study = tmp_path / "study"
    study.mkdir()
    (study / "study.json").write_text('{"command": "tr')
    assert "study.json: birdsed's own file cannot be read back" in cli_error(
        capsys, ["report", study, "--out", tmp_path / "s.html"]
    )
