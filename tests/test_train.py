import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from birdsed.config.load import config_from_dict, load_config
from birdsed.data.cache import WaveStore
from birdsed.data.datasets import oversample, sampling_weights
from birdsed.data.folder import load_birdclef
from birdsed.data.prepare import ensure_cache
from birdsed.models import load_checkpoint
from birdsed.scoring.metrics import score_files
from birdsed.training.data import BirdDataModule, split_recordings
from birdsed.training.runs import RunExistsError
from birdsed.training.train import SEDModule, fit, lr_factor
from tests.conftest import tiny_cfg


@pytest.fixture(scope="module")
def run(trained_run):
    return trained_run


def test_fit_writes_a_self_describing_run_folder(run):
    cfg, _summary, run_dir = run
    for name in (
        "config.yaml",
        "run.json",
        "metrics.json",
        "logs/version_0/metrics.csv",
        "best.pt",
        "last.pt",
        "oof.csv",
        "soundscape_preds.csv",
        "checkpoints/last.ckpt",
    ):
        assert (run_dir / name).is_file(), name
    assert load_config(run_dir / "config.yaml") == cfg
    info = json.loads((run_dir / "run.json").read_text())
    assert "commit" in info["git"] and info["train_recordings"] + info["val_recordings"] == 24
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0, 1]
    assert all(math.isfinite(h["train_loss"]) and 0 <= h["val_auc"] <= 1 for h in history)
    _model, cfg2, classes = load_checkpoint(run_dir)
    assert cfg2 == cfg and len(classes) == 6
    oof = pd.read_csv(run_dir / "oof.csv", dtype=str)
    assert len(oof) == info["val_recordings"] and set(oof["fold"]) == {"0"}


@pytest.mark.slow
def test_best_pt_is_the_last_epoch_by_default_or_the_best_held_out_one(run, tiny_root, tmp_path):
    from birdsed.models.build import read_checkpoint

    cfg, summary, run_dir = run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert summary["best_epoch"] == metrics["history"][-1]["epoch"] == 1 and metrics["best"]["monitor"] == "epoch"
    held = fit(tiny_cfg(tiny_root, cfg.cache_path, "train.select=held_out", "train.epochs=3"), out=tmp_path / "h")
    history = json.loads((tmp_path / "h" / "metrics.json").read_text())["history"]
    aucs = [h["val_auc"] for h in history]
    assert held["best_epoch"] == max(i for i, a in enumerate(aucs) if a == max(aucs))  # a tie goes to the later
    assert read_checkpoint(tmp_path / "h" / "best.pt")["epoch"] == held["best_epoch"]
    assert held["soundscape_auc"] == pytest.approx(history[held["best_epoch"]]["soundscape_auc"])


