"""Choices that transfer (issue 28): a study's variants scored on all classes and on BirdNET's, and the study's
out-of-sample choice (`birdsed study`'s selection mode: chosen on half the labelled soundscapes, scored on the other
half) on each of the two class sets.

Usage:
    birdsed study configs/studies/birdnet_entry.yaml --out runs/studies/birdnet_entry
    python benchmarks/bench_choices.py runs/studies/birdnet_entry [more study folders] --teacher runs/teacher_mini

    python benchmarks/bench_choices.py --teacher runs/teacher_mini \
        --blend runs/studies/birdnet_infer/tta runs/studies/birdnet_entry/overlap

`--blend STUDENT TEACHER`: two variant folders of studies (``seed<k>/soundscape_preds.csv``); TEACHER's predictions
are the teacher as ``teacher.infer`` gives it (e.g. BirdNET + agile at ``teacher_weight`` 1), STUDENT's our model's;
the entries ``(1-w)·student + w·teacher`` (as ``birdsed infer`` blends, over every class or over BirdNET's only) are
compared with the teacher alone through the same out-of-sample choice, paired by seed.

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
from birdsed.study.spec import Study
from birdsed.study.stats import Predictions, fast_macro_auc, read_predictions, select_out_of_sample
from birdsed.teacher.birdnet_tflite import read_teacher


def on_columns(preds: Predictions, cols: np.ndarray) -> Predictions:
    """The predictions restricted to the classes `cols`."""
    return Predictions(preds.y[:, cols], {k: v[:, cols] for k, v in preds.scores.items()}, preds.groups)


def show(study: Study, preds: Predictions, names: list[str], seeds: list[int]) -> None:
    """Each variant's mean ± sd over `seeds` on all soundscapes (in sample), then the out-of-sample choice."""
    for v in names:
        vals = [fast_macro_auc(preds.y, preds.scores[(v, s)]) for s in seeds]
        sd = f" ± {np.std(vals, ddof=1):.4f}" if len(vals) > 1 else ""
        print(f"    {v:>16}  {np.mean(vals):.4f}{sd}  (per seed {', '.join(f'{x:.4f}' for x in vals)})")
    sel = select_out_of_sample(study, preds, seeds, np.random.default_rng(0))
    if sel:
        shares = ", ".join(f"{v} {s:.0%}" for v, s in sorted(sel["chosen"].items(), key=lambda x: -x[1]) if s)
        lo, hi = sel["gain_range"]
        print(
            f"    out of sample ({sel['splits']} halvings): chosen {shares}; the choice {sel['oos_auc']:.4f}, "
            f"the baseline ({study.baseline}) {sel['baseline_auc']:.4f} on the same halves (Δ {sel['gain']:+.4f}, "
            f"range [{lo:+.4f}, {hi:+.4f}], better in {sel['share_better']:.0%}; optimism {sel['optimism']:+.4f})"
        )


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
        show(study, sub_preds, list(study.variants), seeds)


def bench_blend(student: Path, teacher_runs: Path, teacher: Path, weights: tuple[float, ...] = (0.75, 0.5)) -> None:
    import pandas as pd

    from birdsed.config import solution_path
    from birdsed.outputs import read_yaml
    from birdsed.scoring.metrics import read_aligned
    from birdsed.teacher.blend import blend_teacher

    seeds = sorted(int(p.name.removeprefix("seed")) for p in student.glob("seed*"))
    cfg = read_yaml(student / f"seed{seeds[0]}" / "config.yaml")
    sol = solution_path(cfg["data"]["root"], cfg["data"]["solution"])
    classes = [c for c in pd.read_csv(sol, nrows=1).columns if c != "row_id"]
    t_csv = read_teacher(teacher / "test_soundscapes.csv", classes)
    known = np.isfinite(t_csv.to_numpy(float)).all(axis=0)
    scores, y, groups = {}, None, []
    for s in seeds:
        y, ours, _ = read_aligned(sol, student / f"seed{s}" / "soundscape_preds.csv")
        _, theirs, _ = read_aligned(sol, teacher_runs / f"seed{s}" / "soundscape_preds.csv")
        scores[("teacher", s)] = theirs
        scores[("student", s)] = ours
        for w in weights:
            scores[(f"w{w}_all", s)] = blend_teacher(ours, theirs, w)
            scores[(f"w{w}_birdnet", s)] = np.where(known, blend_teacher(ours, theirs, w), theirs)
    stems = pd.read_csv(sol, usecols=["row_id"], dtype=str)["row_id"].str.rsplit("_", n=1).str[0].to_numpy()
    groups = [np.flatnonzero(stems == g) for g in dict.fromkeys(stems)]
    names = ["teacher", "student", *(f"w{w}_{c}" for w in weights for c in ("birdnet", "all"))]
    study = Study("infer", "", {n: [] for n in names}, seeds, "teacher")
    preds = Predictions(y, scores, groups)
    print(f"blends of {student} into {teacher_runs} ({len(seeds)} seeds; w = the teacher's share)")
    for label, cols in (("all classes", np.arange(len(classes))), ("BirdNET's classes", np.flatnonzero(known))):
        sub = on_columns(preds, cols)
        print(f"  on {label} ({len(cols)}):")
        show(study, sub, names, seeds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("studies", nargs="*", type=Path)
    ap.add_argument("--blend", nargs=2, type=Path, metavar=("STUDENT", "TEACHER"))
    ap.add_argument("--teacher", type=Path, help="a birdsed teacher folder: BirdNET's classes")
    args = ap.parse_args()
    for folder in args.studies:
        bench_study(folder, args.teacher)
    if args.blend:
        if args.teacher is None:
            ap.error("--blend needs --teacher")
        bench_blend(*args.blend, args.teacher)


if __name__ == "__main__":
    main()
