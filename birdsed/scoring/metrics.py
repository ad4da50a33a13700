"""BirdCLEF metrics: the 2025 Kaggle metric (macro ROC-AUC over classes with positives), padded cmAP (2023),
per-class AUC/AP, and accuracy/precision/recall/F1 at a threshold; plus the submission checks ``birdsed score``
runs before scoring.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score

from birdsed.errors import BirdsedError


class SubmissionError(BirdsedError, ValueError):
    """A submission does not match its solution; the message names the file and the problem."""


def scored_classes(y_true: np.ndarray) -> np.ndarray:
    """Indices of the classes the Kaggle metric scores: at least one positive (and, for AUC to exist, one negative)."""
    pos = y_true.sum(axis=0)
    return np.flatnonzero((pos > 0) & (pos < len(y_true)))


def per_class_auc(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """ROC-AUC per class, NaN where a class has no positive or no negative. Shapes (N, C) → (C,)."""
    out = np.full(y_true.shape[1], np.nan)
    for c in scored_classes(y_true):
        out[c] = roc_auc_score(y_true[:, c], y_score[:, c])
    return out


def per_class_ap(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """Average precision per class, NaN where a class has no positive. Shapes (N, C) → (C,)."""
    out = np.full(y_true.shape[1], np.nan)
    for c in np.flatnonzero(y_true.sum(axis=0) > 0):
        out[c] = average_precision_score(y_true[:, c], y_score[:, c])
    return out


def macro_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """The BirdCLEF 2025 metric: mean ROC-AUC over classes with at least one positive.

    Args:
        y_true: 0/1 labels, shape (N, C).
        y_score: scores, shape (N, C).

    Returns:
        macro AUC, NaN when no class has positives.
    """
    aucs = per_class_auc(np.asarray(y_true), np.asarray(y_score))
    return float(np.nanmean(aucs)) if np.isfinite(aucs).any() else math.nan


def padded_cmap(y_true: np.ndarray, y_score: np.ndarray, padding: int = 5) -> float:
    """BirdCLEF 2023 padded cmAP: append `padding` rows of all-ones to both, then macro average precision.

    The padding gives every class a positive, so classes without positives still count (and reward low scores).
    """
    y_true = np.asarray(y_true, dtype=float)
    y_score = np.asarray(y_score, dtype=float)
    pad = np.ones((padding, y_true.shape[1]))
    return float(average_precision_score(np.vstack([y_true, pad]), np.vstack([y_score, pad]), average="macro"))


def threshold_metrics(y_true: np.ndarray, y_score: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy (per element), micro and macro precision/recall/F1 of ``y_score >= threshold`` (sklearn's
    ``precision_recall_fscore_support``; an undefined ratio counts 0).

    Macro averages run over classes with at least one positive, like the Kaggle metric.
    """
    t = np.asarray(y_true) > 0.5
    p = np.asarray(y_score) >= threshold
    micro = precision_recall_fscore_support(t, p, average="micro", zero_division=0)
    per_class = np.array(precision_recall_fscore_support(t, p, average=None, zero_division=0)[:3])  # (3, C)
    has_pos = t.sum(0) > 0
    macro = per_class[:, has_pos].mean(axis=1) if has_pos.any() else np.full(3, math.nan)
    return {
        "threshold": float(threshold),
        "accuracy": float((t == p).mean()),
        "precision_micro": float(micro[0]),
        "recall_micro": float(micro[1]),
        "f1_micro": float(micro[2]),
        "precision_macro": float(macro[0]),
        "recall_macro": float(macro[1]),
        "f1_macro": float(macro[2]),
    }


@dataclass
class Score:
    """Everything `birdsed score` reports."""

    macro_auc: float
    padded_cmap: float
    n_rows: int
    n_scored_classes: int
    thresholds: dict[str, float]
    per_class: dict[str, dict[str, float | int]] = field(default_factory=dict)

    def to_json(self, path: str | Path) -> None:
        from birdsed.outputs import atomic_write
        from birdsed.ownership import record_output

        atomic_write(path, json.dumps(json_safe(asdict(self)), indent=2))
        record_output(path, "score")


def json_safe(v: Any) -> Any:
    """`v` with non-finite floats as None, numpy scalars as Python numbers and dict keys as strings (for JSON)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [json_safe(x) for x in v]
    return v


def score_arrays(y_true: np.ndarray, y_score: np.ndarray, classes: list[str], threshold: float = 0.5) -> Score:
    """All metrics for aligned label and score matrices of shape (N, C)."""
    y_true = np.asarray(y_true, dtype=float)
    y_score = np.asarray(y_score, dtype=float)
    aucs, aps = per_class_auc(y_true, y_score), per_class_ap(y_true, y_score)
    per_class = {
        c: {"auc": float(aucs[i]), "ap": float(aps[i]), "positives": int(y_true[:, i].sum())}
        for i, c in enumerate(classes)
    }
    return Score(
        macro_auc=macro_auc(y_true, y_score),
        padded_cmap=padded_cmap(y_true, y_score),
        n_rows=len(y_true),
        n_scored_classes=int(np.isfinite(aucs).sum()),
        thresholds=threshold_metrics(y_true, y_score, threshold),
        per_class=per_class,
    )


def read_table(path: str | Path, what: str) -> pd.DataFrame:
    """A solution or submission CSV with `row_id` as strings; raises SubmissionError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"{path}: {what} file not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = csv.reader(f)
            header = [h.strip() for h in next(rows, [])]
            short = next(((i + 2, len(r)) for i, r in enumerate(rows) if r and len(r) != len(header)), None)
        df = pd.read_csv(path, dtype={"row_id": str})
    except Exception as err:
        raise SubmissionError(f"{path}: cannot parse {what} as CSV ({err})") from None
    if short is not None:  # pandas would fill a short row with NaN: a file cut mid-row read as "no opinion"
        raise SubmissionError(
            f"{path} line {short[0]}: {short[1]} field(s), the header has {len(header)}; the {what} is damaged (cut "
            "short?)"
        )
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise SubmissionError(f"{path}: {what} names column(s) {twice[:5]} more than once")
    if "row_id" not in df.columns:
        raise SubmissionError(f"{path}: {what} has no row_id column")
    df.columns = [str(c) for c in df.columns]
    return df


