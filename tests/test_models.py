from pathlib import Path

import pytest
import timm
import torch

from birdsed.config import ConfigError
from birdsed.config.load import load_config
from birdsed.models import build_model, load_checkpoint, save_checkpoint
from birdsed.models.backbones import create_backbone
from birdsed.models.build import CheckpointError, init_from_checkpoint
from birdsed.rules import check_backbone_name

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def small_cfg(**over):
    items = ["audio.n_mels=32", "model.backbone=efficientnet_b0", *[f"{k}={v}" for k, v in over.items()]]
    return load_config(overrides=items)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_builds_a_working_model(path):
    cfg = load_config(path)
    model = build_model(cfg, 7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, cfg.audio.sample_rate))  # 1 s of audio
    assert out["clip_logits"].shape == (2, 7)
    assert out["frame_logits"].shape[0] == 2 and out["frame_logits"].shape[2] == 7
    assert torch.isfinite(out["clip_logits"]).all()


def test_forward_equals_forward_mel_of_the_frontend():
    model = build_model(small_cfg(), 4).eval()
    wave = torch.randn(3, 32000 * 2)
    with torch.no_grad():
        a = model(wave)
        b = model.forward_mel(model.frontend(wave))
    assert torch.allclose(a["clip_logits"], b["clip_logits"], atol=1e-5)
    assert a["frame_logits"].shape == (3, 126 // 32 + 1, 4)  # 126 frames → 4 after the /32 backbone


def test_attention_clip_logit_lies_within_the_frame_logits():
    """SED contract: the clip logit is an attention-weighted average of per-frame logits."""
    model = build_model(small_cfg(), 5).eval()
    with torch.no_grad():
        out = model(torch.randn(4, 32000 * 5))
    frame, clip = out["frame_logits"], out["clip_logits"]
    assert (clip <= frame.amax(dim=1) + 1e-5).all() and (clip >= frame.amin(dim=1) - 1e-5).all()


def test_clip_head_and_gem_pooling():
    model = build_model(small_cfg(**{"model.head": "clip", "model.freq_pool": "gem"}), 3).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 32000 * 5))
    assert out["clip_logits"].shape == (2, 3) and out["frame_logits"].shape == (2, 10, 3)  # 313 frames / 32


def test_stochastic_depth_is_configured():
    bb = create_backbone("efficientnet_b0", drop_path_rate=0.15)
    rates = [m.drop_prob for m in bb.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.15, abs=0.01)


def test_unknown_backbone_lists_close_matches():
    with pytest.raises(ValueError, match="efficientnet_b0"):
        check_backbone_name("efficentnet_b0")
    with pytest.raises(ConfigError, match="close matches"):  # where a model is built: a config loads without timm
        check_backbone_name("regnety_08")


def test_checkpoint_rebuilds_from_its_own_config(tmp_path):
    cfg = small_cfg(**{"audio.hop_length": 320, "model.head": "sed"})
    model = build_model(cfg, 3).eval()
    save_checkpoint(tmp_path / "m.pt", model, cfg, ["a", "b", "c"])
    loaded, cfg2, classes = load_checkpoint(tmp_path / "m.pt")  # today's defaults (hop 512) must not leak in
    assert classes == ["a", "b", "c"] and cfg2.audio.hop_length == 320
    wave = torch.randn(2, 32000)
    with torch.no_grad():
        assert torch.equal(model(wave)["clip_logits"], loaded(wave)["clip_logits"])
    assert torch.load(tmp_path / "m.pt", weights_only=True)["format"] == "birdsed-checkpoint-v1"
    (tmp_path / "run").mkdir()
    save_checkpoint(tmp_path / "run" / "best.pt", model, cfg, ["a", "b", "c"])
    assert load_checkpoint(tmp_path / "run")[2] == ["a", "b", "c"]  # a run folder means its best.pt


