import copy
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from birdsed.cli import main
from birdsed.data.datasets import ClipDataset, PseudoChunks, PseudoMixDataset
from birdsed.data.folder import load_birdclef
from birdsed.inference.ensemble import load_member
from birdsed.inference.submit import infer_folder
from birdsed.pseudo.rounds import (
    PseudoError,
    filter_chunks,
    power_transform,
    run_pseudo,
    soundscape_folds,
    soundscape_weights,
)
from birdsed.reports.report import gather
from tests.conftest import REPO, snapshot, tiny_cfg, tiny_overrides


def test_power_one_is_identity_and_order_is_kept():
    p = np.random.default_rng(0).random((50, 7))
    assert np.array_equal(power_transform(p, 1.0), p)
    for c in (0.55, 0.65, 2.0):
        for normalize in (False, True):
            q = power_transform(p, c, normalize)
            assert np.array_equal(np.argsort(q, axis=1), np.argsort(p, axis=1))
    assert power_transform(np.array([[0.25, 0.5]]), 0.5)[0, 0] == pytest.approx(0.0625)
    q = power_transform(np.array([[0.2, 0.6]]), 0.5, normalize=True)
    np.testing.assert_allclose(q, [[0.04 / 0.4, 0.36 / 0.4]])


def test_filters_and_soundscape_weights():
    p = np.array([[0.6, 0.05], [0.3, 0.2], [0.09, 0.9]])
    keep, trimmed = filter_chunks(p, 0.5, 0.1)
    assert keep.tolist() == [True, False, True]
    np.testing.assert_allclose(trimmed, [[0.6, 0.0], [0.3, 0.2], [0.0, 0.9]])
    w = soundscape_weights(np.array(["a", "a", "b"]), trimmed)
    np.testing.assert_allclose(w, [0.6 + 0.2, 0.6 + 0.2, 0.9])


def test_mixup_with_pseudo_chunks(trained_run, tiny_root):
    cfg, _, _ = trained_run
    from birdsed.data.cache import WaveStore

    store = WaveStore(cfg.cache_path)
    key = next(k for k in store.files if k.startswith("train_soundscapes/"))
    chunks = PseudoChunks(store, [key], np.array([32000]), np.eye(6, dtype=np.float32)[[2]], np.ones(1), 160000)
    base = ClipDataset(store, [key], np.eye(6, dtype=np.float32)[[0]], cfg, train=False)
    mixed = PseudoMixDataset(base, chunks, 0.5, "weighted")[0]
    plain = base[0]
    chunk = torch.from_numpy(chunks.wave(0, len(plain["wave"])))
    assert torch.allclose(mixed["wave"], 0.5 * plain["wave"] + 0.5 * chunk)
    assert mixed["target"][0] == 0.5 and mixed["target"][2] == 0.5
    np.testing.assert_allclose(chunks.wave(0, 160000), store.read(key, 32000, 160000))


def test_mass_cap_keeps_a_chunks_labels_below_the_crops(trained_run):
    """pseudo.mass_cap (noisy student, 1st place BirdCLEF+ 2026): a chunk sure of three classes mixed into a crop of
    one weighs at most cap × the crop's label mass; a light chunk passes unchanged."""
    cfg, _, _ = trained_run
    from birdsed.data.cache import WaveStore

    store = WaveStore(cfg.cache_path)
    key = next(k for k in store.files if k.startswith("train_soundscapes/"))
    heavy = np.array([[0, 0.9, 0.9, 0.9, 0, 0], [0, 0, 0.2, 0, 0, 0]], dtype=np.float32)
    base = ClipDataset(store, [key], np.eye(6, dtype=np.float32)[[0]], cfg, train=False)
    for rule, crop_share in (("weighted", 0.5), ("max", 1.0)):
        for j, expected in ((0, 0.5 * crop_share), (1, None)):
            chunks = PseudoChunks(store, [key], np.array([0]), heavy[[j]], np.ones(1), 160000)
            item = PseudoMixDataset(base, chunks, 0.5, rule, mass_cap=0.5)[0]
            pseudo_mass = float(item["target"][1:].sum())
            if expected is None:  # 0.2 (or 0.1 weighted) is below the cap: unchanged
                assert pseudo_mass == pytest.approx(0.2 * (0.5 if rule == "weighted" else 1.0))
            else:
                assert pseudo_mass == pytest.approx(expected, rel=1e-5)
            assert float(item["target"][0]) == pytest.approx(crop_share)


def test_rounds_write_provenance_and_a_table(pseudo_run, tiny_root):
    _cfg, root = pseudo_run
    rounds = pd.read_csv(root / "rounds.csv")
    assert rounds["kind"].tolist() == ["given", "pseudo", "control"]
    assert rounds["kept_chunks"].iloc[1] > 0 and rounds["pseudo_chunks"].iloc[1] == 3 * 6
    table = pd.read_csv(root / "round_1" / "pseudo.csv", dtype={"soundscape": str})
    assert {"row_id", "soundscape", "offset_s", "kept", "weight"} <= set(table.columns)
    assert table["offset_s"].min() == 0 and table["offset_s"].max() == 25
    meta = json.loads((root / "round_1" / "pseudo_meta.json").read_text())
    assert meta["power"] == 1.0 and meta["min_max_prob"] == 0.05 and len(meta["models"]) == 1
    assert (root / "round_1" / "DONE").is_file() and (root / "control_1" / "best.pt").is_file()
    member = load_member(root / "round_1" / "run", 1.0, "torch", "cpu")  # a run folder infer accepts
    assert member.classes == pd.read_csv(tiny_root / "taxonomy.csv", dtype=str)["primary_label"].tolist()


