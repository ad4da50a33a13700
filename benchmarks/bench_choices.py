"""Choices that transfer (issue 28): a study's variants scored on all classes and on BirdNET's, and the study's
out-of-sample choice (`birdsed study`'s selection mode: chosen on half the labelled soundscapes, scored on the other
half) on each of the two class sets.

Usage:
    birdsed study configs/studies/birdnet_entry.yaml --out runs/studies/birdnet_entry
    python benchmarks/bench_choices.py runs/studies/birdnet_entry [more study folders] --teacher runs/teacher_mini

`--teacher`: a `birdsed teacher` folder whose ``test_soundscapes.csv`` says which classes BirdNET knows (its finite
columns). Each variant's figure is the mean ± sd over the seeds on all 30 soundscapes (what a table would show,
chosen-on-the-same-data for the winner); the selection line is the figure to report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from birdsed.study.runner import read_study_dir
from birdsed.study.stats import Predictions, fast_macro_auc, read_predictions, select_out_of_sample
from birdsed.teacher.birdnet import read_teacher


def on_columns(preds: Predictions, cols: np.ndarray) -> Predictions:
    """The predictions restricted to the classes `cols`."""
    return Predictions(preds.y[:, cols], {k: v[:, cols] for k, v in preds.scores.items()}, preds.groups)


def bench_study(folder: Path, teacher: Path | None) -> None:
    study, table, _ = read_study_dir(folder)
    preds = read_predictions(table)
    if preds is None:
        sys.exit(f"{folder}: no finished run with predictions")
    seeds = [s for s in study.seeds if all((v, s) in preds.scores for v in study.variants)]
    n_classes = preds.y.shape[1]
    sets = {"all classes": np.arange(n_classes)}
    if teacher is not None:
        solution = table.iloc[0]  # every run shares one solution: take the classes from the first run's predictions
        import pandas as pd

        sub = pd.read_csv(solution["predictions"], nrows=1)
        classes = [c for c in sub.columns if c != "row_id"]
        t = read_teacher(teacher / "test_soundscapes.csv", classes)
        sets["BirdNET's classes"] = np.flatnonzero(np.isfinite(t.to_numpy(float)).all(axis=0))
    print(f"study {folder} ({study.command}, {len(seeds)} seeds, {len(preds.groups)} soundscapes)")
    for name, cols in sets.items():
        sub_preds = on_columns(preds, cols)
        print(f"  on {name} ({len(cols)}):")
        for v in study.variants:
            vals = [fast_macro_auc(sub_preds.y, sub_preds.scores[(v, s)]) for s in seeds]
            sd = f" ± {np.std(vals, ddof=1):.4f}" if len(vals) > 1 else ""
            print(f"    {v:>16}  {np.mean(vals):.4f}{sd}  (per seed {', '.join(f'{x:.4f}' for x in vals)})")
        sel = select_out_of_sample(study, sub_preds, seeds, np.random.default_rng(0))
        if sel:
            shares = ", ".join(f"{v} {s:.0%}" for v, s in sorted(sel["chosen"].items(), key=lambda x: -x[1]) if s)
            lo, hi = sel["gain_range"]
            print(
                f"    out of sample ({sel['splits']} halvings): chosen {shares}; the choice {sel['oos_auc']:.4f}, "
                f"the baseline {sel['baseline_auc']:.4f} on the same halves (Δ {sel['gain']:+.4f}, range "
                f"[{lo:+.4f}, {hi:+.4f}], better in {sel['share_better']:.0%}; optimism {sel['optimism']:+.4f})"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("studies", nargs="+", type=Path)
    ap.add_argument("--teacher", type=Path, help="a birdsed teacher folder: BirdNET's classes")
    args = ap.parse_args()
    for folder in args.studies:
        bench_study(folder, args.teacher)


if __name__ == "__main__":
    main()