def test_validating_every_nth_epoch_leaves_the_weights_as_they_were(run, tiny_root, tmp_path):
    from birdsed.errors import ConfigError
    from birdsed.models.build import read_checkpoint

    cfg, _, _ = run
    runs = {}
    for n in (1, 2):
        summary = fit(
            tiny_cfg(tiny_root, cfg.cache_path, "train.threads=1", f"train.val_every={n}"), out=tmp_path / f"{n}"
        )
        runs[n] = summary, json.loads((tmp_path / f"{n}" / "metrics.json").read_text())["history"]
    (every2, history2), (every1, history1) = runs[2], runs[1]
    assert ["val_auc" in h for h in history2] == [False, True] and ["val_auc" in h for h in history1] == [True, True]
    assert every2["best_epoch"] == 1 and every2["soundscape_auc"] == every1["soundscape_auc"]
    weights = [read_checkpoint(tmp_path / f"{n}" / "last.pt")["state_dict"] for n in (1, 2)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # validation draws nothing
    with pytest.raises(ConfigError, match=r"train.val_every: train.epochs=3 is not a multiple of 2"):
        tiny_cfg(tiny_root, cfg.cache_path, "train.epochs=3", "train.val_every=2")


def test_soundscape_predictions_score_as_reported(run, tiny_root):
    _, summary, run_dir = run
    score = score_files(tiny_root / "test_solution.csv", run_dir / "soundscape_preds.csv")
    assert score.macro_auc == pytest.approx(summary["soundscape_auc"], abs=1e-6)


def test_training_scores_soundscapes_with_the_configs_clip_frame_blend(run, tiny_root, tmp_path):
    from birdsed.cli import main

    cfg, _, _ = run
    blend = fit(tiny_cfg(tiny_root, cfg.cache_path, "train.epochs=1", "infer.clip_weight=0.5"), out=tmp_path / "b")
    logged = pd.read_csv(tmp_path / "b" / "soundscape_preds.csv", dtype={"row_id": str}).set_index("row_id")
    assert score_files(tiny_root / "test_solution.csv", tmp_path / "b" / "soundscape_preds.csv").macro_auc == (
        pytest.approx(blend["soundscape_auc"], abs=1e-6)
    )
    gaps = {}
    for weight in ("0.5", "1.0"):
        out = tmp_path / f"sub{weight}.csv"
        args = ["infer", "--checkpoint", str(tmp_path / "b"), "--soundscapes", str(tiny_root / "test_soundscapes")]
        args += ["--out", str(out), "--no-progress", f"infer.clip_weight={weight}"]
        assert main(args) == 0
        sub = pd.read_csv(out, dtype={"row_id": str}).set_index("row_id").loc[logged.index, logged.columns]
        gaps[weight] = np.abs(sub.to_numpy() - logged.to_numpy()).mean()
    # what training logged is what `birdsed infer` gives with the same blend (float16 cache and per-chunk STFT
    # aside: a mean gap of ~0.001 here), and not the clip output alone (~0.008)
    assert gaps["0.5"] < gaps["1.0"] / 5


def test_existing_run_needs_overwrite_and_resume_continues(run, tmp_path):
    cfg, _, shared = run
    run_dir = shutil.copytree(shared, tmp_path / "run")  # the shared run stays as it was
    with pytest.raises(RunExistsError, match="--overwrite"):
        fit(cfg, out=run_dir)
    cfg3 = config_from_dict({**json.loads(json.dumps(cfg.__dict__, default=lambda o: o.__dict__))})
    cfg3.train.epochs = 3
    summary = fit(cfg3, out=run_dir, resume=True)
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2] and summary["epochs"] == 3
    assert (run_dir / "logs" / "version_0" / "metrics.csv").is_file()  # the first attempt's log is kept
    assert (run_dir / "logs" / "version_1" / "metrics.csv").is_file()


def test_nan_loss_stops_naming_step_batch_and_files(tiny_root, tmp_path):
    cfg = tiny_cfg(tiny_root, tmp_path / "c")
    module = SEDModule(cfg, [str(i) for i in range(6)], batch_keys=[f"train_audio/f{i}.ogg" for i in range(4)])
    batch = {
        "wave": torch.full((4, 32000), float("nan")),
        "target": torch.zeros(4, 6),
        "weight": torch.ones(4),
        "index": torch.arange(4),
    }
    with pytest.raises(FloatingPointError, match=r"step 0, batch 7; files in the batch: \['train_audio/f0.ogg'"):
        module.training_step(batch, 7)


def test_lr_schedule():
    total, warm = 100, 10
    f = [lr_factor(s, total, warm, "cosine", 0, 0.01) for s in range(total)]
    assert f[0] == pytest.approx(0.01) and f[warm] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[warm:], f[warm + 1 :], strict=False)) and f[-1] < 0.02
    r = [lr_factor(s, total, 0, "cosine_restarts", 20, 0.0) for s in range(total)]
    assert r[0] == r[20] == r[40] == 1.0 and r[19] < 0.01
    assert lr_factor(50, total, warm, "constant", 0, 0.1) == 1.0


def test_sampling_weights_and_oversampling():
    labels = ["a"] * 4 + ["b"]
    w = sampling_weights(labels, -0.5)
    assert w[0] == pytest.approx((4 / 5) ** -0.5) and w[4] == pytest.approx((1 / 5) ** -0.5)
    assert np.allclose(sampling_weights(labels, 0.0), 1.0)
    idx = oversample(labels, 3)
    assert sorted(idx.tolist()) == [0, 1, 2, 3, 4, 4, 4]


def test_holdout_tails_do_not_overlap_training_crops(tiny_root, tmp_path):
    cfg = tiny_cfg(tiny_root, tmp_path / "c", "data.fold=-1", "data.holdout_seconds=2")
    data = load_birdclef(tiny_root)
    store = ensure_cache(cfg, data, soundscapes=False)
    split = split_recordings(cfg, data, store)
    dm = BirdDataModule(cfg, data, store, split, None)
    dm.setup("fit")
    assert len(split.train_idx) == 24 and len(split.val_idx) > 0 and dm.val_roles == ["fold"]
    for key, (lo, hi) in zip(dm.val_set.keys, dm.val_set.spans, strict=True):
        i = dm.train_set.keys.index(key)
        assert dm.train_set.spans[i] == (0, lo) and hi == store.num_samples(key) and hi - lo == 64000
    item = dm.val_set[0]
    key, (lo, _) = dm.val_set.keys[0], dm.val_set.spans[0]
    np.testing.assert_allclose(item["wave"].numpy(), WaveStore(cfg.cache_path).read(key, lo, 64000))


