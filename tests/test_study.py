"""``birdsed study``: variants × seeds as run folders, shards of a job array, kill and resume, paired statistics."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from birdsed.cli import main
from birdsed.config.load import save_config
from birdsed.scoring.metrics import macro_auc, read_aligned
from birdsed.study.runner import check_run, execute_run, prepare_out
from birdsed.study.spec import StudyError, load_study, parse_shard, parse_study
from birdsed.study.stats import Predictions, fast_macro_auc, select_out_of_sample, summarize, summary_lines
from tests.conftest import REPO, cli_error, cli_run, kill_after_epochs, tiny_overrides

CONFIG = str(REPO / "configs" / "demo.yaml")


def test_fast_macro_auc_is_the_metric_with_ties_and_unscored_classes():
    rng = np.random.default_rng(0)
    y = (rng.random((60, 7)) < 0.2).astype(float)
    y[:, 3] = 0  # no positive: not scored
    y[:, 5] = 1  # no negative: not scored
    scores = rng.integers(0, 5, (60, 7)) / 4  # many ties
    assert fast_macro_auc(y, scores) == pytest.approx(macro_auc(y, scores), abs=1e-12)


def test_study_file_errors_name_the_key(tmp_path):
    base = {"config": CONFIG, "variants": {"a": {}, "b": {"train.lr": 0.01}}, "seeds": [0, 1]}
    study = parse_study(base, "s.yaml")
    assert study.baseline == "a" and study.variants["b"] == ["train.lr=0.01"]
    assert study.runs() == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]  # seed by seed: paired results come first
    cases = [
        ({"colour": 1}, "unknown key"),
        ({"command": "fit"}, "command must be one of"),
        ({"baseline": "c"}, "baseline 'c' is not one of"),
        ({"seeds": [0, 0]}, "distinct integers"),
        ({"variants": {"a": {"train.lr": -1}}}, r"variant 'a'.*train\.lr"),
        ({"variants": {"a/b": {}}}, "names a folder"),
        ({"variants": {"a": {"train.nope": 1}}}, "nope"),
    ]
    for change, message in cases:
        with pytest.raises(StudyError, match=message):
            parse_study({**base, **change}, "s.yaml")
    with pytest.raises(StudyError, match="study file not found"):
        load_study(tmp_path / "missing.yaml")
    for bad in ("2/2", "1", "a/b", "-1/3"):
        with pytest.raises(StudyError, match="--shard"):
            parse_shard(bad)
    assert parse_shard("1/3") == (1, 3)


def test_a_run_made_with_another_config_is_not_reused(tmp_path):
    study = parse_study({"config": CONFIG, "variants": {"a": {}, "b": {"train.lr": 0.01}}}, "s.yaml")
    run = tmp_path / "run"
    run.mkdir()
    save_config(study.run_config("a", 0, threads=1), run / "config.yaml")
    check_run(run, study.run_config("a", 0), "train")  # threads only change how it runs: the same run
    with pytest.raises(StudyError, match=r"another config than the study's \(train\.lr: 0\.003 → 0\.01\)"):
        check_run(run, study.run_config("b", 0), "train")
    # the pseudo section is never read by `birdsed train`: a train run stays valid, a pseudo run does not
    cfg = study.run_config("a", 0)
    cfg.pseudo.rounds += 1
    check_run(run, cfg, "train")
    with pytest.raises(StudyError, match=r"pseudo\.rounds"):
        check_run(run, cfg, "pseudo")
    # a variant may set a string to empty (no background folder), not to null
    variant = {"augment.background_dir": "", "augment.background_prob": 0.0}
    study = parse_study({"config": CONFIG, "variants": {"a": variant}}, "s.yaml")
    assert study.run_config("a", 0).augment.background_dir == ""


@pytest.mark.slow
def test_study_shards_kill_resume_and_statistics(tiny_root, tmp_path, capsys):
    over = [*tiny_overrides(tiny_root, tmp_path / "cache"), "train.threads=1", "train.epochs=2"]
    study_file = tmp_path / "study.yaml"
    study_file.write_text(
        yaml.safe_dump(
            {
                "command": "train",
                "config": CONFIG,
                "overrides": over,
                "baseline": "base",
                "seeds": [0, 1],
                "bootstrap": 400,
                "variants": {"base": {}, "nomix": {"augment.mixup_prob": 0.0, "train.lr": 0.01}},
            }
        )
    )
    out = tmp_path / "study"
    # a job array of two tasks on one folder; the second is killed inside its first run
    cmd = [sys.executable, "-m", "birdsed", "study", str(study_file), "--out", str(out), "--shard"]
    first = subprocess.Popen([*cmd, "0/2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    second = subprocess.Popen([*cmd, "1/2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kill_after_epochs(second, out / "nomix" / "seed0" / "metrics.json", epochs=1)
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr.decode()[-2000:]
    table = pd.read_csv(out / "study.csv")
    assert table.set_index(["variant", "seed"])["state"].to_dict() == {
        ("base", 0): "finished",
        ("nomix", 0): "unfinished",
        ("base", 1): "finished",
        ("nomix", 1): "missing",
    }
    untouched = (out / "base" / "seed0" / "metrics.json").stat().st_mtime_ns
    done = cli_run(
        ["study", study_file, "--out", out, "--resume", "--jobs", "2"], timeout=600
    )  # the 2 left, side by side
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "base" / "seed0" / "metrics.json").stat().st_mtime_ns == untouched  # finished: skipped
    resumed = json.loads((out / "nomix" / "seed0" / "run.json").read_text())
    assert resumed["resumed"][0]["after_epoch"] >= 0  # continued, not restarted
    assert "Δ" in done.stdout and "4 of 4 runs finished" in done.stdout

    # the statistics against a direct computation from the run folders
    table = pd.read_csv(out / "study.csv").set_index(["variant", "seed"])
    summary = json.loads((out / "summary.json").read_text())
    solution = tiny_root / "test_solution.csv"
    direct = {}
    for (v, s), row in table.iterrows():
        y, p, _ = read_aligned(solution, row["predictions"])
        direct[v, s] = macro_auc(y, p)
        assert row["soundscape_auc"] == pytest.approx(direct[v, s], abs=1e-4)  # what training logged
    last = {}
    for (v, s), row in table.iterrows():  # the last epoch's predictions, as the history logged them
        y, p, _ = read_aligned(solution, row["predictions_last"])
        last[v, s] = macro_auc(y, p)
        assert row["last_soundscape_auc"] == pytest.approx(last[v, s], abs=1e-4)
    last_diffs = np.array([last["nomix", s] - last["base", s] for s in (0, 1)])
    (dl,) = summary["differences_last"]
    assert dl["basis"] == "seeds and soundscapes"
    assert dl["diff_mean"] == pytest.approx(last_diffs.mean(), abs=1e-9)
    diffs = np.array([direct["nomix", s] - direct["base", s] for s in (0, 1)])
    (d,) = summary["differences"]
    assert d["variant"] == "nomix" and d["seeds"] == [0, 1]
    assert d["diff_mean"] == pytest.approx(diffs.mean(), abs=1e-9)
    assert d["diff_sd"] == pytest.approx(diffs.std(ddof=1), abs=1e-9)
    assert diffs.min() - 1e-9 <= d["ci_seeds"][0] <= d["ci_seeds"][1] <= diffs.max() + 1e-9
    for key in ("ci_soundscapes", "ci_both"):
        assert d[key][0] < d[key][1]
    assert d["verdict"] == "needs ≥ 3 seeds"  # two seeds: intervals, but no verdict
    stats = {e["variant"]: e for e in summary["variants"]}
    for v in ("base", "nomix"):
        values = [direct[v, s] for s in (0, 1)]
        assert stats[v]["soundscape_auc"]["mean"] == pytest.approx(np.mean(values), abs=1e-4)
        assert stats[v]["soundscape_auc"]["sd"] == pytest.approx(np.std(values, ddof=1), abs=1e-4)

    # the report shows it
    page = tmp_path / "study.html"
    assert main(["report", str(out), "--out", str(page)]) == 0  # in-process: a subprocess costs seconds of imports
    html = page.read_text()
    assert "Study: study" in html and d["verdict"] in html and "data:image/png;base64" in html
    numbers = json.loads(page.with_suffix(".json").read_text())
    assert numbers["studies"][0]["summary"]["differences"][0]["diff_mean"] == pytest.approx(d["diff_mean"])
    # a different study in the same folder is refused
    other = tmp_path / "other.yaml"
    other.write_text(study_file.read_text().replace("bootstrap: 400", "bootstrap: 500"))
    assert "holds another study" in cli_error(capsys, ["study", other, "--out", out, "--resume"])


def test_runs_without_window_predictions_are_compared_over_seeds_only():
    study = parse_study({"config": CONFIG, "variants": {"a": {}, "b": {}}, "seeds": [0, 1, 2], "bootstrap": 200}, "s")
    auc = {("a", 0): 0.60, ("b", 0): 0.65, ("a", 1): 0.62, ("b", 1): 0.61, ("a", 2): 0.58, ("b", 2): 0.66}
    table = pd.DataFrame(
        [
            {"variant": v, "seed": s, "state": "finished", "soundscape_auc": x, "last_soundscape_auc": x + 0.01,
             "val_auc": 1.0, "minutes": 1.0, "predictions": "", "predictions_last": ""}
            for (v, s), x in auc.items()
        ]
    )  # fmt: skip
    summary = summarize(study, table)
    (d,) = summary["differences"]
    per_seed = [0.05, -0.01, 0.08]
    assert d["basis"] == "seeds only" and d["ci_both"] == [None, None]
    assert d["diff_per_seed"] == pytest.approx(per_seed) and d["diff_mean"] == pytest.approx(np.mean(per_seed))
    assert min(per_seed) - 1e-9 <= d["ci_seeds"][0] <= d["ci_seeds"][1] <= max(per_seed) + 1e-9
    assert summary["differences_last"][0]["diff_mean"] == pytest.approx(np.mean(per_seed))
    lo, hi = d["ci_seeds"]
    assert d["verdict"] == ("helps" if lo > 0 else "hurts" if hi < 0 else "inside the noise")
    assert "Δlast" in "\n".join(summary_lines(summary))


def test_the_out_of_sample_choice_finds_a_real_gain_and_prices_a_lucky_one():
    """Choose on half the soundscapes, score on the other half: a variant better everywhere is chosen almost always
    and keeps its gain out of sample; among variants only as good as the baseline, the winner's in-sample figure
    overstates it (optimism > 0) and its out-of-sample gain is about nothing. K folds agree."""
    rng = np.random.default_rng(0)
    n_sound, rows, classes, seeds = 30, 12, 6, [0, 1, 2]
    y = (rng.random((n_sound * rows, classes)) < 0.2).astype(float)
    groups = [np.arange(g * rows, (g + 1) * rows) for g in range(n_sound)]

    def noisy(sd):
        return y + rng.normal(0, sd, y.shape)

    real = {(v, s): noisy(0.6 if v == "good" else 1.0) for v in ("base", "good") for s in seeds}
    study = parse_study({"config": CONFIG, "variants": {"base": {}, "good": {}}, "seeds": seeds}, "s")
    sel = select_out_of_sample(study, Predictions(y, real, groups), seeds, np.random.default_rng(1))
    assert sel["splits"] == 200 and sel["chosen"]["good"] >= 0.95 and sel["most_chosen"] == "good"
    full = np.mean([fast_macro_auc(y, real[("good", s)]) - fast_macro_auc(y, real[("base", s)]) for s in seeds])
    assert sel["gain"] == pytest.approx(full, abs=0.02) and sel["gain"] > 0.05 and sel["share_better"] >= 0.95

    names = ["base", *(f"same{i}" for i in range(5))]
    equal = {(v, s): noisy(1.0) for v in names for s in seeds}
    study = parse_study({"config": CONFIG, "variants": {v: {} for v in names}, "seeds": seeds}, "s")
    sel = select_out_of_sample(study, Predictions(y, equal, groups), seeds, np.random.default_rng(1))
    assert sel["optimism"] > 0.003  # the winner of equals looked better where it was chosen than it is
    assert abs(sel["gain"]) < sel["optimism"] and sel["chosen"]["base"] < 0.5
    study.selection = {"scheme": "folds", "repeats": 50, "folds": 5}
    folds = select_out_of_sample(study, Predictions(y, equal, groups), seeds, np.random.default_rng(1))
    assert folds["splits"] == 50 and folds["optimism"] is None and abs(folds["gain"]) < 0.03
    with pytest.raises(StudyError, match=r"selection\.scheme"):
        parse_study({"config": CONFIG, "variants": {"a": {}}, "selection": {"scheme": "thirds"}}, "s")


def test_run_states(tmp_path):
    from birdsed.study.runner import run_state
    from birdsed.training.runs import MARKER

    run = tmp_path / "run"
    assert run_state(run, "train") == "missing"
    run.mkdir()
    (run / MARKER).write_text("{}")
    assert run_state(run, "train") == "started"  # killed before its config: made again with --overwrite
    (run / "config.yaml").write_text("name: x\n")
    assert run_state(run, "train") == "unfinished"
    (run / "metrics.json").write_text(json.dumps({"finished": True, "history": []}))
    assert run_state(run, "train") == "finished"


def test_a_study_may_grow_by_variants_and_seeds_but_not_change(tmp_path):
    def study(variants, seeds):
        return parse_study({"config": CONFIG, "variants": variants, "seeds": seeds, "bootstrap": 200}, "s")

    out = tmp_path / "study"
    prepare_out(study({"a": {}, "b": {"train.lr": 0.01}}, [0, 1]), out, resume=False)
    (out / "a").mkdir()  # a run was made
    grown = study({"a": {}, "b": {"train.lr": 0.01}, "c": {"train.epochs": 3}}, [0, 1, 2])
    prepare_out(grown, out, resume=True)
    assert sorted(json.loads((out / "study.json").read_text())["variants"]) == ["a", "b", "c"]
    changed = study({"a": {}, "b": {"train.lr": 0.02}, "c": {"train.epochs": 3}}, [0, 1, 2])
    fewer = study({"a": {}, "b": {"train.lr": 0.01}, "c": {"train.epochs": 3}}, [0, 2])
    for other in (changed, fewer):
        with pytest.raises(StudyError, match="another study"):
            prepare_out(other, out, resume=True)
    with pytest.raises(StudyError, match="--resume"):
        prepare_out(grown, out, resume=False)


def test_an_infer_study_compares_inference_settings_on_trained_checkpoints(trained_run, tiny_root, tmp_path, capsys):
    from birdsed.inference.infer import smooth
    from birdsed.inference.submit import infer_folder, load_ensemble, output_columns

    cfg, _, run_dir = trained_run
    config = tmp_path / "config.yaml"
    save_config(cfg, config)
    for s in (0, 1):  # two "seeds" of one trained model: the folder form (→ best.pt) and a file
        (tmp_path / f"seed{s}").mkdir()
        (tmp_path / f"seed{s}" / "best.pt").symlink_to(run_dir / ("best.pt" if s == 0 else "last.pt"))
    # a variant's own models (another recipe's, seed by seed): seed 0 another model (its head's weights moved),
    # seed 1 the same one
    state = torch.load(run_dir / "best.pt", weights_only=False)
    weight = state["state_dict"]["head.fc.weight"]
    weight += torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)) * weight.std()
    torch.save(state, tmp_path / "other0.pt")
    (tmp_path / "other1.pt").symlink_to(run_dir / "last.pt")
    kernel = [0.25, 0.5, 0.25]
    data = {
        "command": "infer",
        "config": str(config),
        "checkpoints": str(tmp_path / "seed{seed}"),
        "seeds": [0, 1],
        "bootstrap": 200,
        "baseline": "plain",
        "variants": {
            "plain": {},
            "smooth": {"infer.smoothing": kernel},
            "tta": {"infer.tta_shifts": [0.0, 1.0]},
            "other": {"checkpoints": str(tmp_path / "other{seed}.pt")},
        },
    }
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(data))
    out = tmp_path / "study"
    assert main(["study", str(study_file), "--out", str(out)]) == 0  # in-process: a subprocess costs seconds
    assert "8 of 8 runs finished" in capsys.readouterr().out
    table = pd.read_csv(out / "study.csv").set_index(["variant", "seed"])
    assert table.loc[("plain", 1), "checkpoint"] == str(tmp_path / "seed1" / "best.pt")
    assert table.loc[("other", 0), "checkpoint"] == str(tmp_path / "other0.pt")
    mine, theirs = (pd.read_csv(table.loc[k, "predictions"]) for k in (("other", 1), ("plain", 1)))
    pd.testing.assert_frame_equal(mine, theirs)  # one model, one inference
    mine, theirs = (pd.read_csv(table.loc[k, "predictions"]) for k in (("other", 0), ("plain", 0)))
    assert mine["row_id"].equals(theirs["row_id"])
    assert not np.allclose(mine.iloc[:, 1:], theirs.iloc[:, 1:], atol=1e-3)

    # the plain run is `birdsed infer` of that checkpoint on the labelled soundscapes, scored like `birdsed score`
    solution = tiny_root / "test_solution.csv"
    members = load_ensemble([tmp_path / "seed0" / "best.pt"], cfg.infer, "cpu")
    columns = output_columns(members, tiny_root / "sample_submission.csv")
    direct = infer_folder(tiny_root / "test_soundscapes", members, cfg.infer, columns, "cpu", progress=False)
    plain = pd.read_csv(table.loc[("plain", 0), "predictions"])
    assert plain["row_id"].tolist() == pd.read_csv(solution)["row_id"].tolist()
    want = direct.submission.set_index("row_id").loc[plain["row_id"], columns].to_numpy()
    np.testing.assert_allclose(plain[columns].to_numpy(), want, atol=1e-6)
    # the variants' settings are applied: smoothing is the kernel over each soundscape's windows
    smoothed = pd.read_csv(table.loc[("smooth", 0), "predictions"])
    stems = plain["row_id"].str.rsplit("_", n=1).str[0]
    for stem in stems.unique():
        rows = (stems == stem).to_numpy()
        expect = smooth(plain.loc[rows, columns].to_numpy(), kernel)
        np.testing.assert_allclose(smoothed.loc[rows, columns].to_numpy(), expect, atol=1e-5)
    assert not np.allclose(pd.read_csv(table.loc[("tta", 0), "predictions"])[columns], plain[columns])

    # the statistics: the paired difference from the files; no "last" figure for a fixed checkpoint
    auc = {}
    for key, row in table.iterrows():
        y, p, _ = read_aligned(solution, row["predictions"])
        auc[key] = macro_auc(y, p)
        assert row["soundscape_auc"] == pytest.approx(auc[key], abs=1e-9)
    summary = json.loads((out / "summary.json").read_text())
    diffs = {d["variant"]: d for d in summary["differences"]}
    for v in ("smooth", "tta", "other"):
        expect = np.mean([auc[v, s] - auc["plain", s] for s in (0, 1)])
        assert diffs[v]["diff_mean"] == pytest.approx(expect, abs=1e-9)
    assert summary["differences_last"] == []
    # resumed: finished runs are kept
    stamp = (out / "tta" / "seed1" / "metrics.json").stat().st_mtime_ns
    assert main(["study", str(study_file), "--out", str(out), "--resume"]) == 0
    assert (out / "tta" / "seed1" / "metrics.json").stat().st_mtime_ns == stamp
    # a finished run predicted by another checkpoint than its variant's is not reused
    study = parse_study(data, "s.yaml")
    shutil.copytree(out / "plain" / "seed0", tmp_path / "copied")
    with pytest.raises(StudyError, match=r"copied: predicted by .*seed0.*not by the study's .*other0\.pt"):
        execute_run(study, "other", 0, str(tmp_path / "copied"))

    # refusals name the key
    for change, message in (
        ({"variants": {"plain": {}, "lr": {"train.lr": 0.01}}}, r"infer\.\* and teacher\.\* only.*train\.lr"),
        ({"overrides": ["train.epochs=3"]}, r"infer\.\* and teacher\.\* only.*train\.epochs"),
        ({"checkpoints": str(tmp_path / "seed0")}, r"checkpoints:.*\{seed\}"),
        ({"seeds": [0, 7]}, r"no checkpoint at .*seed7"),
        ({"command": "train", "variants": {"plain": {}}}, "only an infer study"),
        ({"variants": {"plain": {}, "o": {"checkpoints": str(tmp_path / "x.pt")}}}, r"variant 'o'.*\{seed\}"),
        ({"variants": {"plain": {}, "o": {"checkpoints": str(tmp_path / "x{seed}.pt")}}}, r"no checkpoint at .*x0"),
        ({"command": "pseudo", "checkpoints": "", "variants": {"o": {"checkpoints": "r{seed}"}}}, "variant 'o'"),
    ):
        with pytest.raises(StudyError, match=message):
            parse_study({**data, **change}, "s.yaml")


@pytest.mark.slow
def test_a_pseudo_study_compares_a_round_with_its_given_round_0(trained_run, tiny_root, tmp_path):
    cfg, _, run_dir = trained_run
    config = tmp_path / "config.yaml"
    save_config(cfg, config)
    for s in (0, 1):  # each seed's round 0: one trained model under two names
        (tmp_path / f"r0_seed{s}").symlink_to(run_dir, target_is_directory=True)
    data = {
        "command": "pseudo",
        "config": str(config),
        "overrides": [
            f"pseudo.init_checkpoints=[{tmp_path}/r0_seed{{seed}}]",
            "pseudo.epochs=1",
            "pseudo.min_max_prob=0.05",
            "train.threads=1",
        ],
        "seeds": [0, 1],
        "bootstrap": 200,
        "baseline": "round0",
        "variants": {"round0": {"pseudo.rounds": 0}, "round1": {"pseudo.rounds": 1}},
    }
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(data))
    out = tmp_path / "study"
    done = cli_run(["study", study_file, "--out", out], timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "4 of 4 runs finished" in done.stdout
    table = pd.read_csv(out / "study.csv").set_index(["variant", "seed"])

    given = json.loads((run_dir / "metrics.json").read_text())["summary"]
    for s in (0, 1):
        # {seed} is filled in: each pseudo folder's round 0 is its seed's model
        rounds = pd.read_csv(out / "round1" / f"seed{s}" / "rounds.csv")
        assert rounds["run_dir"].iloc[0] == str(tmp_path / f"r0_seed{s}" / "best.pt")
        # the baseline is round 0 itself: the given run's figures and minutes
        row = table.loc[("round0", s)]
        assert row["state"] == "finished"
        assert row["soundscape_auc"] == pytest.approx(given["soundscape_auc"], abs=1e-12)
        assert row["last_soundscape_auc"] == pytest.approx(given["last_soundscape_auc"], abs=1e-12)
        assert row["minutes"] == pytest.approx(given["minutes"])
        # a round is scored at its own run, and its minutes count the given round 0's too
        own = json.loads((out / "round1" / f"seed{s}" / "round_1" / "run" / "metrics.json").read_text())["summary"]
        row = table.loc[("round1", s)]
        assert row["soundscape_auc"] == pytest.approx(own["soundscape_auc"], abs=1e-12)
        assert row["minutes"] == pytest.approx(given["minutes"] + own["minutes"])
    summary = json.loads((out / "summary.json").read_text())
    (diff,) = summary["differences"]
    expect = np.mean([table.loc[("round1", s), "soundscape_auc"] - given["soundscape_auc"] for s in (0, 1)])
    assert diff["diff_mean"] == pytest.approx(expect, abs=1e-9)


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_study_file_parses_and_resolves_its_configs(path, monkeypatch):
    """The study files in configs/studies are what RESULTS.md cites: each parses, every variant's config resolves
    (from the repository root, as their usage lines run them); an infer study may only lack its trained models."""
    monkeypatch.chdir(REPO)
    try:
        study = load_study(path)
    except StudyError as err:
        assert yaml.safe_load(path.read_text())["command"] == "infer", err
        assert "checkpoints: no checkpoint at" in str(err)
        return
    assert study.baseline in study.variants and len(study.seeds) >= 2
    for variant in study.variants:
        assert study.run_config(variant, study.seeds[0]).train.seed == study.seeds[0]
