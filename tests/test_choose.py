"""``birdsed choose``: the teacher's shares chosen on the folder's labelled soundscapes by nested cross-validation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from birdsed.cli import main
from birdsed.config.load import load_config
from birdsed.data.folder import load_birdclef
from birdsed.data.soundscapes import read_labelled_windows
from birdsed.study.choose import blend, choose_shares
from tests.conftest import cli_error, tiny_overrides


def _case(student_good: bool, seed: int = 0):
    """120 windows × 4 classes in 4 folds; classes 0-2 BirdNET's (3: the agile model's alone); the teacher is a fair
    guesser, the student perfect (or noise)."""
    rng = np.random.default_rng(seed)
    y = (rng.random((120, 4)) < 0.3).astype(float)
    teacher = np.clip(0.35 * y + 0.65 * rng.random(y.shape), 0, 1)
    student = np.clip(0.9 * y + 0.1 * rng.random(y.shape), 0, 1) if student_good else rng.random(y.shape)
    return y, student, teacher, np.array([False, False, False, True]), np.arange(120) % 4


def test_a_student_better_everywhere_takes_the_blend_and_keeps_its_gain_out_of_fold():
    y, student, teacher, agile_only, folds = _case(student_good=True)
    c = choose_shares(y, [student], teacher, agile_only, folds)
    assert c.teacher_weight < 1 and c.agile_fill_weight < 1  # (a tie at AUC 1 keeps the larger teacher share)
    assert c.oof_auc > c.baseline_auc + 0.05 and len(c.folds) == 4
    np.testing.assert_allclose(  # both shares 1 is the teacher alone where it knows a class: the baseline
        blend(student, teacher, 1.0, 1.0, agile_only), teacher
    )


def test_a_useless_student_leaves_the_teacher_alone():
    y, student, teacher, agile_only, folds = _case(student_good=False)
    c = choose_shares(y, [student], teacher, agile_only, folds)
    assert c.teacher_weight >= 0.75 and c.agile_fill_weight >= 0.75
    assert c.oof_auc == pytest.approx(c.baseline_auc, abs=0.03)


def test_the_better_inference_variant_is_chosen_and_a_tie_keeps_the_configs_own():
    y, good, teacher, agile_only, folds = _case(student_good=True)
    _, noise, _, _, _ = _case(student_good=False, seed=1)
    variants = [{"tta_shifts": [0.0], "clip_weight": 1.0}, {"tta_shifts": [0.0, -2.5, 2.5], "clip_weight": 0.5}]
    c = choose_shares(y, [noise, good], teacher, agile_only, folds, variants)
    assert c.infer == variants[1] and all(f["infer"] == variants[1] for f in c.folds)
    c = choose_shares(y, [good, good.copy()], teacher, agile_only, folds, variants)
    assert c.infer == variants[0]


def test_birdsed_choose_on_a_2026_folder(tiny_root26, tmp_path, capsys):
    """Two runs, each holding out one fold of the labelled windows; a teacher folder whose BirdNET table guesses and
    whose embeddings carry the labels: `choose` writes a config that `infer` reads as its CONFIG, with the figures."""
    from birdsed.training.train import fit

    root = tiny_root26
    data = load_birdclef(root)
    over = [*tiny_overrides(root, tmp_path / "cache"), "data.soundscape_folds=2", "train.epochs=1"]
    runs = []
    for k in (0, 1):
        cfg = load_config("configs/demo.yaml", [*over, f"data.soundscape_fold={k}"])
        fit(cfg, out=tmp_path / f"run{k}")
        runs.append(tmp_path / f"run{k}")
        assert (tmp_path / f"run{k}" / "labelled_preds.csv").is_file()
    rng = np.random.default_rng(0)
    lw = read_labelled_windows(root / "train_soundscapes_labels.csv", root / "train_soundscapes", data.classes)
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    t = rng.random(lw.targets.shape)
    t[:, 0] = np.nan  # BirdNET lacks the soundscape-only class
    table = pd.DataFrame(t, columns=data.classes)
    table.insert(0, "row_id", lw.table["row_id"])
    table.to_csv(teacher / "train_soundscapes.csv", index=False)
    out = tmp_path / "entry.yaml"
    args = [
        "choose",
        "configs/demo.yaml",
        *over,
        "data.soundscape_folds=2",
        "infer.tta_shifts=[0,-1]",
        "--teacher",
        teacher,
        "--runs",
        *runs,
    ]
    assert main([*map(str, args), "--out", str(out)]) == 0
    headline = capsys.readouterr().out.strip().splitlines()[-1]
    assert headline.startswith(f"choose: {out}: teacher.infer_weight=") and "out of fold on" in headline
    assert "infer.tta_shifts=" in headline and "infer.clip_weight=" in headline
    record = json.loads(out.with_name("entry.yaml.json").read_text())
    assert record["windows"] == len(lw) and len(record["folds"]) == 2
    cfg = load_config(out)  # the entry is a config: what infer/bundle --config read
    assert cfg.teacher.infer_weight == record["teacher_weight"] and out.read_text().startswith("# birdsed choose")
    assert cfg.infer.tta_shifts == record["infer"]["tta_shifts"] and len(record["variants"]) == 2
    # a run that holds out nothing, and a foreign file at --out, are one line each; the foreign file is kept
    line = cli_error(capsys, [*map(str, args[:-3]), "--runs", str(root), "--out", str(out)])
    assert "labelled_preds.csv: not found" in line
    notes = tmp_path / "notes.yaml"
    notes.write_text("mine\n")
    line = cli_error(capsys, [*map(str, args), "--out", str(notes)])
    assert "birdsed replaces only its own outputs" in line and notes.read_text() == "mine\n"


def test_a_student_share_is_kept_only_where_choosing_it_won_out_of_fold():
    """Students that help on some folds and hurt on others: whatever is chosen in sample, a share below 1 survives
    only where the nested (out-of-fold) figure beats the safe entry's."""
    kept = []
    for seed in range(6):
        y, student, teacher, agile_only, folds = _case(student_good=True, seed=seed)
        flip = folds % 2 == 1
        student[flip] = 1 - student[flip]  # on half the folds the student is wrong
        c = choose_shares(y, [student], teacher, agile_only, folds)
        safe = (c.teacher_weight, c.agile_fill_weight) == (1.0, 1.0)
        assert safe or c.oof_auc > c.baseline_auc, c
        kept.append(safe)
    assert any(kept)