def test_bad_checkpoints(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a birdsed checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")


def test_init_from_remaps_the_head_by_label_name(tmp_path):
    cfg = small_cfg()
    old = build_model(cfg, 3)
    save_checkpoint(tmp_path / "old.pt", old, cfg, ["a", "b", "c"])
    new = build_model(cfg, 4)
    fresh_row = new.head.cla.weight[1].clone()
    counts = init_from_checkpoint(new, tmp_path / "old.pt", ["c", "x", "a", "b"])
    assert counts == {"kept": 3, "new": 1}
    assert torch.equal(new.head.cla.weight[0], old.head.cla.weight[2])  # c
    assert torch.equal(new.head.cla.weight[2], old.head.cla.weight[0])  # a
    assert torch.equal(new.head.cla.weight[1], fresh_row)  # x stays fresh
    assert torch.equal(new.backbone.conv_stem.weight, old.backbone.conv_stem.weight)
    other = build_model(small_cfg(**{"model.backbone": "regnety_008"}), 4)
    with pytest.raises(CheckpointError, match="do not fit"):
        init_from_checkpoint(other, tmp_path / "old.pt", ["a", "b", "c", "d"])


def test_local_pretrained_weights_fold_rgb_stems(tmp_path):
    rgb = timm.create_model("efficientnet_b0", pretrained=False, in_chans=3)
    torch.save(rgb.state_dict(), tmp_path / "b0.pth")
    model = build_model(small_cfg(**{"model.pretrained_weights": str(tmp_path / "b0.pth")}), 2)
    assert torch.allclose(model.backbone.conv_stem.weight, rgb.conv_stem.weight.sum(dim=1, keepdim=True))
    assert torch.equal(model.backbone.blocks[3][0].conv_pw.weight, rgb.blocks[3][0].conv_pw.weight)
    with pytest.raises(ConfigError, match=r"pretrained_weights.*not found"):
        build_model(small_cfg(**{"model.pretrained_weights": str(tmp_path / "none.pth")}), 2)
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ConfigError, match=r"r18\.pth: does not fit efficientnet_b0"):
        build_model(small_cfg(**{"model.pretrained_weights": str(tmp_path / "r18.pth")}), 2)


@pytest.mark.parametrize(
    "name",
    [
        "efficientnet_b0",
        "tf_efficientnet_b0",
        "efficientnet_b3",
        "efficientnet_b4",
        "tf_efficientnetv2_s",
        "regnety_008",
        "regnety_016",
        "eca_nfnet_l0",
    ],
)
def test_recipe_backbones_under_the_sed_head(name):
    """Every backbone the recipes name builds single-channel, with stochastic depth, and runs under the head."""
    model = build_model(small_cfg(**{"model.backbone": name, "model.drop_path_rate": 0.1}), 3).eval()
    first_conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 1
    with torch.no_grad():
        out = model(torch.randn(1, 32000 * 2))
    assert out["clip_logits"].shape == (1, 3) and torch.isfinite(out["frame_logits"]).all()


def test_a_head_registered_in_one_place_is_configurable(monkeypatch):
    """model.head's allowed values are HEADS' keys (config.HEAD_NAMES, kept equal by tests/test_layout.py): a head
    registered in HEADS is what build_model builds."""
    from birdsed.config import ConfigError
    from birdsed.config.load import load_config
    from birdsed.models import build_model, sed

    class MaxHead(torch.nn.Module):
        def __init__(self, in_features: int, n_classes: int, dropout: float) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(in_features, n_classes)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            frame = self.fc(x.transpose(1, 2))  # (B, T', K)
            return {"clip_logits": frame.amax(dim=1), "frame_logits": frame}

    with pytest.raises(ConfigError, match=r"model\.head: 'max' is not one of sed, attention, clip"):
        load_config(None, ["model.head=max"])
    monkeypatch.setitem(sed.HEADS, "max", MaxHead)
    cfg = load_config(None, ["model.backbone=resnet18", "audio.n_mels=32"])
    cfg.model.head = "max"  # (named in HEAD_NAMES too, it would load from a config)
    model = build_model(cfg, 3).eval()
    assert isinstance(model.head, MaxHead)
    with torch.no_grad():
        out = model(torch.randn(2, 32000))
    torch.testing.assert_close(out["clip_logits"], out["frame_logits"].amax(dim=1))
