from birdsed.cli import main


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
