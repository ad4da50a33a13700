"""BirdCLEF+ 2026's labelled training soundscapes (issue 36): the BirdNET-backbone recipe with and without them, on
the 2026 mini set, paired by seed; and how well the held-out labelled windows predict the test soundscapes.

Usage:
    python benchmarks/bench_soundscapes.py [--seeds 0 1 2] [--out runs/bench_soundscapes] [--report-only]
    birdsed teacher configs/birdnet_sed.yaml data.root=MINI26 --folders train_audio,train_soundscapes,test_soundscapes \
        teacher.embeddings=true --out runs/teacher26
    birdsed agile configs/birdnet_sed.yaml data.root=MINI26 --teacher runs/teacher26 --out runs/agile26
    birdsed choose configs/birdnet_sed.yaml data.root=MINI26 --teacher runs/teacher26 \
        --runs runs/bench_soundscapes/with_seed0 runs/bench_soundscapes/with_seed1 runs/bench_soundscapes/with_seed2 \
        --out runs/entry26.yaml
    python benchmarks/bench_soundscapes.py --report-only --entry runs/entry26.yaml --teacher runs/teacher26 \
        --agile runs/agile26

Each seed k trains ``configs/birdnet_sed.yaml`` twice on ``birdclef-real-mini-2026`` with only ``data.root`` and the
background folder changed, and ``data.soundscape_fold=k`` (the labelled soundscapes' fold k held out, grouped by
file): ``with`` draws the other folds' windows as ``data.soundscape_share`` (0.2, the default) of each epoch;
``without`` sets the share to 0 (the same draws per epoch, all focal: the same compute). Both score the 20 test
soundscapes (``test_solution.csv``, never trained or chosen on) and the held-out fold's windows (``labelled_auc``).
Printed: per seed and variant, the test AUC on all classes, on the two soundscape-only classes, on the rest, and the
held-out labelled windows' AUC; then the paired differences (mean, spread, per seed) and the correlation of the
labelled-window figure with the test figure over the runs.

``--entry`` (a ``birdsed choose`` output, chosen on the labelled *training* soundscapes): the test soundscapes
scored for BirdNET alone, BirdNET + agile (``AGILE/test_soundscapes.csv``), the ``with`` students' mean alone
(``soundscape_preds.csv``: no TTA) and the chosen entry as a user runs it (``birdsed infer ENTRY`` with the
three students, BirdNET and the agile model) — beside the choice's out-of-fold figure on the labelled training
windows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MINI26 = REPO.parent / "shared" / "data" / "birdclef-real-mini-2026"
VARIANTS = {"with": [], "without": ["data.soundscape_share=0"]}
FIGURES = ("soundscape_auc", "soundscape_auc_soundscape_only", "soundscape_auc_birds", "labelled_auc")


def train(out: Path, seed: int, extra: list[str]) -> None:
    cmd = [
        sys.executable, "-m", "birdsed", "train", str(REPO / "configs" / "birdnet_sed.yaml"),
        f"data.root={MINI26}", f"augment.background_dir={MINI26 / 'train_soundscapes'}",
        f"train.seed={seed}", f"data.soundscape_fold={seed}", "train.progress=false", *extra,
        "--out", str(out), "--overwrite",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=REPO)


def last_figures(run: Path) -> dict[str, float]:
    """The last validated epoch's figures of a run (the recipe keeps the last epoch: train.select=last)."""
    history = json.loads((run / "metrics.json").read_text())["history"]
    last = [h for h in history if "soundscape_auc" in h][-1]
    return {k: float(last.get(k, np.nan)) for k in (*FIGURES, "elapsed_s")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench_soundscapes")
    ap.add_argument("--report-only", action="store_true", help="print the figures of finished runs")
    ap.add_argument("--entry", type=Path, help="a `birdsed choose` output to score on the test soundscapes")
    ap.add_argument("--teacher", type=Path, help="the `birdsed teacher` folder the entry was chosen with")
    ap.add_argument("--agile", type=Path, help="the `birdsed agile` folder (its test_soundscapes.csv)")
    args = ap.parse_args()
    if not (MINI26 / "train_soundscapes_labels.csv").is_file():
        sys.exit(f"{MINI26} not found (../shared is absent)")
    rows = {}
    for seed in args.seeds:
        for name, extra in VARIANTS.items():
            run = args.out / f"{name}_seed{seed}"
            if not args.report_only and not (run / "metrics.json").is_file():
                train(run, seed, extra)
            rows[name, seed] = last_figures(run)
    head = ("variant", "seed", "test all", "test s-only", "test birds", "labelled", "min")
    print("{:<8} {:>4} {:>9} {:>11} {:>10} {:>9} {:>5}".format(*head))
    for (name, seed), f in rows.items():
        print(
            f"{name:<8} {seed:>4} {f['soundscape_auc']:>9.4f} {f['soundscape_auc_soundscape_only']:>11.4f} "
            f"{f['soundscape_auc_birds']:>10.4f} {f['labelled_auc']:>9.4f} {f['elapsed_s'] / 60:>5.1f}"
        )
    for key in FIGURES:
        diff = np.array([rows["with", s][key] - rows["without", s][key] for s in args.seeds])
        per_seed = ", ".join(f"{d:+.4f}" for d in diff)
        print(f"with - without, {key}: mean {diff.mean():+.4f} (sd {diff.std(ddof=1):.4f}; per seed {per_seed})")
    test = np.array([f["soundscape_auc"] for f in rows.values()])
    held = np.array([f["labelled_auc"] for f in rows.values()])
    r = np.corrcoef(test, held)[0, 1]
    print(f"held-out labelled windows vs test soundscapes over {len(test)} runs: Pearson r = {r:.2f}")
    gaps = held - test
    print(f"labelled_auc - test AUC: mean {gaps.mean():+.4f}, range [{gaps.min():+.4f}, {gaps.max():+.4f}]")
    if args.entry:
        entry_figures(args.entry, args.teacher, args.agile, [args.out / f"with_seed{s}" for s in args.seeds])


def entry_figures(entry: Path, teacher: Path, agile: Path, runs: list[Path]) -> None:
    """The chosen entry and its parts on the test soundscapes (see the module's text)."""
    import pandas as pd

    from birdsed.cli import main
    from birdsed.data.folder import load_birdclef
    from birdsed.scoring.metrics import macro_auc
    from birdsed.teacher.birdnet_tflite import read_teacher

    classes = load_birdclef(MINI26).classes
    sol = pd.read_csv(MINI26 / "test_solution.csv", dtype={"row_id": str}).set_index("row_id")
    y = sol[classes].to_numpy()
    birdnet = read_teacher(teacher / "test_soundscapes.csv", classes).loc[sol.index, classes].to_numpy()
    both = read_teacher(agile / "test_soundscapes.csv", classes).loc[sol.index, classes].to_numpy()
    students = [read_teacher(r / "soundscape_preds.csv", classes).loc[sol.index, classes].to_numpy() for r in runs]
    student = np.mean(students, axis=0)
    record = json.loads(Path(f"{entry}.json").read_text())
    w, f, v = record["teacher_weight"], record["agile_fill_weight"], record["infer"]
    filled = lambda t: np.where(np.isfinite(t), t, student)  # noqa: E731 - a class neither knows: the student's
    with tempfile.TemporaryDirectory() as tmp:  # the entry as a user runs it: birdsed infer ENTRY
        out = Path(tmp) / "entry.csv"
        checkpoints = [a for r in runs for a in ("--checkpoint", str(r))]
        args = ["infer", str(entry), *checkpoints, "--soundscapes", str(MINI26 / "test_soundscapes"),
                "--sample-submission", str(MINI26 / "sample_submission.csv"), "--out", str(out), "--no-progress",
                "teacher.infer=birdnet", f"teacher.agile={agile}"]  # fmt: skip
        assert main(args) == 0
        chosen = read_teacher(out, classes).loc[sol.index, classes].to_numpy()
    rows = {
        "BirdNET (others: student, no TTA)": filled(birdnet),
        "BirdNET + agile (others: student, no TTA)": filled(both),
        "students alone (no TTA)": student,
        f"chosen entry via birdsed infer (teacher {w:g}, agile fill {f:g}, {v})": chosen,
    }
    for name, scores in rows.items():
        print(f"test soundscapes, {name}: {macro_auc(y, scores):.4f}")
    print(
        f"labelled training windows, out of fold ({record['windows']} windows): chosen {record['oof_auc']:.4f}, "
        f"BirdNET + agile {record['baseline_auc']:.4f}, students alone {record['student_auc']:.4f}"
    )


if __name__ == "__main__":
    main()
