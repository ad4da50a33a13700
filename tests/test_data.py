import logging
import shutil

import numpy as np
import pandas as pd
import pytest

from birdsed.data.folder import DataError, assign_folds, load_birdclef, parse_label_list


def copy_tables(src, dst):
    """A BirdCLEF folder whose CSVs we may edit, audio linked from the original."""
    dst.mkdir()
    for name in ("train.csv", "taxonomy.csv", "sample_submission.csv"):
        shutil.copy(src / name, dst / name)
    (dst / "train_audio").symlink_to(src / "train_audio")
    return dst


def test_real_mini_loads_with_string_labels(real_root):
    data = load_birdclef(real_root)
    assert len(data.classes) == 25 and data.classes[0] == "1122472"
    assert all(isinstance(c, str) for c in data.classes)
    assert set(data.train["primary_label"]) <= set(data.classes)
    assert (data.class_counts() > 0).all()
    y = data.targets(0.5)
    assert y.shape == (44, 25) and (y.max(1) == 1).all()
    assert len(data.train_soundscapes) == 40 and len(data.test_soundscapes) == 30


def test_numeric_labels_with_leading_zeros_stay_strings(tiny_root, tmp_path):
    root = copy_tables(tiny_root, tmp_path / "d")
    tax = pd.read_csv(root / "taxonomy.csv", dtype=str)
    train = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    old = tax["primary_label"].iat[-1]
    tax.loc[tax.index[-1], "primary_label"] = "0" + old
    train.loc[train["primary_label"] == old, "primary_label"] = "0" + old
    tax.to_csv(root / "taxonomy.csv", index=False)
    train.to_csv(root / "train.csv", index=False)
    data = load_birdclef(root)
    assert data.classes[-1] == "0" + old


def test_secondary_labels():
    assert parse_label_list("['']") == []
    assert parse_label_list("[]") == []
    assert parse_label_list("['a', 'b']") == ["a", "b"]
    with pytest.raises(DataError, match="cannot parse"):
        parse_label_list("['a'", "train.csv line 3")


def test_unknown_secondary_labels_are_dropped_with_one_warning(tiny_root, tmp_path, caplog):
    root = copy_tables(tiny_root, tmp_path / "d")
    train = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    known = train["primary_label"].iat[-1]
    train.loc[0, "secondary_labels"] = f"['nosuch1', '{known}']"
    train.loc[1, "secondary_labels"] = "['nosuch2']"
    train.to_csv(root / "train.csv", index=False)
    with caplog.at_level(logging.WARNING):
        data = load_birdclef(root)
    warnings = [r for r in caplog.records if "secondary" in r.getMessage()]
    assert len(warnings) == 1 and "dropped 2" in warnings[0].getMessage()
    assert data.train["secondary"].iat[0] == [known]
    y = data.targets(0.3)
    assert y[0, data.class_index[known]] == pytest.approx(0.3)


def test_bad_tables_give_clear_errors(tiny_root, tmp_path):
    root = copy_tables(tiny_root, tmp_path / "d")
    good = (root / "train.csv").read_text()
    train = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)

    bad = train.copy()
    bad.loc[2, "primary_label"] = "martian1"
    bad.to_csv(root / "train.csv", index=False)
    with pytest.raises(DataError, match=r"absent from taxonomy.*martian1"):
        load_birdclef(root)

    pd.concat([train, train.iloc[[0]]]).to_csv(root / "train.csv", index=False)
    with pytest.raises(DataError, match="more than once"):
        load_birdclef(root)

    bad = train.copy()
    bad.loc[0, "filename"] = "nowhere/a.ogg"
    bad.loc[1, "filename"] = "nowhere/b.ogg"
    bad.to_csv(root / "train.csv", index=False)
    with pytest.raises(DataError, match=r"2 listed file\(s\) missing.*nowhere/a.ogg, nowhere/b.ogg"):
        load_birdclef(root)

    (root / "train.csv").write_text(good)
    (root / "taxonomy.csv").unlink()
    with pytest.raises(DataError, match=r"taxonomy.csv: file not found"):
        load_birdclef(root)


def test_empty_class_is_reported(tiny_root, tmp_path, caplog):
    root = copy_tables(tiny_root, tmp_path / "d")
    train = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    gone = train["primary_label"].iat[0]
    train[train["primary_label"] != gone].to_csv(root / "train.csv", index=False)
    with caplog.at_level(logging.WARNING):
        data = load_birdclef(root)
    assert data.class_counts()[gone] == 0
    assert any("no focal recording" in r.getMessage() and gone in r.getMessage() for r in caplog.records)


def test_folds_are_stratified_and_deterministic():
    labels = ["a"] * 10 + ["b"] * 7 + ["c"] * 2
    f1 = assign_folds(labels, 5, seed=1)
    assert np.array_equal(f1, assign_folds(labels, 5, seed=1))
    assert not np.array_equal(f1, assign_folds(labels, 5, seed=2))
    assert np.bincount(f1, minlength=5).max() - np.bincount(f1, minlength=5).min() <= 1
    for lab, n in (("a", 10), ("b", 7)):
        counts = np.bincount(f1[np.array(labels) == lab], minlength=5)
        assert counts.max() - counts.min() <= 1 and counts.sum() == n
    assert len(set(f1[np.array(labels) == "c"])) == 2
