from pathlib import Path

import pytest

from birdsed.config import ConfigError, config_from_dict, config_to_dict, load_config

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