def check_submission(solution: pd.DataFrame, submission: pd.DataFrame, name: str = "submission") -> pd.DataFrame:
    """Check a submission against its solution and return it aligned to the solution's rows.

    Checks: same columns in the same order, no duplicate or missing or extra row_ids, numeric values, no NaN,
    all values in [0, 1]. Each violation raises SubmissionError with a clear message.
    """
    sol_cols, sub_cols = list(solution.columns), list(submission.columns)
    if sub_cols != sol_cols:
        missing = [c for c in sol_cols if c not in sub_cols]
        extra = [c for c in sub_cols if c not in sol_cols]
        detail = []
        if missing:
            detail.append(f"missing {missing[:10]}")
        if extra:
            detail.append(f"unexpected {extra[:10]}")
        if not missing and not extra:
            first = next(i for i, (a, b) in enumerate(zip(sol_cols, sub_cols, strict=True)) if a != b)
            detail.append(f"wrong order from column {first}: expected {sol_cols[first]!r}, got {sub_cols[first]!r}")
        raise SubmissionError(f"{name}: columns differ from the solution: {'; '.join(detail)}")
    dups = submission["row_id"][submission["row_id"].duplicated()].tolist()
    if dups:
        raise SubmissionError(f"{name}: {len(dups)} duplicate row_id(s), e.g. {dups[:5]}")
    sol_ids, sub_ids = set(solution["row_id"]), set(submission["row_id"])
    if sol_ids != sub_ids:
        missing, extra = sorted(sol_ids - sub_ids), sorted(sub_ids - sol_ids)
        raise SubmissionError(
            f"{name}: row_ids differ from the solution: {len(missing)} missing (e.g. {missing[:5]}), "
            f"{len(extra)} unexpected (e.g. {extra[:5]})"
        )
    values = submission.drop(columns="row_id")
    non_numeric = [c for c in values.columns if not pd.api.types.is_numeric_dtype(values[c])]
    if non_numeric:
        raise SubmissionError(f"{name}: non-numeric values in column(s) {non_numeric[:10]}")
    arr = values.to_numpy(dtype=float)
    if np.isnan(arr).any():
        rows, cols = np.nonzero(np.isnan(arr))
        raise SubmissionError(
            f"{name}: {len(rows)} NaN value(s), first at row_id {submission['row_id'].iat[rows[0]]!r}, "
            f"column {values.columns[cols[0]]!r}"
        )
    bad = (arr < 0) | (arr > 1)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise SubmissionError(
            f"{name}: {len(rows)} value(s) outside [0, 1], first {arr[rows[0], cols[0]]!r} at row_id "
            f"{submission['row_id'].iat[rows[0]]!r}, column {values.columns[cols[0]]!r}"
        )
    return submission.set_index("row_id").loc[solution["row_id"]].reset_index()


def read_aligned(solution_path: str | Path, submission_path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Check `submission_path` against `solution_path`; labels (N, C), scores (N, C) in solution row order, classes."""
    solution = read_table(solution_path, "solution")
    submission = read_table(submission_path, "submission")
    classes = [c for c in solution.columns if c != "row_id"]
    y_true = solution_labels(solution, classes, solution_path)  # first: a row id listed twice is refused here
    aligned = check_submission(solution, submission, name=str(submission_path))
    return y_true, aligned[classes].to_numpy(dtype=float), classes


def solution_labels(
    solution: pd.DataFrame, classes: list[str], path: str | Path, need_positive: bool = True
) -> np.ndarray:
    """A solution's 0/1 labels (N, C) for `classes`, checked: every cell 0 or 1, and (`need_positive`) some class
    with a positive (Kaggle's metric, macro ROC-AUC over the classes with positives, refuses a solution without).

    Raises:
        SubmissionError: naming `path`, the first bad cell's row and column, or a row id listed twice.
    """
    if "row_id" in solution.columns and solution["row_id"].duplicated().any():
        dup = solution["row_id"][solution["row_id"].duplicated()]
        raise SubmissionError(
            f"{path}: {len(dup)} row id(s) listed more than once in the solution, e.g. {dup.iat[0]!r}"
        )
    values = solution[classes].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        r, c = (int(v[0]) for v in np.nonzero(bad))
        raise SubmissionError(
            f"{path}: solution values must be 0 or 1; {int(bad.sum())} are not, first "
            f"{solution[classes[c]].iat[r]!r} at row_id {solution['row_id'].iat[r]!r}, column {classes[c]!r}"
        )
    if need_positive and not (values.sum(axis=0) > 0).any():
        raise SubmissionError(f"{path}: no class has a positive; the metric (macro ROC-AUC over them) is undefined")
    return values


def score_files(solution_path: str | Path, submission_path: str | Path, threshold: float = 0.5) -> Score:
    """Check `submission_path` against `solution_path` and compute every metric."""
    return score_arrays(*read_aligned(solution_path, submission_path), threshold)
