"""A study's statistics (:mod:`birdsed.study.runner`): per variant mean ± sd, and the paired difference to the baseline
with 95 % bootstrap intervals over seeds, over labelled soundscapes and over both drawn together; a verdict only
from 3 paired seeds on. Works on ``study.csv``'s table and the runs' prediction files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from birdsed.config import solution_path
from birdsed.data.folder import split_row_ids
from birdsed.outputs import read_yaml
from birdsed.scoring.metrics import read_aligned
from birdsed.study.spec import Study, StudyError

# the figures a study compares: the epoch each run chose, and its last epoch (study.csv column, predictions column)
FIGURES = {"chosen": ("soundscape_auc", "predictions"), "last": ("last_soundscape_auc", "predictions_last")}


def fast_macro_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """:func:`birdsed.scoring.metrics.macro_auc` through ranks (ties averaged), for the many resamples of a bootstrap.

    Shapes (N, C). Classes without a positive or without a negative are left out, as the metric does.
    """
    pos = y.sum(axis=0)
    keep = (pos > 0) & (pos < len(y))
    if not keep.any():
        return math.nan
    y, scores, pos = y[:, keep], scores[:, keep], pos[keep]
    ranks = rankdata(scores, axis=0)
    neg = len(y) - pos
    auc = ((ranks * y).sum(axis=0) - pos * (pos + 1) / 2) / (pos * neg)
    return float(auc.mean())


@dataclass
class Predictions:
    """Every finished run's soundscape predictions on one shared solution: labels (N, C), scores per run, and the
    row groups of each soundscape (what a soundscape bootstrap draws)."""

    y: np.ndarray
    scores: dict[tuple[str, int], np.ndarray]
    groups: list[np.ndarray]


def read_predictions(table: pd.DataFrame, column: str = "predictions") -> Predictions | None:
    """Align each finished run's predictions file (`column` of `table`) with the solution its config names (all
    runs must share one); None when no run has one."""
    scores: dict[tuple[str, int], np.ndarray] = {}
    y = None
    groups: list[np.ndarray] = []
    sol_used = None
    for row in table.itertuples():
        path = getattr(row, column, "")
        if row.state != "finished" or not isinstance(path, str) or not path:
            continue
        final = Path(path).parent
        cfg = read_yaml(final / "config.yaml")
        sol = solution_path(cfg["data"]["root"], cfg["data"]["solution"])
        if sol is None:
            continue
        if sol_used is not None and Path(sol).resolve() != Path(sol_used).resolve():
            raise StudyError(f"{row.run_dir}: scored on {sol}, other runs on {sol_used}; a study needs one solution")
        y_true, y_score, _ = read_aligned(sol, path)
        if y is None:
            sol_used, y = sol, y_true
            stems = split_row_ids(pd.read_csv(sol, usecols=["row_id"], dtype=str)["row_id"])[0].to_numpy()
            groups = [np.flatnonzero(stems == s) for s in dict.fromkeys(stems)]
        scores[(row.variant, int(row.seed))] = y_score
    return None if y is None else Predictions(y, scores, groups)


def _interval(values: np.ndarray) -> list[float | None]:
    values = values[np.isfinite(values)]
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if len(values) else [None, None]


def paired_difference(
    study: Study, variant: str, preds: Predictions, seeds: list[int], rng: np.random.Generator
) -> dict[str, Any]:
    """Mean over `seeds` of AUC(variant) − AUC(baseline) on the same seed, with 95 % bootstrap intervals over seeds,
    over soundscapes and over both (seeds and soundscapes drawn together)."""
    base, var = study.baseline, variant
    a = np.stack([preds.scores[(var, s)] for s in seeds])  # (S, N, C)
    b = np.stack([preds.scores[(base, s)] for s in seeds])
    diff_of = np.array([fast_macro_auc(preds.y, a[i]) - fast_macro_auc(preds.y, b[i]) for i in range(len(seeds))])
    ci_seeds = _seed_interval(diff_of, study.bootstrap, rng)

    def on_rows(rows: np.ndarray, pick: np.ndarray) -> float:
        y = preds.y[rows]
        return float(np.mean([fast_macro_auc(y, a[i][rows]) - fast_macro_auc(y, b[i][rows]) for i in pick]))

    n_boot = max(100, study.bootstrap // 4)  # each soundscape resample scores 2·S runs
    all_seeds = np.arange(len(seeds))
    by_sound, by_both = [], []
    for _ in range(n_boot):
        rows = np.concatenate([preds.groups[g] for g in rng.integers(0, len(preds.groups), len(preds.groups))])
        by_sound.append(on_rows(rows, all_seeds))
        by_both.append(on_rows(rows, rng.integers(0, len(seeds), len(seeds))))
    both = _interval(np.array(by_both))
    return _record(var, seeds, diff_of, ci_seeds, _interval(np.array(by_sound)), both, both, "seeds and soundscapes")


def _seed_interval(diff_of: np.ndarray, n: int, rng: np.random.Generator) -> list[float | None]:
    """95 % interval of the mean paired difference when the seeds are resampled `n` times."""
    k = len(diff_of)
    return _interval(np.array([diff_of[rng.integers(0, k, k)].mean() for _ in range(n)]))


def _record(
    variant: str,
    seeds: list[int],
    diff_of: np.ndarray,
    ci_seeds: list[float | None],
    ci_soundscapes: list[float | None],
    ci_both: list[float | None],
    judged: list[float | None],
    basis: str,
) -> dict[str, Any]:
    """One paired comparison as summary.json holds it; the verdict reads the `judged` interval."""
    return {
        "variant": variant,
        "seeds": seeds,
        "diff_mean": float(diff_of.mean()),
        "diff_sd": float(diff_of.std(ddof=1)) if len(seeds) > 1 else None,
        "diff_per_seed": diff_of.round(6).tolist(),
        "ci_seeds": ci_seeds,
        "ci_soundscapes": ci_soundscapes,
        "ci_both": ci_both,
        "verdict": _verdict(judged, len(seeds)),
        "basis": basis,
    }


MIN_SEEDS = 3  # fewer paired seeds give intervals but no verdict: one run's noise here is as large as the effects


def _verdict(interval: list[float | None], seeds: int) -> str:
    if seeds < MIN_SEEDS:
        return f"needs ≥ {MIN_SEEDS} seeds"
    lo, hi = interval
    if lo is not None and lo > 0:
        return "helps"
    if hi is not None and hi < 0:
        return "hurts"
    return "inside the noise"


def seed_difference(
    study: Study, variant: str, table: pd.DataFrame, key: str, seeds: list[int], rng: np.random.Generator
) -> dict[str, Any]:
    """:func:`paired_difference` from the run table's figures alone (no per-window predictions): the interval is
    over seeds only, and so is the verdict."""
    fig = table.set_index(["variant", "seed"])[key].astype(float)
    diff_of = np.array([fig[(variant, s)] - fig[(study.baseline, s)] for s in seeds])
    ci = _seed_interval(diff_of, study.bootstrap, rng)
    return _record(variant, seeds, diff_of, ci, [None, None], [None, None], ci, "seeds only")


def select_out_of_sample(
    study: Study, preds: Predictions, seeds: list[int], rng: np.random.Generator
) -> dict[str, Any] | None:
    """Choose, then score elsewhere: pick the variant with the best mean AUC over `seeds` on one part of the labelled
    soundscapes and score that choice on the rest, over many splits (``study.selection``: ``halves``, repeated
    random halvings; or ``folds``, K folds over whole soundscapes, the held-out fold of each taking the variant
    chosen on the others, repeated). A tie goes to the baseline, then to the variant listed first.

    So that no reported figure is the one a setting was chosen on, this gives: how often each variant was chosen,
    the chosen variant's AUC on soundscapes it was not chosen on (``oos_auc``, the figure to report for "the best
    variant"), the baseline's AUC on the same soundscapes, the gain (the choice minus the baseline, mean and 2.5–97.5 %
    range over the splits — a spread, not a confidence interval: splits overlap), the share of splits where the
    choice beat the baseline, and (halves) the optimism, its AUC where it was chosen minus where it was scored.

    Returns:
        None with fewer than 2 variants that have every seed's predictions, or fewer than 4 soundscapes.
    """
    names = [study.baseline, *(v for v in study.variants if v != study.baseline)]
    names = [v for v in names if all((v, s) in preds.scores for s in seeds)]
    n_groups = len(preds.groups)
    if len(names) < 2 or names[0] != study.baseline or n_groups < 4 or not seeds:
        return None
    sel = study.selection
    stack = {v: [preds.scores[(v, s)] for s in seeds] for v in names}

    def auc(v: str, rows: np.ndarray) -> float:
        y = preds.y[rows]
        return float(np.nanmean([fast_macro_auc(y, a[rows]) for a in stack[v]]))

    def choose(rows: np.ndarray) -> tuple[str, float]:
        inside = {v: auc(v, rows) for v in names}
        best = max(names, key=lambda v: (np.nan_to_num(inside[v], nan=-1.0), -names.index(v)))
        return best, inside[best]

    def rows_of(groups: np.ndarray) -> np.ndarray:
        return np.concatenate([preds.groups[g] for g in groups])

    counts = dict.fromkeys(names, 0)
    oos, base, optimism = [], [], []
    if sel["scheme"] == "halves":
        for _ in range(sel["repeats"]):
            perm = rng.permutation(n_groups)
            a, b = rows_of(perm[: n_groups // 2]), rows_of(perm[n_groups // 2 :])
            best, inside = choose(a)
            counts[best] += 1
            oos.append(auc(best, b))
            base.append(auc(study.baseline, b))
            optimism.append(inside - oos[-1])
    else:
        k = min(sel["folds"], n_groups)
        whole = np.arange(len(preds.y))
        base_whole = auc(study.baseline, whole)
        for _ in range(max(1, sel["repeats"] // k)):
            assembled = [np.zeros_like(x) for x in stack[study.baseline]]
            for part in np.array_split(rng.permutation(n_groups), k):
                held = rows_of(part)
                best, _ = choose(np.setdiff1d(whole, held))
                counts[best] += 1
                for i in range(len(seeds)):
                    assembled[i][held] = stack[best][i][held]
            oos.append(float(np.nanmean([fast_macro_auc(preds.y, x) for x in assembled])))
            base.append(base_whole)
    splits = sum(counts.values())
    gain = np.array(oos) - np.array(base)
    return {
        "scheme": sel["scheme"],
        "splits": splits,
        "soundscapes": n_groups,
        "seeds": list(seeds),
        "chosen": {v: round(c / splits, 4) for v, c in counts.items()},
        "most_chosen": max(names, key=lambda v: (counts[v], -names.index(v))),
        "oos_auc": float(np.mean(oos)),
        "baseline_auc": float(np.mean(base)),
        "gain": float(gain.mean()),
        "gain_range": _interval(gain),
        "share_better": float((gain > 0).mean()),
        "optimism": float(np.mean(optimism)) if optimism else None,
    }


def _stats(values: pd.Series) -> dict[str, float | None]:
    v = pd.to_numeric(values, errors="coerce").dropna()
    return {
        "mean": float(v.mean()) if len(v) else None,
        "sd": float(v.std(ddof=1)) if len(v) > 1 else None,
    }


def summarize(study: Study, table: pd.DataFrame, seed: int = 0) -> dict[str, Any]:
    """Per variant: runs finished, mean ± sd of each figure; per non-baseline variant: the paired difference of
    soundscape AUC to the baseline, at the chosen epoch (``differences``) and at the last (``differences_last``):
    :func:`paired_difference` where every pair has per-window predictions, :func:`seed_difference` otherwise."""
    rng = np.random.default_rng(seed)
    done = table[table["state"] == "finished"]
    variants = []
    for v in study.variants:
        rows = done[done["variant"] == v]
        entry: dict[str, Any] = {"variant": v, "finished": len(rows), "runs": len(study.seeds)}
        for key in ("soundscape_auc", "last_soundscape_auc", "val_auc", "minutes"):
            entry[key] = _stats(rows[key]) if key in rows else {"mean": None, "sd": None}
        variants.append(entry)
    differences: dict[str, list[dict[str, Any]]] = {}
    soundscapes = 0
    selection = None
    for figure, (key, column) in FIGURES.items():
        differences[figure] = []
        if figure == "last" and study.command == "infer":  # an infer run has one figure: its checkpoint's
            continue
        preds = read_predictions(table, column) if column in table else None
        soundscapes = max(soundscapes, len(preds.groups) if preds is not None else 0)
        if figure == "chosen" and preds is not None:
            base_seeds = [s for s in study.seeds if (study.baseline, s) in preds.scores]
            selection = select_out_of_sample(study, preds, base_seeds, np.random.default_rng(seed))
        for v in study.variants:
            if v == study.baseline:
                continue
            pair = [s for s in study.seeds if ((done["variant"] == v) & (done["seed"] == s)).any()]
            pair = [s for s in pair if ((done["variant"] == study.baseline) & (done["seed"] == s)).any()]
            if not pair:
                continue
            if preds is not None and all((v, s) in preds.scores and (study.baseline, s) in preds.scores for s in pair):
                differences[figure].append(paired_difference(study, v, preds, pair, rng))
            else:
                differences[figure].append(seed_difference(study, v, done, key, pair, rng))
    return {
        "baseline": study.baseline,
        "command": study.command,
        "config": study.config,
        "variants": variants,
        "differences": differences["chosen"],
        "differences_last": differences["last"],
        "missing": table.loc[table["state"] != "finished", ["variant", "seed", "state"]].to_dict("records"),
        "soundscapes": soundscapes,
        "selection": selection,
    }


def summary_frame(summary: dict[str, Any]) -> pd.DataFrame:
    """The summary as one row per variant (what ``summary.csv`` holds and the report shows)."""
    diffs = {d["variant"]: d for d in summary["differences"]}
    lasts = {d["variant"]: d for d in summary.get("differences_last", [])}
    rows = []
    for e in summary["variants"]:
        d = diffs.get(e["variant"], {})
        dl = lasts.get(e["variant"], {})
        row = {"variant": e["variant"], "finished": f"{e['finished']}/{e['runs']}"}
        for key in ("soundscape_auc", "last_soundscape_auc", "val_auc", "minutes"):
            row[f"{key}_mean"], row[f"{key}_sd"] = e[key]["mean"], e[key]["sd"]
        row["diff_vs_baseline"] = d.get("diff_mean")
        row["diff_sd"] = d.get("diff_sd")
        for k in ("ci_seeds", "ci_soundscapes", "ci_both"):
            lo, hi = d.get(k, [None, None])
            row[f"{k}_low"], row[f"{k}_high"] = lo, hi
        row["verdict"] = d.get("verdict", "baseline" if e["variant"] == summary["baseline"] else "")
        row["diff_last_vs_baseline"] = dl.get("diff_mean")
        last_ci = dl.get("ci_both", [None, None])
        if last_ci[0] is None:  # compared over seeds only
            last_ci = dl.get("ci_seeds", [None, None])
        row["ci_last_low"], row["ci_last_high"] = last_ci
        row["verdict_last"] = dl.get("verdict", "")
        row["chosen_out_of_sample"] = (summary.get("selection") or {}).get("chosen", {}).get(e["variant"])
        rows.append(row)
    return pd.DataFrame(rows)


def summary_lines(summary: dict[str, Any]) -> Sequence[str]:
    """The summary as aligned text lines (the command's printout)."""
    lines = []
    diffs = {d["variant"]: d for d in summary["differences"]}
    lasts = {d["variant"]: d for d in summary.get("differences_last", [])}
    for e in summary["variants"]:
        s, last = e["soundscape_auc"], e["last_soundscape_auc"]
        text = f"{e['variant']:>16}  {e['finished']}/{e['runs']} runs  soundscape AUC {_pm(s)}  last {_pm(last)}"
        for label, d in (("Δ", diffs.get(e["variant"])), ("Δlast", lasts.get(e["variant"]))):
            if d:
                lo, hi = d["ci_both"] if d["ci_both"][0] is not None else d["ci_seeds"]
                text += f"  {label} {d['diff_mean']:+.4f} [{lo:+.4f}, {hi:+.4f}] {d['verdict']}"
        if e["variant"] == summary["baseline"]:
            text += "  (baseline)"
        lines.append(text)
    sel = summary.get("selection")
    if sel:
        shares = ", ".join(f"{v} {share:.0%}" for v, share in sorted(sel["chosen"].items(), key=lambda x: -x[1]))
        how = "halvings" if sel["scheme"] == "halves" else "fold assignments × folds"
        lo, hi = sel["gain_range"]
        text = (
            f"chosen on part of the {sel['soundscapes']} soundscapes, scored on the rest ({sel['splits']} {how}): "
            f"{shares}; the choice scores {sel['oos_auc']:.4f} out of sample, the baseline "
            f"{sel['baseline_auc']:.4f} "
            f"(Δ {sel['gain']:+.4f}, range [{lo:+.4f}, {hi:+.4f}], better in {sel['share_better']:.0%} of splits"
        )
        if sel["optimism"] is not None:
            text += f"; optimism {sel['optimism']:+.4f}"
        lines.append(text + ")")
    return lines


def _pm(stat: dict[str, float | None]) -> str:
    if stat["mean"] is None:
        return "–"
    return f"{stat['mean']:.4f}" + (f" ± {stat['sd']:.4f}" if stat["sd"] is not None else "")
