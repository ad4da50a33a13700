"""``birdsed synth --like birdclef2026``: the competition's shape at a fraction of its size."""

from __future__ import annotations

import pandas as pd
import pytest

from birdsed.data.folder import load_birdclef
from birdsed.data.soundscapes import read_labelled_windows
from birdsed.data.synth_like import like_classes, make_like, per_class_counts
from birdsed.errors import ConfigError


def test_the_full_shape_has_the_competitions_classes_and_long_tail():
    taxonomy = like_classes(0)
    assert len(taxonomy) == 234 and taxonomy["primary_label"].is_unique
    assert (~taxonomy["focal"]).sum() == 28
    assert taxonomy["primary_label"].str.fullmatch(r"47158son\d\d").sum() == 25
    birds = taxonomy[taxonomy["class_name"] == "Aves"]["primary_label"]
    assert len(birds) == 162 and birds.str.fullmatch(r"[a-z]{6}1").all()
    others = taxonomy[(taxonomy["class_name"] != "Aves") & ~taxonomy["primary_label"].str.startswith("47158")]
    assert others["primary_label"].str.isdigit().all()
    counts = per_class_counts(206, 1.0, 0)
    assert abs(counts.sum() - 35_549) / 35_549 < 0.1 and counts.max() <= 500 and counts.min() >= 1
    assert (counts <= 20).sum() >= 25 and (counts == 500).sum() >= 20  # a long tail and a capped head
    small = per_class_counts(206, 0.01, 0)
    assert small.min() == 1 and small.sum() < counts.sum() / 20


def test_a_small_scale_folder_loads_as_a_2026_folder(tmp_path):
    root = make_like(tmp_path / "like", "birdclef2026", 0.0006, seed=1, workers=2, lengths=0.05)
    data = load_birdclef(root)
    assert len(data.classes) == 234 and len(data.soundscape_only) == 28
    assert len(data.train) == 206  # every focal class keeps a recording
    assert len(data.train_soundscapes) == 6 and len(list((root / "test_soundscapes").iterdir())) == 1
    assert len(data.labelled_files) == 1 and len(data.unlabelled_soundscapes) == 5
    raw = pd.read_csv(root / "train_soundscapes_labels.csv")
    assert raw.duplicated().sum() == len(raw) // 2 and raw["start"].str.fullmatch(r"00:00:\d\d").all()
    windows = read_labelled_windows(root / "train_soundscapes_labels.csv", root / "train_soundscapes", data.classes)
    assert len(windows.table) == len(raw) // 2
    assert set(data.train["collection"]) <= {"XC", "iNat"}
    assert pd.read_csv(root / "sample_submission.csv").shape == (3, 235)


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="--scale"):
        make_like(tmp_path / "x", "birdclef2026", 2.0)
    with pytest.raises(ConfigError, match="--like"):
        make_like(tmp_path / "x", "birdclef2019", 0.1)
