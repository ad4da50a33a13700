"""MLflow tracking (``tracking.mlflow_uri``): runs, nested pseudo-label rounds, and reading runs back.

A training run gets one MLflow run: Lightning's ``MLFlowLogger`` logs its metrics, and when it ends the run
folder's small files (config, history, held-out and soundscape predictions) are logged under the artifact path
``run/`` — enough for ``birdsed report`` to evaluate the run from the store alone. The MLflow run id is kept in
``RUN_DIR/mlflow.json``, so a resumed run continues its MLflow run. ``birdsed pseudo`` makes a parent run for the
folder (its rounds table, per-round figures) with every round's training run nested under it (tag
``mlflow.parentRunId``), each with its kept and predicted pseudo-chunk counts.

With a local SQLite store (``sqlite:///PATH/mlflow.db``, no server) artifacts go beside the database, in
``PATH/mlartifacts``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from birdsed.errors import BirdsedError
from birdsed.outputs import atomic_write, read_json

log = logging.getLogger(__name__)

RUN_ID_FILE = "mlflow.json"
RUN_FILES = (
    "config.yaml",
    "run.json",
    "metrics.json",
    "oof.csv",
    "soundscape_preds.csv",
    "soundscape_preds_last.csv",
    "rounds.csv",
)
ARTIFACT_DIR = "run"


class TrackingError(BirdsedError, RuntimeError):
    """MLflow is missing, or a run cannot be found in the store."""


def client(uri: str) -> Any:
    """An ``MlflowClient`` of `uri`."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise TrackingError("tracking.mlflow_uri needs MLflow: pip install -e '.[tracking]'") from None
    return MlflowClient(tracking_uri=uri)


def artifact_location(uri: str) -> str | None:
    """Where a new experiment of `uri` keeps its artifacts: beside a SQLite database; the server's default else."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    return None


def experiment_id(uri: str, name: str) -> str:
    """The id of experiment `name` in `uri`, created if missing."""
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return c.create_experiment(name, artifact_location=artifact_location(uri))


def start_run(uri: str, experiment: str, run_dir: Path, name: str, kind: str, parent: str = "") -> str:
    """The MLflow run of `run_dir`: the one its ``mlflow.json`` names (a resumed run continues it), else a new run
    (nested under `parent` when given). Returns its id."""
    path = Path(run_dir) / RUN_ID_FILE
    if path.is_file():
        return read_json(path)["run_id"]
    tags = {"birdsed.kind": kind, "birdsed.run_dir": str(Path(run_dir).resolve())}
    if parent:
        tags["mlflow.parentRunId"] = parent
    run = client(uri).create_run(experiment_id(uri, experiment), run_name=name, tags=tags)
    atomic_write(path, json.dumps({"run_id": run.info.run_id, "tracking_uri": uri}))
    return run.info.run_id


def lightning_logger(uri: str, experiment: str, run_id: str) -> Any:
    """Lightning's ``MLFlowLogger`` writing into the existing run `run_id`."""
    from lightning.pytorch.loggers import MLFlowLogger

    return MLFlowLogger(experiment_name=experiment, tracking_uri=uri, run_id=run_id)


def log_run_files(uri: str, run_id: str, run_dir: Path) -> None:
    """Log the run folder's small files under ``run/`` (what :func:`download_run` reads back)."""
    c = client(uri)
    for name in RUN_FILES:
        if (Path(run_dir) / name).is_file():
            c.log_artifact(run_id, str(Path(run_dir) / name), ARTIFACT_DIR)


def log_metrics(uri: str, run_id: str, metrics: dict[str, float | None], step: int = 0) -> None:
    """Log the finite numbers of `metrics` at `step`."""
    c = client(uri)
    for key, value in metrics.items():
        if value is not None and value == value:
            c.log_metric(run_id, key, float(value), step=step)


def finish_run(uri: str, run_id: str) -> None:
    client(uri).set_terminated(run_id, "FINISHED")


def download_run(uri: str, run_id: str, dst: Path) -> tuple[str, list[tuple[str, Path]]]:
    """A run's logged folder files as local folders: (run name, [(entry name, folder)]). A parent run (a pseudo
    folder) gives its nested runs in the order they started, named ``<parent>: <child>``.

    Raises:
        TrackingError: the run does not exist, or neither it nor a nested run logged its files.
    """
    c = client(uri)
    try:
        run = c.get_run(run_id)
    except Exception as err:  # MlflowException: no such run
        raise TrackingError(f"{uri}: run {run_id}: {str(err).splitlines()[0]}") from None
    name = run.info.run_name or run_id
    children = c.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'", order_by=["start_time ASC"]
    )
    out = []
    for r in children or [run]:
        folder = Path(dst) / r.info.run_id
        folder.mkdir(parents=True, exist_ok=True)
        names = {a.path for a in c.list_artifacts(r.info.run_id, ARTIFACT_DIR)}
        if f"{ARTIFACT_DIR}/metrics.json" not in names:
            continue
        c.download_artifacts(r.info.run_id, ARTIFACT_DIR, str(folder))
        label = r.info.run_name or r.info.run_id
        out.append((f"{name}: {label}" if children else label, folder / ARTIFACT_DIR))
    if not out:
        raise TrackingError(f"{uri}: run {run_id} ({name}) has no logged run files (run/metrics.json)")
    return name, out


def log_report(uri: str, run_id: str, files: list[Path]) -> None:
    """Log a report (page, numbers, screenshot) under ``report/`` of `run_id`."""
    c = client(uri)
    for f in files:
        if Path(f).is_file():
            c.log_artifact(run_id, str(f), "report")
