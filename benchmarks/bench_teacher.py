"""Does BirdNET as the first teacher pay? Zero-shot teacher, student vs control over seeds, teacher + student blend.

Usage:
    birdsed teacher configs/effnet_b0_sed.yaml teacher.mapping=configs/teacher/birdnet_mapping_mini.yaml --out TEACHER
    python benchmarks/bench_teacher.py --teacher TEACHER --round0 RUN [--seeds 0,1,2] [--epochs 8]

1. BirdNET alone on the mini set's labelled test soundscapes: macro AUC over all scored classes (a class it cannot
   know is a constant column, AUC 0.5) and over the classes it knows.
2. Per seed, one ``birdsed pseudo`` folder with round 0 given (`--round0`, the model that fills the classes the
   teacher lacks), round 1 trained from scratch on labelled clips + BirdNET's pool labels (``teacher.pseudo``,
   ``pseudo.mode=extra``), and its control (the same seed, epochs and starting point, no pseudo data): the paired
   difference in soundscape macro AUC (best held-out epoch and last epoch).
3. Teacher + student, blended where BirdNET knows a class (mean and rank blends at w = 0.5, and w = 1: BirdNET where
   it knows a class, the student elsewhere; fixed in advance, never tuned on the test set) against BirdNET alone,
   on its own classes and on all classes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from birdsed.scoring.metrics import per_class_auc
from birdsed.teacher.birdnet_tflite import read_teacher
from birdsed.teacher.blend import blend_teacher

REPO = Path(__file__).resolve().parents[1]
MINI = REPO.parent / "shared" / "data" / "birdclef-real-mini"


def macro(y: np.ndarray, p: np.ndarray, cols: np.ndarray) -> float:
    """Macro ROC-AUC over the columns in `cols` that have positives (the Kaggle rule)."""
    aucs = per_class_auc(y[:, cols], p[:, cols])
    return float(np.nanmean(aucs))


def mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", type=Path, required=True, help="a `birdsed teacher` folder (both soundscape CSVs)")
    ap.add_argument(
        "--round0", type=Path, required=True, help="a supervised run: round 0, for the classes BirdNET lacks"
    )
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "resnet18_sed.yaml")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "teacher")
    ap.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    args = ap.parse_args()

    solution = pd.read_csv(MINI / "test_solution.csv", dtype={"row_id": str}).set_index("row_id")
    classes = solution.columns.tolist()
    y = solution.to_numpy(dtype=float)
    teacher = read_teacher(args.teacher / "test_soundscapes.csv", classes).loc[solution.index].to_numpy()
    known = np.isfinite(teacher).all(axis=0)
    every = np.ones(len(classes), dtype=bool)
    alone = np.where(np.isfinite(teacher), teacher, 0.5)
    print(f"BirdNET knows {known.sum()} of {len(classes)} classes")
    print(f"BirdNET alone: all classes {macro(y, alone, every):.4f}, its own classes {macro(y, alone, known):.4f}")
    confident = teacher[:, known] >= 0.5
    print(
        f"BirdNET windows at p >= 0.5: {confident.sum()} labels, {y[:, known][confident].mean():.0%} correct, "
        f"recall {confident[y[:, known] > 0].mean():.0%}"
    )

    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        out = args.out / f"seed{seed}"
        over = [
            f"train.seed={seed}",
            f"pseudo.init_checkpoints=[{args.round0}]",
            "pseudo.rounds=1",
            f"pseudo.epochs={args.epochs}",
            "pseudo.continue_training=false",
            "pseudo.control=true",
            "pseudo.mode=extra",
            f"teacher.pseudo={args.teacher / 'train_soundscapes.csv'}",
            "train.progress=false",
            *args.extra,
        ]
        if not (out / "round_1" / "DONE").is_file():
            cmd = [sys.executable, "-m", "birdsed", "pseudo", str(args.config), *over, "--out", str(out)]
            cmd.append("--resume" if out.exists() else "--overwrite")
            subprocess.run(cmd, check=True)
        table = pd.read_csv(out / "rounds.csv").set_index("kind")
        preds = {}
        for kind in ("pseudo", "control"):
            run = Path(table.loc[kind, "run_dir"])
            sub = pd.read_csv(run / "soundscape_preds.csv", dtype={"row_id": str}).set_index("row_id")
            preds[kind] = sub.loc[solution.index, classes].to_numpy()
        row = {"seed": seed}
        for kind in ("pseudo", "control"):
            row[f"{kind}_chosen"] = float(table.loc[kind, "soundscape_auc"])
            row[f"{kind}_last"] = float(table.loc[kind, "last_soundscape_auc"])
            blend = blend_teacher(preds[kind], teacher, 0.5)
            row[f"{kind}+bn_own"] = macro(y, blend, known)
            row[f"{kind}+bn_all"] = macro(y, blend, every)
            rank = blend_teacher(preds[kind], teacher, 0.5, "rank")
            row[f"{kind}+bn_rank_own"] = macro(y, rank, known)
            fill = blend_teacher(preds[kind], teacher, 1.0)  # BirdNET where it knows, the student elsewhere
            row[f"{kind}+bn_fill_all"] = macro(y, fill, every)
            row[f"{kind}_own"] = macro(y, preds[kind], known)
        rows.append(row)
        print(pd.DataFrame([row]).to_string(index=False, float_format=lambda v: f"{v:.4f}"))

    df = pd.DataFrame(rows)
    print("\nper seed:")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    bn_own, bn_all = macro(y, alone, known), macro(y, alone, every)
    print("\nmean ± sd over seeds (paired differences: student with BirdNET pool labels − control):")
    for key in ("chosen", "last", "own"):
        d = (df[f"pseudo_{key}"] - df[f"control_{key}"]).tolist()
        print(
            f"  {key:>7}: student {mean_sd(df[f'pseudo_{key}'].tolist())}, control "
            f"{mean_sd(df[f'control_{key}'].tolist())}, difference {mean_sd(d)}"
        )
    for kind in ("pseudo", "control"):
        print(
            f"  BirdNET + {kind}, rank blend: its classes {mean_sd(df[f'{kind}+bn_rank_own'].tolist())}; BirdNET "
            f"where it knows and {kind} elsewhere: all classes {mean_sd(df[f'{kind}+bn_fill_all'].tolist())}"
        )
        own = (df[f"{kind}+bn_own"] - bn_own).tolist()
        print(
            f"  BirdNET + {kind}: its classes {mean_sd(df[f'{kind}+bn_own'].tolist())} (vs BirdNET alone "
            f"{bn_own:.4f}: {mean_sd(own)}), all classes {mean_sd(df[f'{kind}+bn_all'].tolist())} "
            f"(BirdNET {bn_all:.4f})"
        )


if __name__ == "__main__":
    main()
