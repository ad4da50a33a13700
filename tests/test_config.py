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
    [
        ("audio:\n  n_mel: 64\n", [], "audio.n_mel"),
        ("", ["data.batchsize=3"], "data.batchsize"),
        ("", ["audio.n_mels=lots"], "audio.n_mels"),
        ("data:\n  crop_mode: middle\n", [], "data.crop_mode"),
        ("", ["audio.fmax=20000"], "audio.fmax"),
        ("", ["data.fold=5"], "data.fold"),
        ("", ["model.backbone=efficientnet_b9"], "efficientnet_b"),
        ("", ["train.loss=hinge"], "train.loss"),
        ("", ["augment.mixup_prob=1.5"], "augment.mixup_prob"),
        ("", ["data.batch_size=0"], "data.batch_size"),
        ("", ["nonsense"], "nonsense"),
    ],
)
def test_bad_config_names_the_key(tmp_path, yaml, overrides, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml or "{}\n")
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(path, overrides)


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/no/such/config.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads_and_round_trips(path):
    cfg = load_config(path)
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg
