"""Agile modelling on teacher embeddings: the per-class fit (mask, soft targets, classes without positives), the
model file, and ``birdsed agile`` on the synthetic set with embeddings that carry its labels."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from birdsed.cli import main
from birdsed.data.folder import load_birdclef
from birdsed.teacher.agile import AgileError, fit_agile, load_agile, read_embeddings
from birdsed.teacher.birdnet_tflite import EMBEDDINGS_SUFFIX, read_teacher
from tests.conftest import cli_error


def _embed(y: np.ndarray, rng: np.random.Generator, dim: int = 24, signal: float = 3.0) -> np.ndarray:
    """Embeddings in which class k adds `signal` to feature k: (N, C) labels → (N, dim)."""
    x = rng.normal(size=(len(y), dim)).astype(np.float32)
    x[:, : y.shape[1]] += signal * y
    return x


def test_fit_learns_each_class_ignores_masked_targets_and_leaves_classes_without_positives_out():
    rng = np.random.default_rng(0)
    y = (rng.random((400, 3)) < 0.3).astype(float)
    y[:, 2] = 0  # class 2: no positive anywhere
    x = _embed(y, rng)
    noisy = y.copy()
    wrong = rng.random(len(y)) < 0.5
    noisy[wrong, 1] = 1 - noisy[wrong, 1]  # half of class 1's targets flipped...
    mask = np.ones_like(y, dtype=bool)
    mask[wrong, 1] = False  # ...and masked: a masked target must not count
    model = fit_agile(x, noisy, mask, ["a", "b", "c"], c=0.1)
    assert model.known.tolist() == [True, True, False]

    y_test = (rng.random((300, 3)) < 0.3).astype(float)
    p = model.predict(_embed(y_test, rng))
    assert roc_auc_score(y_test[:, 0], p[:, 0]) > 0.9 and roc_auc_score(y_test[:, 1], p[:, 1]) > 0.9
    assert np.isnan(p[:, 2]).all()  # no opinion, not 0
    unmasked = fit_agile(x, noisy, np.ones_like(mask), ["a", "b", "c"], c=0.1)
    assert roc_auc_score(y_test[:, 1], unmasked.predict(_embed(y_test, rng))[:, 1]) < 0.75  # the flips do hurt


def test_soft_targets_rank_between_hard_ones():
    """A soft target t counts as t of a positive: windows labelled 0.9 push their direction up more than 0.1."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 4))
    t = 1 / (1 + np.exp(-3 * x[:, 0]))  # soft targets following feature 0
    model = fit_agile(x, t[:, None], np.ones((300, 1), bool), ["a"], c=1.0)
    grid = np.zeros((3, 4))
    grid[:, 0] = [-1, 0, 1]
    p = model.predict(grid)[:, 0]
    assert p[0] < 0.5 - 0.1 < 0.5 + 0.1 < p[2] and abs(p[1] - 0.5) < 0.1


def test_model_file_round_trip_and_bad_files(tmp_path):
    rng = np.random.default_rng(2)
    y = (rng.random((100, 2)) < 0.5).astype(float)
    x = _embed(y, rng)
    model = fit_agile(x, y, np.ones_like(y, dtype=bool), ["a", "b"])
    model.save(tmp_path / "agile.npz")
    again = load_agile(tmp_path)  # a folder means its agile.npz
    np.testing.assert_array_equal(again.predict(x), model.predict(x))
    assert again.classes == ["a", "b"]
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    with pytest.raises(AgileError, match=r"junk\.npz"):
        load_agile(tmp_path / "junk.npz")
    with pytest.raises(AgileError, match=r"expected \(N, 24\)"):
        model.predict(x[:, :5])
    np.savez(tmp_path / "e.npz", row_id=np.array(["s_5", "s_10"]), embeddings=np.array([[0.0, np.nan], [1, 2]]))
    with pytest.raises(AgileError, match=r"e\.npz: non-finite"):
        read_embeddings(tmp_path / "e.npz")


def _write_embeddings(folder, name, ids, x):
    with open(folder / f"{name}{EMBEDDINGS_SUFFIX}", "wb") as f:
        np.savez(f, row_id=np.array(ids, dtype=str), embeddings=x.astype(np.float32))


def test_birdsed_agile_on_the_synthetic_set(tiny_root, tmp_path, capsys):
    """Embeddings that carry each window's labels (train_audio from train.csv, test windows from the solution):
    `birdsed agile` fits on them and predicts the test windows well; a class the pool teacher does not know is
    fitted from train_audio alone; --out equal to the teacher folder is refused."""
    rng = np.random.default_rng(3)
    data = load_birdclef(tiny_root)
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    # train_audio: 3 windows per recording, its labels
    y_rec = data.targets(0.5)
    stems = data.train["filename"].str.rsplit(".", n=1).str[0]
    ids = [f"{s}_{5 * (w + 1)}" for s in stems for w in range(3)]
    _write_embeddings(teacher, "train_audio", ids, _embed(np.repeat(y_rec, 3, axis=0), rng, signal=4.0))
    # the teacher on train_audio (what the gate compares with): no opinion on the first class, near perfect on the
    # second, guessing on the rest
    t_audio = rng.random((len(ids), len(data.classes)))
    t_audio[:, 0] = np.nan
    t_audio[:, 1] = np.clip(np.repeat(y_rec, 3, axis=0)[:, 1] * 0.9 + rng.random(len(ids)) * 0.1, 0, 1)
    audio_table = pd.DataFrame(t_audio, columns=data.classes)
    audio_table.insert(0, "row_id", ids)
    audio_table.to_csv(teacher / "train_audio.csv", index=False)
    # pool: a teacher that knows every class but the first (NaN column)
    pool_y = (rng.random((60, len(data.classes))) < 0.2).astype(float)
    pool_ids = [f"pool{i // 6}_{5 * (i % 6 + 1)}" for i in range(60)]
    table = pd.DataFrame(pool_y, columns=data.classes)
    table[data.classes[0]] = np.nan
    table.insert(0, "row_id", pool_ids)
    table.to_csv(teacher / "train_soundscapes.csv", index=False)
    _write_embeddings(teacher, "train_soundscapes", pool_ids, _embed(pool_y, rng, signal=4.0))
    solution = pd.read_csv(tiny_root / "test_solution.csv", dtype={"row_id": str})
    y_test = solution[data.classes].to_numpy(float)
    _write_embeddings(teacher, "test_soundscapes", solution["row_id"].tolist(), _embed(y_test, rng, signal=4.0))

    out = tmp_path / "agile"
    assert (
        main(["agile", f"data.root={tiny_root}", "agile.pool=true", "--teacher", str(teacher), "--out", str(out)]) == 0
    )
    assert f"{len(data.classes)} of {len(data.classes)} classes have a model" in capsys.readouterr().out
    pred = read_teacher(out / "test_soundscapes.agile.csv", data.classes).loc[solution["row_id"]].to_numpy()
    assert np.isfinite(pred).all()
    for k in np.flatnonzero((y_test.sum(0) > 0) & (y_test.sum(0) < len(y_test))):
        assert roc_auc_score(y_test[:, k], pred[:, k]) > 0.85, data.classes[k]
    # the gate, judged on train_audio windows held out by recording: blended where the teacher guesses, not where it
    # is near perfect; the class it lacks is the agile model's whatever the gate says
    gate = json.loads((out / "agile.json").read_text())["gate"]
    assert gate["blended"] == data.classes[2:], gate
    assert gate["classes"][data.classes[1]]["teacher_auc"] > 0.99 and data.classes[0] not in gate["classes"]
    assert load_agile(out).blend.tolist() == [False, False, True, True, True, True]
    # the pool folder has a teacher CSV: <folder>.csv is the blend (a = teacher.agile_weight = 0.5) in the gated
    # classes, the teacher alone in the others it knows, the agile model alone in its NaN column
    alone = read_teacher(out / "train_soundscapes.agile.csv", data.classes).loc[pool_ids].to_numpy()
    blend = read_teacher(out / "train_soundscapes.csv", data.classes).loc[pool_ids].to_numpy()
    t = table.set_index("row_id").loc[pool_ids, data.classes].to_numpy()
    gated = np.array([False, False, True, True, True, True])
    want = np.where(np.isnan(t), alone, np.where(gated, 0.5 * alone + 0.5 * t, t))
    np.testing.assert_allclose(blend, want, atol=2e-5)
    assert not (out / "test_soundscapes.csv").exists()  # no teacher CSV of the test folder: nothing to blend
    line = cli_error(capsys, ["agile", f"data.root={tiny_root}", "--teacher", teacher, "--out", teacher])
    assert "is the teacher folder" in line
    line = cli_error(capsys, ["agile", f"data.root={tiny_root}", "--teacher", teacher, "--out", out])
    assert "pass --overwrite" in line  # its own folder, replaced only when asked (issue 49)
    (teacher / f"train_audio{EMBEDDINGS_SUFFIX}").unlink()
    line = cli_error(capsys, ["agile", f"data.root={tiny_root}", "--teacher", teacher, "--out", out, "--overwrite"])
    assert f"train_audio{EMBEDDINGS_SUFFIX}" in line and "teacher.embeddings=true" in line


def test_agile_fits_on_labelled_soundscape_windows_and_the_gate_judges_on_them(tiny_root26, tmp_path):
    """BirdCLEF+ 2026: the labelled training soundscape windows are fitted on (the soundscape-only class gets a model
    from them alone) and are the gate's evidence where they hold enough positives — a teacher near perfect on
    train_audio but guessing on the soundscapes is blended there, though train_audio alone would keep it out."""
    from birdsed.data.soundscapes import read_labelled_windows

    rng = np.random.default_rng(5)
    root = tiny_root26
    data = load_birdclef(root)
    only = data.soundscape_only
    assert only == [data.classes[0]]
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    y_rec = np.repeat(data.targets(0.5), 3, axis=0)
    stems = data.train["filename"].str.rsplit(".", n=1).str[0]
    ids = [f"{s}_{5 * (w + 1)}" for s in stems for w in range(3)]
    _write_embeddings(teacher, "train_audio", ids, _embed(y_rec, rng, signal=4.0))
    # the teacher on train_audio: near perfect on every class it knows (the first it lacks)
    t_audio = np.clip(y_rec * 0.9 + rng.random(y_rec.shape) * 0.1, 0, 1)
    t_audio[:, 0] = np.nan
    pd.DataFrame(t_audio, columns=data.classes).assign(row_id=ids)[["row_id", *data.classes]].to_csv(
        teacher / "train_audio.csv", index=False
    )
    lw = read_labelled_windows(root / "train_soundscapes_labels.csv", root / "train_soundscapes", data.classes)
    # train_soundscapes: the labelled windows' embeddings carry their labels; the teacher guesses on them
    sids = lw.table["row_id"].tolist()
    _write_embeddings(teacher, "train_soundscapes", sids, _embed(lw.targets, rng, signal=4.0))
    t_scape = rng.random(lw.targets.shape)
    t_scape[:, 0] = np.nan
    pd.DataFrame(t_scape, columns=data.classes).assign(row_id=sids)[["row_id", *data.classes]].to_csv(
        teacher / "train_soundscapes.csv", index=False
    )
    out = tmp_path / "agile"
    assert main(["agile", f"data.root={root}", "--teacher", str(teacher), "--out", str(out)]) == 0
    info = json.loads((out / "agile.json").read_text())
    assert info["labelled_windows"] == len(lw) and only[0] not in info["classes_without_model"]
    model = load_agile(out)
    assert model.known[0]  # the soundscape-only class: learnt from the labelled windows alone
    judged = {c: g for c, g in info["gate"]["classes"].items() if g["evidence"] == "soundscapes"}
    assert judged and all(g["blend"] for g in judged.values()), info["gate"]["classes"]
    # without the labelled windows the same teacher is never blended: train_audio says it is near perfect
    args = ["agile", f"data.root={root}", "data.soundscape_labels=none", "--teacher", str(teacher)]
    assert main([*args, "--out", str(tmp_path / "a2")]) == 0
    assert json.loads((tmp_path / "a2" / "agile.json").read_text())["gate"]["blended"] == []
    assert not load_agile(tmp_path / "a2").known[0]
