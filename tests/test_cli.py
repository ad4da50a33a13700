import re

import pytest

from birdsed.cli import main
from tests.conftest import REPO


def test_prepare_then_rerun_is_idempotent(tiny_root, tmp_path, capsys):
    args = ["prepare", f"data.root={tiny_root}", f"data.cache_dir={tmp_path / 'cache'}", "--no-progress"]
    assert main(args) == 0
    first = capsys.readouterr().out.strip().splitlines()[-1]
    assert "cached 27 file(s)" in first  # 24 recordings + 3 train soundscapes
    assert main([*args, "--include-test"]) == 0
    again = capsys.readouterr().out.strip().splitlines()[-1]
    assert "cached 3 file(s)" in again and "27 already current" in again


def test_config_errors_exit_1_with_the_key(capsys):
    assert main(["prepare", "data.crop_mode=middle"]) == 1
    assert "data.crop_mode" in capsys.readouterr().err


def test_missing_data_root_is_a_clear_error(tmp_path, capsys):
    assert main(["prepare", f"data.root={tmp_path / 'nope'}", f"data.cache_dir={tmp_path / 'c'}"]) == 1
    assert "data folder not found" in capsys.readouterr().err


def test_synth_cli(tmp_path, capsys):
    out = tmp_path / "s"
    assert (
        main(
            [
                "synth",
                "--out",
                str(out),
                "--classes",
                "3",
                "--files-per-class",
                "1",
                "--train-soundscapes",
                "1",
                "--test-soundscapes",
                "1",
            ]
        )
        == 0
    )
    assert (out / "test_solution.csv").is_file()
    assert capsys.readouterr().out.strip().endswith(str(out))


def test_one_convention_config_first_overrides_anywhere_old_flags_noted(tmp_path, capsys):
    """Every command that takes a config takes it as its first positional, with key=value overrides anywhere among
    the options; the flags that duplicated a config key still work for one release, as that key, with a note."""
    from birdsed.cli import DEPRECATED_FLAGS, parse
    from birdsed.commands import config_from_args

    cfg = tmp_path / "c.yaml"
    cfg.write_text("infer:\n  clip_weight: 0.5\n")
    args = parse(["infer", str(cfg), "--checkpoint", "m", "infer.batch_size=4", "--soundscapes", "s", "--out", "o",
                  "infer.runtime=onnx"])  # fmt: skip
    loaded = config_from_args(args.config_and_overrides)
    assert (loaded.infer.clip_weight, loaded.infer.batch_size, loaded.infer.runtime) == (0.5, 4, "onnx")
    capsys.readouterr()
    old = parse(["infer", "--config", str(cfg), "--checkpoint", "m", "--soundscapes", "s", "--out", "o",
                 "--tta-shifts", "0,2.5", "--runtime", "openvino", "--precision", "bf16"])  # fmt: skip
    loaded = config_from_args(old.config_and_overrides)
    assert (loaded.infer.tta_shifts, loaded.infer.runtime, loaded.infer.precision) == ([0.0, 2.5], "openvino", "bf16")
    notes = capsys.readouterr().err.strip().splitlines()
    assert len(notes) == 4 and "write infer.tta_shifts=[0,2.5]" in notes[1], notes
    assert config_from_args(parse(["teacher", "--out", "t", "--embeddings"]).config_and_overrides).teacher.embeddings
    with pytest.raises(SystemExit):  # an unknown option is still argparse's error
        parse(["infer", "--checkpoint", "m", "--soundscapes", "s", "--out", "o", "--bogus", "0"])
    # the documents show the one convention only
    texts = {p: p.read_text() for p in [REPO / "README.md", *REPO.glob("docs/*.md"), REPO / "Makefile",
                                        *REPO.glob("notebooks/*.ipynb"), *REPO.glob("configs/**/*.yaml")]}  # fmt: skip
    for path, text in texts.items():
        text = re.sub(r"Renamed in this release.*?(\n\n|\Z)", "", text, flags=re.S)  # the note on the old names
        for flag in [*DEPRECATED_FLAGS, "--config"]:
            assert not re.search(rf"{flag}\b(?!-)", text), (path, flag)


def test_bundle_runs_onnx_unless_the_config_says(tmp_path):
    """A bundle runs on Kaggle's CPU: its own default runtime is onnx, unless the config file or an override names
    one (then that one, and a torch runtime is refused by name)."""
    from birdsed.commands import config_from_args

    assert config_from_args([], ["infer.runtime=onnx"]).infer.runtime == "onnx"
    assert config_from_args(["infer.runtime=openvino"], ["infer.runtime=onnx"]).infer.runtime == "openvino"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("infer:\n  runtime: torch\n")
    assert config_from_args([str(cfg)], ["infer.runtime=onnx"]).infer.runtime == "torch"
    cfg.write_text("infer:\n  clip_weight: 0.5\n")
    assert config_from_args([str(cfg)], ["infer.runtime=onnx"]).infer.runtime == "onnx"


def test_every_option_has_a_help_line_and_shows_its_default():
    """`--help` of every subcommand: each option says what it is, and its default where it has one (issue 48)."""
    import argparse

    from birdsed.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        text = p.format_help()
        for action in p._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            assert action.help, f"birdsed {name} {action.option_strings[0]}: no help line"
            if action.default not in (None, False, [], argparse.SUPPRESS):
                assert f"(default: {action.default})" in " ".join(text.split()), (name, action.option_strings)
