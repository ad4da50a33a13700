from pathlib import Path

import pytest

from birdsed.config import ConfigError
from birdsed.config.load import config_from_dict, config_to_dict, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_defaults_and_derived_values():
    cfg = load_config()
    assert cfg.audio.sample_rate == 32000
    assert cfg.crop_samples == 5 * 32000
    assert cfg.frames_per_crop == 1 + 160000 // cfg.audio.hop_length
    cfg = load_config(overrides=["data.crop_seconds=20", "audio.hop_length=320", "data.first_seconds=20"])
    assert cfg.crop_samples == 640000 and cfg.frames_per_crop == 2001


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\naudio:\n  n_mels: 64\ndata:\n  root: /somewhere\n")
    cfg = load_config(path, ["audio.n_mels=96"])
    assert (cfg.name, cfg.audio.n_mels, cfg.data.root) == ("x", 96, "/somewhere")


@pytest.mark.parametrize(
    ("yaml", "overrides", "needle"),
    [  # the key, and what is wrong with it: not just text the input already holds
        ("audio:\n  n_mel: 64\n", [], r"audio\.n_mel: .*Did you mean: 'n_mels'"),
        ("", ["data.batchsize=3"], r"data\.batchsize: .*Did you mean: 'batch_size'"),
        ("", ["audio.n_mels=lots"], r"audio\.n_mels: Value 'lots' .* could not be converted to Integer"),
        ("data:\n  crop_mode: middle\n", [], r"data\.crop_mode: 'middle' is not one of first_random"),
        ("", ["audio.fmax=20000"], r"audio\.fmax: need 0 <= fmin < fmax <= sample_rate/2 = 16000"),
        ("", ["data.fold=5"], r"data\.fold: 5 is outside -1\.\.4"),
        ("", ["train.loss=hinge"], r"train\.loss: 'hinge' is not one of bce, focal, focal_bce, ce"),
        ("", ["augment.mixup_prob=1.5"], r"augment\.mixup_prob: must be in \[0, 1\], got 1\.5"),
        ("", ["data.batch_size=0"], r"data\.batch_size: must be > 0, got 0"),
        ("", ["nonsense"], r"override 'nonsense': expected key=value"),
    ],
)
def test_bad_config_names_the_key(tmp_path, yaml, overrides, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml or "{}\n")
    with pytest.raises(ConfigError, match=needle):
        load_config(path, overrides)


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/no/such/config.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads_and_round_trips(path):
    cfg = load_config(path)
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg


def test_the_teachers_old_keys_are_read_with_a_note_and_stored_configs_quietly(tmp_path, caplog):
    """Issue 39 moved every teacher setting under teacher.*: an old key in a file or an override still works (a note
    naming the new key), both names at once are refused, and a stored config (an older checkpoint's) reads quietly."""
    import logging

    from birdsed.config.load import config_from_dict, config_to_dict
    from birdsed.rules import RENAMED

    path = tmp_path / "old.yaml"
    path.write_text("infer:\n  teacher: birdnet\n  agile_fill_weight: 0.5\npseudo:\n  teacher_weight: 0.25\n")
    with caplog.at_level(logging.WARNING, logger="birdsed"):
        cfg = load_config(path, ["infer.teacher_weight=0.75"])
    t = cfg.teacher
    assert (t.infer, t.agile_fill_weight, t.pseudo_weight, t.infer_weight) == ("birdnet", 0.5, 0.25, 0.75)
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 4 and any("infer.teacher_weight is now teacher.infer_weight" in n for n in notes), notes
    with pytest.raises(ConfigError, match=r"infer\.agile and teacher\.agile both set"):
        load_config({"infer": {"agile": "a.npz"}, "teacher": {"agile": "b.npz"}})
    old = config_to_dict(load_config())
    for key, new in RENAMED.items():
        (osec, okey), (nsec, nkey) = key.split("."), new.split(".")
        old[osec][okey] = old[nsec].pop(nkey)
    old["infer"]["teacher"], old["pseudo"]["teacher_weight"] = "t.csv", 0.5
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="birdsed"):
        stored = config_from_dict(old)
    assert (stored.teacher.infer, stored.teacher.pseudo_weight) == ("t.csv", 0.5) and not caplog.records


def test_train_devices_parsed_once_as_lightning_takes_them():
    from birdsed.rules import parse_devices

    assert [parse_devices(d) for d in ("auto", "-1", "2", "0,1", "[0, 1]", " 3 ")] == ["auto", -1, 2, [0, 1], [0, 1], 3]
    for bad in ("abc", "1.5", "[]", "0,x"):
        with pytest.raises(ConfigError, match=r"train\.devices"):
            parse_devices(bad)
