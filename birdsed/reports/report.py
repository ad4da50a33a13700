"""Local validation reports: the numbers.

``birdsed report RUN_DIR [RUN_DIR ...] [--solution CSV --submission CSV ...] --out report.html`` gathers, for every
entry (a training run folder, each round and control of a pseudo-label folder, or a submission CSV), the Kaggle metric
and its friends on the validation clips (``oof.csv``) and on labelled soundscapes, the per-class AUC/AP, the training
history, the calibration bins and the resolved config; :mod:`birdsed.reports.html` draws them into one self-contained
HTML page. Every number the page shows is in the ``report.json`` written beside it.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdsed.config import solution_path
from birdsed.data.folder import BirdCLEFData, DataError, load_birdclef
from birdsed.errors import BirdsedError
from birdsed.outputs import read_csv_own, read_json, read_yaml
from birdsed.ownership import output_facts
from birdsed.reports.listen import Window, listen
from birdsed.scoring.metrics import Score, json_safe, read_aligned, score_arrays
from birdsed.study.runner import MARKER as STUDY_MARKER
from birdsed.study.runner import read_study_dir

log = logging.getLogger(__name__)

EVALUATIONS = ("soundscape", "validation")  # the order the page shows them in
TITLES = {"soundscape": "labelled soundscapes", "validation": "validation clips"}


class ReportError(BirdsedError, ValueError):
    """An input of the report is missing or malformed; the message names the file."""


@dataclass
class Evaluation:
    """Labels and scores of one entry on one evaluation set, aligned, with their metrics.

    Attributes:
        y_true: 0/1 labels, shape (N, C).
        y_score: probabilities, shape (N, C).
        classes: the C column labels.
        score: every metric of ``birdsed score``.
        source: the files the numbers come from.
    """

    y_true: np.ndarray
    y_score: np.ndarray
    classes: list[str]
    score: Score
    source: str


@dataclass
class Entry:
    """One column of the report: a run, a pseudo-label round or control, or a submission."""

    name: str
    kind: str  # run | supervised | given | pseudo | control | submission | teacher
    path: Path
    config: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    evals: dict[str, Evaluation] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class PseudoRounds:
    """A pseudo-label folder's ``rounds.csv``."""

    name: str
    path: Path
    table: pd.DataFrame
    entries: dict[tuple[int, str], Entry] = field(default_factory=dict)  # (round, kind) → its entry


@dataclass
class StudyView:
    """A study folder (``birdsed study``): its per-run table and its summary (:mod:`birdsed.study.runner`)."""

    name: str
    path: Path
    table: pd.DataFrame
    summary: dict[str, Any]


@dataclass
class Listening:
    """The windows of one entry worth listening to (:mod:`birdsed.reports.listen`)."""

    entry: str
    windows: list[Window]
    frames: bool  # whether the SED head's frame-level output is drawn (a run folder with a checkpoint)


@dataclass
class Report:
    """Everything the page shows."""

    entries: list[Entry]
    rounds: list[PseudoRounds]
    classes: pd.DataFrame  # index: class label; columns: group, training_files
    threshold: float
    solution: Path | None
    studies: list[StudyView] = field(default_factory=list)
    listening: Listening | None = None

    def config_differences(self) -> dict[str, dict[str, Any]]:
        """Resolved config keys whose values differ between the entries that have a config: key → {entry: value}."""
        flat = {e.name: _flatten(e.config) for e in self.entries if e.config is not None}
        if len(flat) < 2:
            return {}
        keys = sorted(set().union(*(f.keys() for f in flat.values())))
        out = {}
        for key in keys:
            values = {name: f.get(key) for name, f in flat.items()}
            if len({json.dumps(v, sort_keys=True, default=str) for v in values.values()}) > 1:
                out[key] = values
        return out