def test_resume_finishes_the_unfinished_round_without_redoing_its_work(pseudo_run, tmp_path):
    cfg, root = pseudo_run
    copy = shutil.copytree(root, tmp_path / "p")
    (copy / "round_1" / "DONE").unlink()  # as if killed after round 1's training, before it was marked done
    before = snapshot(copy / "round_1")
    rc = main(
        [
            "pseudo",
            str(REPO / "configs" / "demo.yaml"),
            *tiny_overrides(cfg.data.root, cfg.data.cache_dir),
            *[f"pseudo.{k}" for k in ("rounds=1", "epochs=1", "min_max_prob=0.05", "control=true")],
            f"pseudo.init_checkpoints=[{cfg.pseudo.init_checkpoints[0]}]",
            "--out",
            str(copy),
            "--resume",
        ]
    )
    assert rc == 0
    assert (copy / "round_1" / "DONE").is_file()
    after = snapshot(copy / "round_1")
    assert {k: v for k, v in after.items() if k != "DONE"} == before  # labels and finished runs reused as they were
    assert pd.read_csv(copy / "rounds.csv")["round"].tolist() == [0, 1, 1]


def test_bad_pools_and_filters_stop_with_advice(trained_run, tiny_root, tmp_path):
    cfg, _, run_dir = trained_run
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root, ignore=shutil.ignore_patterns("train_soundscapes"))
    (root / "train_soundscapes").mkdir()
    base = [f"pseudo.init_checkpoints=[{run_dir}]", "pseudo.rounds=1", "pseudo.epochs=1"]
    with pytest.raises(PseudoError, match="no unlabelled soundscapes"):
        run_pseudo(tiny_cfg(root, tmp_path / "c", *base), tmp_path / "r1")
    shutil.copy(tiny_root / "test_soundscapes" / "soundscape_0000.ogg", root / "train_soundscapes")
    with pytest.raises(PseudoError, match="also labelled"):
        run_pseudo(tiny_cfg(root, tmp_path / "c", *base), tmp_path / "r2")
    with pytest.raises(PseudoError, match=r"kept 0 of 18 chunks.*lower pseudo\.min_max_prob"):
        run_pseudo(tiny_cfg(tiny_root, cfg.cache_path, *base, "pseudo.min_max_prob=1.0"), tmp_path / "r3")


@pytest.mark.slow
def test_out_of_fold_rounds_never_learn_their_own_labels(trained_run, tiny_root, tmp_path):
    cfg, _, run_dir = trained_run
    over = [
        f"pseudo.init_checkpoints=[{run_dir}]",
        "pseudo.rounds=2",
        "pseudo.epochs=1",
        "pseudo.power=[1.0]",
        "pseudo.min_max_prob=0.0",
        "pseudo.oof_folds=2",
    ]
    pcfg = tiny_cfg(tiny_root, cfg.cache_path, *over)
    root = run_pseudo(pcfg, tmp_path / "oof").root
    folds = soundscape_folds(load_birdclef(tiny_root).train_soundscapes, 2, pcfg.data.seed)
    assert sorted(folds.values()) == [0, 0, 1]
    for r in (1, 2):
        for k in (0, 1):
            seen = json.loads((root / f"round_{r}" / "run" / f"run_{k}" / "pseudo_soundscapes.json").read_text())
            assert seen["trained_on"] == sorted(n for n, f in folds.items() if f != k)
    meta1 = json.loads((root / "round_1" / "pseudo_meta.json").read_text())
    meta2 = json.loads((root / "round_2" / "pseudo_meta.json").read_text())
    assert not meta1["out_of_fold"] and meta2["out_of_fold"]
    for name, fold in folds.items():  # round 2 labels fold k with round 1's model k only
        assert meta2["labelled_by"][name] == [str(root / "round_1" / "run" / f"run_{fold}")]
    # and its labels are that model's predictions (power 1, nothing trimmed below 0.1 compared)
    table = pd.read_csv(root / "round_2" / "pseudo.csv", dtype={"soundscape": str})
    name = next(n for n, f in folds.items() if f == 1)
    member = load_member(root / "round_1" / "run" / "run_1", 1.0, "torch", "cpu")
    icfg = copy.deepcopy(pcfg.infer)
    icfg.tta_shifts = list(pcfg.pseudo.tta_shifts)
    own = infer_folder(
        tiny_root / "train_soundscapes",
        [member],
        icfg,
        member.classes,
        progress=False,
        files=[tiny_root / "train_soundscapes" / name],
    ).submission
    mine = table[table["soundscape"] == name]
    got, want = mine[member.classes].to_numpy(), own[member.classes].to_numpy()
    np.testing.assert_allclose(got[want >= 0.1], want[want >= 0.1], atol=1e-4)
    rounds = pd.read_csv(root / "rounds.csv")
    assert rounds["kind"].tolist() == ["given", "pseudo", "pseudo"]
    assert rounds["run_dir"].iloc[1].count(";") == 1 and rounds["soundscape_auc"].iloc[1:].notna().all()
    names = [e.name for e in gather([root]).entries]  # the report shows every fold model
    assert names == ["round 0 (given)", "round 1 fold 0", "round 1 fold 1", "round 2 fold 0", "round 2 fold 1"]
