"""MLflow tracking against a local SQLite store: nested pseudo rounds with their chunk counts, and a report read
back from the store (and logged to it)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from birdsed.cli import main
from birdsed.reports.report import gather
from birdsed.training.tracking import RUN_ID_FILE
from tests.conftest import REPO, cli_error, tiny_overrides

pytestmark = pytest.mark.slow


def test_pseudo_rounds_nest_and_the_report_reads_the_store(trained_run, tiny_root, tmp_path, capsys):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    track = [f"tracking.mlflow_uri={uri}", "tracking.experiment=t"]
    cfg, _, base = trained_run
    over = [
        f"pseudo.init_checkpoints=[{base}]",
        "pseudo.rounds=1",
        "pseudo.epochs=1",
        "pseudo.min_max_prob=0.05",
        "pseudo.control=true",
        "name=chain",
        *track,
    ]
    tiny = tiny_overrides(tiny_root, cfg.cache_path)
    assert (
        main(["pseudo", str(REPO / "configs" / "demo.yaml"), *map(str, tiny), *over, "--out", str(tmp_path / "p")]) == 0
    )

    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("t")
    parent = json.loads((tmp_path / "p" / RUN_ID_FILE).read_text())["run_id"]
    children = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.info.run_name for r in children) == ["chain_round1", "chain_round1"]  # the round and its control
    kept = {Path(r.data.tags["birdsed.run_dir"]).parent.name: r.data.metrics.get("kept_chunks") for r in children}
    rounds = pd.read_csv(tmp_path / "p" / "rounds.csv").set_index("kind")
    assert rounds.loc["pseudo", "kept_chunks"] > 0
    assert kept == {"round_1": rounds.loc["pseudo", "kept_chunks"], "p": 0.0}  # round_1/run, and control_1
    assert client.get_run(parent).data.metrics["pseudo_kept_chunks"] == rounds.loc["pseudo", "kept_chunks"]
    assert {a.path for a in client.list_artifacts(parent, "run")} >= {"run/rounds.csv", "run/config.yaml"}

    # the report from the store alone equals the report from the folders
    page = tmp_path / "r.html"
    assert main(["report", "--mlflow-uri", uri, "--mlflow-run", parent, "--out", str(page)]) == 0
    numbers = json.loads(page.with_suffix(".json").read_text())
    from_store = {e["name"]: e["evaluations"]["soundscape"]["macro_auc"] for e in numbers["entries"]}
    folders = gather([tmp_path / "p" / "round_1" / "run", tmp_path / "p" / "control_1"])
    expected = sorted(e.evals["soundscape"].score.macro_auc for e in folders.entries)
    assert sorted(from_store.values()) == pytest.approx(expected, abs=1e-12)
    assert all(name.startswith("chain: chain_round1") for name in from_store)
    assert {a.path for a in client.list_artifacts(parent, "report")} == {"report/r.html", "report/r.json"}
    line = cli_error(capsys, ["report", "--mlflow-uri", uri, "--mlflow-run", "0" * 32, "--out", tmp_path / "x.html"])
    assert "run 00000000" in line