def test_loader_side_spectrograms_with_albumentations(tiny_root, tmp_path):
    cfg = tiny_cfg(tiny_root, tmp_path / "c", "augment.spec_on=loader", "train.epochs=1", "data.solution=none")
    summary = fit(cfg, out=tmp_path / "run")
    assert summary["epochs"] == 1 and 0 <= summary["val_auc"] <= 1


def test_mlflow_tracking_to_a_local_store(tiny_root, tmp_path):
    pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # a local store, no server (MLflow 3 retired the file store)
    cfg = tiny_cfg(tiny_root, tmp_path / "c", "train.epochs=1", f"tracking.mlflow_uri={uri}", "name=mltest")
    fit(cfg, out=tmp_path / "run")
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("birdsed")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and "val_auc" in runs[0].data.metrics and runs[0].info.run_name == "mltest"
    logged = {a.path for a in client.list_artifacts(runs[0].info.run_id, "run")}
    assert {"run/config.yaml", "run/metrics.json", "run/soundscape_preds.csv"} <= logged  # enough for a report
    assert json.loads((tmp_path / "run" / "mlflow.json").read_text())["run_id"] == runs[0].info.run_id


def test_bf16_on_a_cpu_without_bf16_units_falls_back_to_32_with_a_warning_and_with_them_is_offered(monkeypatch, caplog):
    import birdsed.training.train as train

    cfg = load_config(None, ["train.precision=bf16-mixed", "train.accelerator=cpu"])
    monkeypatch.setattr(train, "cpu_has_bf16", lambda: False)
    with caplog.at_level("WARNING", logger="birdsed.training.train"):
        assert train.trainer_kwargs(cfg)["precision"] == "32-true"
    assert "no bf16 units" in caplog.text
    monkeypatch.setattr(train, "cpu_has_bf16", lambda: True)
    assert train.trainer_kwargs(cfg)["precision"] == "bf16-mixed"
    monkeypatch.setattr(train, "_HINTED", set())  # a fresh command
    with caplog.at_level("INFO", logger="birdsed.training.train"):
        caplog.clear()
        assert train.trainer_kwargs(load_config(None, ["train.accelerator=cpu"]))["precision"] == "32-true"  # auto
        train.trainer_kwargs(load_config(None, ["train.accelerator=cpu"]))  # a second round of the same command
    assert caplog.text.count("train.precision=bf16-mixed trains faster") == 1  # named once, not taken unasked
    monkeypatch.setattr(train, "cpu_has_bf16", lambda: False)
    caplog.clear()
    with caplog.at_level("INFO", logger="birdsed.training.train"):
        train.trainer_kwargs(load_config(None, ["train.accelerator=cpu"]))
    assert "bf16" not in caplog.text


def test_a_log_file_gets_one_line_an_epoch_and_no_bar_redraws(tiny_root, tmp_path):
    """Output to a file (a cluster job, nohup, CI): Lightning's bar is off even with train.progress=true."""
    from tests.conftest import REPO, tiny_overrides

    over = [o for o in tiny_overrides(tiny_root, tmp_path / "cache") if not o.startswith("train.progress")]
    log = tmp_path / "train.log"
    config = REPO / "configs" / "demo.yaml"
    args = ["train", str(config), *over, "train.progress=true", "train.epochs=2", "--out", str(tmp_path / "run")]
    with log.open("w") as out:
        cmd = [sys.executable, "-m", "birdsed", *args]
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=300)
    text = log.read_text()
    assert proc.returncode == 0, text[-2000:]
    assert "\r" not in text and "it/s" not in text, text[-2000:]
    epochs = [line for line in text.splitlines() if re.search(r"\bepoch \d+: ", line)]
    assert len(epochs) == 2, text
    assert len(text) < 6000, len(text)


def test_bars_are_drawn_in_a_terminal():
    """The control of the test above: on a terminal (a pseudo-terminal here) the same check says draw."""
    import pty

    main, sub = pty.openpty()
    code = "from birdsed.outputs import show_bars; print(show_bars(True), show_bars(False))"
    proc = subprocess.run([sys.executable, "-c", code], stdout=sub, stderr=sub, timeout=60)
    os.close(sub)
    shown = os.read(main, 200).decode()
    os.close(main)
    assert proc.returncode == 0 and shown.split() == ["True", "False"], shown