def _flatten(d: dict[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _read_config(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "config.yaml"
    return read_yaml(path) if path.is_file() else None


def _run_solution(config: dict[str, Any] | None) -> Path | None:
    """The labelled soundscape CSV a run was scored against during training (its ``data.solution``)."""
    data = (config or {}).get("data", {})
    return solution_path(data.get("root", ""), data.get("solution", "auto"))


@functools.lru_cache(maxsize=8)
def _data_folder(root: str) -> BirdCLEFData:
    """A data folder's tables (no audio checks), read once per report however many runs name it."""
    return load_birdclef(root, check_files=False)


def _validation(run_dir: Path, config: dict[str, Any] | None, threshold: float, notes: list[str]) -> Evaluation | None:
    """The best epoch's held-out predictions (``oof.csv``) against the recordings' primary + secondary labels."""
    path = run_dir / "oof.csv"
    if not path.is_file():
        return None
    oof = read_csv_own(path, ("filename", "primary_label"), "after:fold", {"filename": str, "primary_label": str})
    classes = [c for c in oof.columns if c not in ("filename", "primary_label", "fold")]
    y_true = np.zeros((len(oof), len(classes)))
    col = {c: i for i, c in enumerate(classes)}
    secondary: dict[str, list[str]] = {}
    root = (config or {}).get("data", {}).get("root")
    try:
        train = _data_folder(str(root)).train if root else None
    except (DataError, OSError) as err:
        train = None
        notes.append(f"validation labels from oof.csv's primary_label only ({root}: {err})")
    if train is not None:
        secondary = dict(zip(train["filename"], train["secondary"], strict=True))
    for i, (fname, primary) in enumerate(zip(oof["filename"], oof["primary_label"], strict=True)):
        for label in [primary, *secondary.get(fname, [])]:
            if label in col:
                y_true[i, col[label]] = 1.0
    y_score = oof[classes].to_numpy(dtype=float)
    return Evaluation(y_true, y_score, classes, score_arrays(y_true, y_score, classes, threshold), str(path))


def _soundscape(submission: Path, solution: Path, threshold: float) -> Evaluation:
    """A submission-shaped CSV scored against a solution exactly as ``birdsed score`` scores it."""
    y_true, y_score, classes = read_aligned(solution, submission)
    return Evaluation(y_true, y_score, classes, score_arrays(y_true, y_score, classes, threshold), str(submission))


def teacher_entry(path: Path, solution: Path, threshold: float) -> Entry:
    """A teacher CSV (NaN = no opinion) scored on the labelled soundscapes. A class it cannot know counts as a
    constant column (AUC 0.5), as the Kaggle metric would count it; the notes list which classes it knows."""
    from birdsed.teacher.birdnet_tflite import read_teacher

    sol = pd.read_csv(solution, dtype={"row_id": str}).set_index("row_id")
    classes = sol.columns.tolist()
    table = read_teacher(path, classes)
    lacking = sol.index.difference(table.index)
    if len(lacking):
        raise ReportError(
            f"{path}: the teacher has no rows for {len(lacking)} labelled window(s), e.g. {list(lacking[:3])}"
        )
    scores = table.loc[sol.index, classes].to_numpy(dtype=float)
    known = np.isfinite(scores).all(axis=0)
    y_true = sol.to_numpy(dtype=float)
    y_score = np.where(np.isfinite(scores), scores, 0.5)
    entry = Entry(path.stem, "teacher", path)
    entry.evals["soundscape"] = Evaluation(
        y_true, y_score, classes, score_arrays(y_true, y_score, classes, threshold), str(path)
    )
    unknown = [c for c, k in zip(classes, known, strict=True) if not k]
    entry.notes.append(f"teacher: knows {int(known.sum())} of {len(classes)} classes; no opinion on {unknown}")
    return entry


def run_entry(run_dir: Path, name: str, kind: str, solution: Path | None, threshold: float) -> Entry:
    """An entry from a training run folder: history, validation clips and (when labelled) soundscapes."""
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        raise ReportError(f"{run_dir}: not a run folder (no metrics.json)")
    try:
        m = read_json(metrics)
    except json.JSONDecodeError as err:
        raise ReportError(f"{metrics}: not valid JSON ({err})") from None
    entry = Entry(name, kind, run_dir, _read_config(run_dir), m.get("history", []), m.get("best", {}))
    if not m.get("finished", True):  # a run still training, or stopped: its figures are of the epochs so far
        planned = (entry.config or {}).get("train", {}).get("epochs", "?")
        entry.notes.append(
            f"UNFINISHED: {len(entry.history)} of {planned} epochs trained (still running, or stopped: --resume)"
        )
    val = _validation(run_dir, entry.config, threshold, entry.notes)
    if val is not None:
        entry.evals["validation"] = val
    preds = run_dir / "soundscape_preds.csv"
    sol = solution or _run_solution(entry.config)
    if preds.is_file() and sol is not None:
        entry.evals["soundscape"] = _soundscape(preds, sol, threshold)
    elif preds.is_file():
        entry.notes.append("soundscape_preds.csv present but no solution found; pass --solution")
    return entry


def _given_entry(path: str, solution: Path | None, threshold: float) -> Entry | None:
    """Round 0 of a pseudo-label folder when it was given as checkpoints: the run folder they came from."""
    run_dir = Path(path).parent if Path(path).suffix == ".pt" else Path(path)
    if (run_dir / "metrics.json").is_file():
        return run_entry(run_dir, "round 0 (given)", "given", solution, threshold)
    log.warning("%s: round-0 checkpoint has no run folder beside it; left out of the comparison", path)
    return None


def pseudo_entries(root: Path, solution: Path | None, threshold: float) -> tuple[list[Entry], PseudoRounds]:
    """Every round and control of a pseudo-label folder, in round order, and its rounds table."""
    table = read_csv_own(root / "rounds.csv", ("round",))
    for col in ("pseudo_chunks", "kept_chunks", "epochs"):
        if col in table:
            table[col] = table[col].astype("Int64")
    rounds = PseudoRounds(root.name, root, table)
    entries = []
    for row in table.to_dict("records"):
        r, kind = int(row["round"]), str(row["kind"])
        if kind == "given":
            for path in str(row["run_dir"]).split(";"):
                given = _given_entry(path, solution, threshold)
                if given is not None:
                    entries.append(given)
                    rounds.entries.setdefault((r, kind), given)
            continue
        base = root / (f"control_{r}" if kind == "control" else f"round_{r}/run")
        label = f"control {r}" if kind == "control" else f"round {r}"
        run_dirs = [base] if (base / "metrics.json").is_file() else sorted(base.glob("run_*"))  # K oof models
        for run_dir in run_dirs:
            name = label if len(run_dirs) == 1 else f"{label} fold {run_dir.name.split('_')[-1]}"
            entries.append(run_entry(run_dir, name, kind, solution, threshold))
            if kind == "pseudo":
                meta = root / f"round_{r}" / "pseudo_meta.json"
                if meta.is_file():
                    entries[-1].notes.append(pseudo_note(meta))
            rounds.entries.setdefault((r, kind), entries[-1])
    return entries, rounds


def pseudo_note(meta_path: Path) -> str:
    """A round's ``pseudo_meta.json`` as one readable line: who labelled the pool, with what, and what was kept."""
    try:
        m = read_json(meta_path)
    except (OSError, json.JSONDecodeError) as err:
        return f"pseudo labels: {meta_path} unreadable ({err})"
    runs = [Path(x).parent if Path(x).suffix == ".pt" else Path(x) for x in m.get("models", [])]
    models = ["/".join(r.parts[-2:]) for r in runs]
    parts = [f"labelled by {', '.join(models) or '?'}" + (" (out of fold)" if m.get("out_of_fold") else "")]
    if m.get("teacher"):
        share = m.get("teacher_weight")
        parts.append(f"teacher {Path(m['teacher']).name} (weight {share}) for {len(m.get('teacher_classes', []))} "
                     f"classes, our models for {len(m.get('model_classes', []))}")  # fmt: skip
    parts.append(f"power {m.get('power')}, TTA shifts {m.get('tta_shifts')}")
    parts.append(f"kept {m.get('kept')} of {m.get('chunks')} chunks (max ≥ {m.get('min_max_prob')}, "
                 f"below {m.get('trim_prob')} zeroed)")  # fmt: skip
    return "pseudo labels: " + "; ".join(parts)


def class_table(entries: list[Entry], solution: Path | None) -> pd.DataFrame:
    """Per class: its group (taxonomy ``class_name``) and number of training recordings, from the data folder."""
    classes: list[str] = []
    for e in entries:
        for ev in e.evals.values():
            classes += [c for c in ev.classes if c not in classes]
    roots = [Path(e.config["data"]["root"]) for e in entries if e.config and e.config.get("data", {}).get("root")]
    if solution is not None:
        roots.append(solution.parent)
    out = pd.DataFrame({"group": "", "training_files": np.nan}, index=pd.Index(classes, name="class"))
    for root in roots:
        try:
            data = _data_folder(str(root))
        except (DataError, OSError):
            continue
        tax = data.taxonomy.set_index("primary_label")
        if "class_name" in tax.columns:
            out["group"] = tax["class_name"].reindex(out.index).fillna("")
        out["training_files"] = data.class_counts().reindex(out.index)
        break
    return out


def gather(
    paths: list[str | Path],
    submissions: list[str | Path] = (),
    solution: str | Path | None = None,
    threshold: float = 0.5,
    teachers: list[str | Path] = (),
    named: list[tuple[str, Path]] = (),
    listen_windows: int = 0,
    listen_classes: list[str] = (),
) -> Report:
    """Collect every entry of a report.

    Args:
        paths: run folders (``metrics.json``), pseudo-label folders (``rounds.csv``) and study folders
            (``study.json``: shown as their summary, not run by run), in column order.
        submissions: submission CSVs scored against `solution`, added after the runs.
        teachers: teacher CSVs (``birdsed teacher``; NaN = no opinion) scored against `solution`, added last.
        named: (entry name, run folder) pairs added after `paths` (runs read back from an MLflow store).
        listen_windows: > 0: for the last entry scored on soundscapes, this many false positives and missed
            positives per class (the 3 worst classes and `listen_classes`) with audio (:mod:`birdsed.reports.listen`).
        solution: labelled soundscapes (``test_solution.csv``); runs default to the one their config names.
        threshold: the threshold of accuracy/precision/recall/F1.

    Raises:
        ReportError: a path is neither kind of folder, or a submission without a solution.
    """
    sol = Path(solution) if solution else None
    if sol is not None and not sol.is_file():
        raise ReportError(f"{sol}: solution file not found")
    if (submissions or teachers) and sol is None:
        raise ReportError("--submission/--teacher need --solution (the labelled soundscapes to score them against)")
    entries: list[Entry] = []
    rounds: list[PseudoRounds] = []
    studies: list[StudyView] = []
    for p in map(Path, paths):
        if (p / STUDY_MARKER).is_file():
            _, table, summary = read_study_dir(p)
            studies.append(StudyView(p.name, p, table, summary))
        elif (p / "rounds.csv").is_file():
            es, table = pseudo_entries(p, sol, threshold)
            if len(paths) > 1:
                for e in es:
                    e.name = f"{p.name}: {e.name}"
            entries += es
            rounds.append(table)
        elif (p / "metrics.json").is_file():
            entries.append(run_entry(p, p.name, "run", sol, threshold))
        else:
            raise ReportError(
                f"{p}: not a run folder (metrics.json), pseudo-label folder (rounds.csv) or study folder (study.json)"
            )
    entries += [run_entry(Path(p), name, "run", sol, threshold) for name, p in named]
    for s in map(Path, submissions):
        entry = Entry(s.stem, "submission", s)
        entry.evals["soundscape"] = _soundscape(s, sol, threshold)
        entries.append(entry)
    entries += [teacher_entry(Path(t), sol, threshold) for t in teachers]
    if not entries and not studies:
        raise ReportError("nothing to report: give at least one run, study folder or submission")
    names = [e.name for e in entries]
    for i, e in enumerate(entries):  # two entries may share a folder name
        if names.count(e.name) > 1:
            e.name = f"{e.name} [{i + 1}]"
    report = Report(entries, rounds, class_table(entries, sol), threshold, sol, studies)
    if listen_windows or listen_classes:
        report.listening = _listening(entries, sol, listen_windows or 3, list(listen_classes))
    return report


def _listening(entries: list[Entry], solution: Path | None, n: int, named: list[str]) -> Listening:
    """:func:`birdsed.reports.listen.listen` for the last entry scored on labelled soundscapes."""
    focus = next((e for e in reversed(entries) if "soundscape" in e.evals), None)
    if focus is None:
        raise ReportError("--listen needs an entry scored on labelled soundscapes")
    sol = solution or _run_solution(focus.config)
    if sol is None:
        raise ReportError("--listen: no solution to find the soundscapes by; pass --solution")
    row_ids = pd.read_csv(sol, usecols=["row_id"], dtype=str)["row_id"].tolist()
    ev = focus.evals["soundscape"]
    ckpt = focus.path / "best.pt" if focus.path.is_dir() and (focus.path / "best.pt").is_file() else None
    if ckpt is None and focus.path.is_file():  # a submission birdsed wrote: its first checkpoint draws the frames
        known = [Path(c) for c in output_facts(focus.path, "submission").get("checkpoints", [])]
        first = known[0] / "best.pt" if known and known[0].is_dir() else (known[0] if known else None)
        ckpt = first if first is not None and first.suffix == ".pt" and first.is_file() else None
    windows = listen(ev.y_true, ev.y_score, ev.classes, row_ids, sol.parent / "test_soundscapes", ckpt, n, named)
    return Listening(focus.name, windows, ckpt is not None)


def calibration_bins(y_true: np.ndarray, y_score: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Reliability of probabilities over all (window, class) pairs: per equal-width bin, the mean predicted
    probability, the fraction of positives and the count. Empty bins are left out."""
    t, s = np.asarray(y_true).ravel() > 0.5, np.asarray(y_score, dtype=float).ravel()
    which = np.minimum((s * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        m = which == b
        if m.any():
            out.append(
                {"bin": b, "mean_prob": float(s[m].mean()), "positive_rate": float(t[m].mean()), "n": int(m.sum())}
            )
    return out


def to_json(report: Report) -> dict[str, Any]:
    """The report's numbers as plain JSON (NaN → null)."""
    entries = []
    for e in report.entries:
        evals = {}
        for key, ev in e.evals.items():
            sc = ev.score
            evals[key] = {
                "source": ev.source,
                "macro_auc": sc.macro_auc,
                "padded_cmap": sc.padded_cmap,
                "n_rows": sc.n_rows,
                "n_scored_classes": sc.n_scored_classes,
                "thresholds": sc.thresholds,
                "per_class": sc.per_class,
                "calibration": calibration_bins(ev.y_true, ev.y_score),
            }
        entries.append(
            {
                "name": e.name,
                "kind": e.kind,
                "path": str(e.path),
                "best": e.best,
                "history": e.history,
                "notes": e.notes,
                "evaluations": evals,
            }
        )
    return json_safe(
        {
            "threshold": report.threshold,
            "solution": str(report.solution) if report.solution else None,
            "entries": entries,
            "classes": report.classes.reset_index().to_dict("records"),
            "config_differences": report.config_differences(),
            "pseudo_rounds": [{"name": r.name, "rows": r.table.to_dict("records")} for r in report.rounds],
            "listening": None
            if report.listening is None
            else {
                "entry": report.listening.entry,
                "frames": report.listening.frames,
                "windows": [
                    {"class": w.cls, "kind": w.kind, "row_id": w.row_id, "score": w.score}
                    for w in report.listening.windows
                ],
            },
            "studies": [
                {"name": st.name, "path": str(st.path), "runs": st.table.to_dict("records"), "summary": st.summary}
                for st in report.studies
            ],
        }
    )
