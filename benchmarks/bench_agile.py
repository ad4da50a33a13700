"""Agile modelling on BirdNET's embeddings (issue 12 item 7): does a linear classifier on the teacher's features,
trained on our labelled recordings, fill the classes BirdNET lacks better than the SED student, and does it add
information on the classes BirdNET knows?

Usage:
    birdsed teacher configs/effnet_b0_sed.yaml teacher.mapping=configs/teacher/birdnet_mapping_mini.yaml \\
        teacher.embeddings=true --folders train_audio,train_soundscapes,test_soundscapes --out EMB
    python benchmarks/bench_agile.py --teacher EMB [--students DIR] [--boot 1000]

`--students`: a ``bench_teacher.py`` output folder (``seed<k>/`` pseudo folders); their round-1 students and
controls are the SED models compared on the classes BirdNET lacks, and blended with the agile model.

Every setting is fixed in advance (C = 0.1, blend weight 0.5); the C grid printed last is a sensitivity check, not
a choice. A logistic regression is a convex fit, so seeds do not move it: the spread given is a paired bootstrap
over the 30 test soundscapes (resampled whole, the same resamples for both sides of a difference).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from birdsed.config.load import load_config
from birdsed.data.folder import split_row_ids
from birdsed.scoring.metrics import per_class_auc
from birdsed.teacher.agile import run_agile
from birdsed.teacher.birdnet_tflite import read_teacher
from birdsed.teacher.blend import blend_teacher

REPO = Path(__file__).resolve().parents[1]
MINI = REPO.parent / "shared" / "data" / "birdclef-real-mini"


def aucs(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-column ROC-AUC by the rank-sum formula (ties averaged), NaN where a column has no positive or negative:
    the same numbers as sklearn's roc_auc_score, all columns at once (fast enough for a bootstrap)."""
    r = rankdata(p, axis=0)
    pos = y.sum(axis=0)
    neg = len(y) - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        out = ((r * y).sum(axis=0) - pos * (pos + 1) / 2) / (pos * neg)
    return np.where((pos > 0) & (neg > 0), out, np.nan)


def macro(y: np.ndarray, p: np.ndarray, cols: np.ndarray) -> float:
    """Kaggle macro AUC over the columns in `cols` that have positives."""
    return float(np.nanmean(aucs(y[:, cols], p[:, cols])))


def boot(y, a, b, cols, groups, n, seed=0) -> tuple[float, float, float]:
    """Paired bootstrap over soundscapes of macro(a) − macro(b): (point, 2.5 %, 97.5 %)."""
    rng = np.random.default_rng(seed)
    stems = np.unique(groups)
    rows = {s: np.flatnonzero(groups == s) for s in stems}
    diffs = []
    for _ in range(n):
        idx = np.concatenate([rows[s] for s in rng.choice(stems, len(stems))])
        diffs.append(macro(y[idx], a[idx], cols) - macro(y[idx], b[idx], cols))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return macro(y, a, cols) - macro(y, b, cols), float(lo), float(hi)


def crossfit(
    y: np.ndarray,
    groups: np.ndarray,
    candidates: dict[str, np.ndarray],
    baseline: np.ndarray,
    cols: np.ndarray,
    splits: int = 20,
    seed: int = 0,
) -> tuple[list[float], list[str], list[float]]:
    """Split the soundscapes in random halves; pick the best candidate on one half, score its gain over `baseline`
    on the other (both ways). Returns the held-out gains, the picks and their held-out AUCs: an estimate of the
    whole choose-then-use procedure that never scores a choice on the soundscapes it was chosen on."""
    rng = np.random.default_rng(seed)
    stems = np.unique(groups)
    gains, picks, held = [], [], []
    for _ in range(splits):
        perm = rng.permutation(stems)
        halves = [np.isin(groups, perm[: len(stems) // 2]), np.isin(groups, perm[len(stems) // 2 :])]
        for sel, ev in (halves, halves[::-1]):
            best = max(candidates, key=lambda k: macro(y[sel], candidates[k][sel], cols))
            held.append(macro(y[ev], candidates[best][ev], cols))
            gains.append(held[-1] - macro(y[ev], baseline[ev], cols))
            picks.append(best)
    return gains, picks, held


def fmt(t: tuple[float, float, float]) -> str:
    return f"{t[0]:+.4f} [{t[1]:+.4f}, {t[2]:+.4f}]"


def embedding_cost(reps: int = 3) -> None:
    """BirdNET with and without reading its embeddings, one thread, one minute of real audio, interleaved."""
    from birdsed.data.audio import list_audio, load_audio
    from birdsed.teacher.birdnet_tflite import BirdNET, window_outputs

    wave = load_audio(list_audio(MINI / "test_soundscapes")[0], BirdNET.sample_rate)
    models = {e: BirdNET(threads=1, embeddings=e) for e in (False, True)}
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(reps):
        for e, m in models.items():
            run = m.embed if e else (lambda c, m=m: (m.predict(c), None))
            t0 = time.perf_counter()
            window_outputs(wave, run, m.sample_rate, m.chunk_samples, 1.0, 5.0)
            times[e].append(time.perf_counter() - t0)
    for e in (False, True):
        t = float(np.median(times[e]))
        print(f"BirdNET, embeddings={e}: {t:.2f} s per minute of audio ({60 / t:.1f}x real time, 1 thread)")
    print(f"with / without embeddings: {np.median(times[True]) / np.median(times[False]):.3f} (median of {reps})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", type=Path, required=True, help="birdsed teacher --embeddings folder")
    ap.add_argument("--students", type=Path, default=None, help="bench_teacher.py output (seed<k>/ folders)")
    ap.add_argument(
        "--agile-students", type=Path, default=None,
        help="the same seeds retrained with BirdNET + agile pool labels (teacher.pseudo=AGILE/train_soundscapes.csv)",
    )  # fmt: skip
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "effnet_b0_sed.yaml")
    ap.add_argument("--boot", type=int, default=1000)
    args = ap.parse_args()
    embedding_cost()

    cfg = load_config(args.config)
    cfg.data.root = str(MINI)
    solution = pd.read_csv(MINI / "test_solution.csv", dtype={"row_id": str}).set_index("row_id")
    classes = solution.columns.tolist()
    y = solution.to_numpy(dtype=float)
    groups = split_row_ids(solution.index.to_series())[0].to_numpy()
    bn = read_teacher(args.teacher / "test_soundscapes.csv", classes).loc[solution.index].to_numpy()
    known = np.isfinite(bn).all(axis=0)
    unknown = ~known
    every = np.ones(len(classes), bool)
    bn_alone = np.where(known, bn, 0.5)
    scored_unknown = [c for c, u, s in zip(classes, unknown, y.sum(0) > 0, strict=True) if u and s]
    print(f"BirdNET knows {known.sum()} of {len(classes)} classes; scored classes it lacks: {scored_unknown}")
    print(f"BirdNET alone: its classes {macro(y, bn_alone, known):.4f}, all {macro(y, bn_alone, every):.4f}")

    variants = {  # name: (pool, teacher_targets, C)
        "train_audio": (False, False, 0.1),
        "+ pool": (True, False, 0.1),
        "+ pool + teacher targets": (True, True, 0.1),
        "+ pool, C=0.01": (True, False, 0.01),
        "+ pool, C=1": (True, False, 1.0),
        "train_audio, C=0.01": (False, False, 0.01),
        "train_audio, C=1": (False, False, 1.0),
    }
    agile = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (pool, targets, c) in variants.items():
            t0 = time.perf_counter()
            out = Path(tmp) / f"v{len(agile)}"
            cfg.agile.pool, cfg.agile.teacher_targets, cfg.agile.c = pool, targets, c
            run_agile(cfg, args.teacher, out)
            p = read_teacher(out / "test_soundscapes.agile.csv", classes).loc[solution.index].to_numpy()
            agile[name] = np.where(np.isfinite(p), p, 0.5)
            print(f"agile {name}: fit + predict {time.perf_counter() - t0:.1f} s")

    print("\nagile alone (the C variants are a sensitivity check; C = 0.1 was fixed in advance):")
    for name, p in agile.items():
        print(
            f"  {name:<26} all {macro(y, p, every):.4f}, BirdNET's classes {macro(y, p, known):.4f}, "
            f"the others {macro(y, p, unknown):.4f}"
        )
    per = pd.DataFrame(
        {"BirdNET": np.where(known, per_class_auc(y, bn_alone), np.nan)}
        | {f"agile {name}": per_class_auc(y, agile[name]) for name in list(variants)[:3]},
        index=classes,
    )

    for name in list(variants)[:3]:
        a = agile[name]
        mean = blend_teacher(a, np.where(known, bn, np.nan), 0.5)  # BirdNET's classes: 0.5/0.5; others: agile
        rank = blend_teacher(a, np.where(known, bn, np.nan), 0.5, "rank")
        print(f"\nBirdNET + agile ({name}), difference to BirdNET alone, paired bootstrap 95 % interval:")
        for label, p, cols in (("mean blend, BirdNET's classes", mean, known),
                               ("rank blend, BirdNET's classes", rank, known),
                               ("mean blend, all classes", mean, every)):  # fmt: skip
            print(f"  {label:<30} {macro(y, p, cols):.4f}  {fmt(boot(y, p, bn_alone, cols, groups, args.boot))}")

    # choosing the agile variant and the blend weight on half the soundscapes, scoring the choice on the other half
    candidates = {"BirdNET alone": bn_alone}
    for name in ("train_audio", "train_audio, C=0.01", "train_audio, C=1", "+ pool", "+ pool, C=0.01", "+ pool, C=1"):
        for w in (0.25, 0.5, 0.75):
            candidates[f"{name}, a={w}"] = blend_teacher(agile[name], np.where(known, bn, np.nan), 1 - w)
    print(f"\ncross-fitted choice among {len(candidates)} candidates (6 agile variants x a in 0.25/0.5/0.75, and")
    print("BirdNET alone): chosen on 15 soundscapes, scored on the other 15, both ways, 20 random halvings")
    for label, cols in (("BirdNET's classes", known), ("all classes", every)):
        gains, picks, held = crossfit(y, groups, candidates, bn_alone, cols)
        top = pd.Series(picks).value_counts().head(3)
        print(
            f"  {label:<18} held-out AUC of the choice {np.mean(held):.4f}, minus BirdNET's on the same half "
            f"{np.mean(gains):+.4f} ± {np.std(gains, ddof=1):.4f} (sd over {len(gains)} halves; "
            f"{np.mean(np.array(gains) > 0):.0%} > 0); most chosen: " + ", ".join(f"{k} ({v})" for k, v in top.items())
        )

    if args.students:
        rows = []
        for seed_dir in sorted(args.students.glob("seed*")):
            table = pd.read_csv(seed_dir / "rounds.csv").set_index("kind")
            row = {"seed": seed_dir.name}
            for kind in ("pseudo", "control"):
                run = Path(table.loc[kind, "run_dir"])
                sub = pd.read_csv(run / "soundscape_preds.csv", dtype={"row_id": str}).set_index("row_id")
                s = sub.loc[solution.index, classes].to_numpy()
                a = agile["+ pool"]
                fill = blend_teacher(s, np.where(known, bn, np.nan), 1.0)  # BirdNET where it knows, SED elsewhere
                both = blend_teacher(blend_teacher(s, a, 0.5), np.where(known, bn, np.nan), 0.5)
                row[f"{kind} on the others"] = macro(y, s, unknown)
                row[f"BirdNET+{kind} fill, all"] = macro(y, fill, every)
                row[f"BirdNET+agile+{kind}, all"] = macro(y, both, every)
                row[f"BirdNET+agile+{kind}, BirdNET's"] = macro(y, both, known)
                per[f"{kind} {seed_dir.name}"] = per_class_auc(y, s)
            rows.append(row)
        df = pd.DataFrame(rows).set_index("seed")
        print("\nSED students (bench_teacher.py) beside the agile model (+ pool):")
        print(df.to_string(float_format=lambda v: f"{v:.4f}"))
        print("mean ± sd over seeds:")
        for col in df.columns:
            print(f"  {col:<32} {df[col].mean():.4f} ± {df[col].std(ddof=1):.4f}")
    if args.students and args.agile_students:
        rows = []
        for seed_dir in sorted(args.agile_students.glob("seed*")):
            row = {"seed": seed_dir.name}
            for key, root in (("BirdNET labels", args.students), ("BirdNET+agile labels", args.agile_students)):
                table = pd.read_csv(root / seed_dir.name / "rounds.csv").set_index("kind")
                sub = pd.read_csv(Path(table.loc["pseudo", "run_dir"]) / "soundscape_preds.csv", dtype={"row_id": str})
                s = sub.set_index("row_id").loc[solution.index, classes].to_numpy()
                row[f"{key}: all"] = float(table.loc["pseudo", "soundscape_auc"])
                row[f"{key}: last"] = float(table.loc["pseudo", "last_soundscape_auc"])
                row[f"{key}: BirdNET lacks"] = macro(y, s, unknown)
                row[f"{key}: kept"] = int(table.loc["pseudo", "kept_chunks"])
            rows.append(row)
        df = pd.DataFrame(rows).set_index("seed")
        print("\nstudents trained with BirdNET + agile pool labels vs BirdNET's alone (same seeds, epochs, start):")
        print(df.to_string(float_format=lambda v: f"{v:.4f}"))
        for part in ("all", "last", "BirdNET lacks"):
            d = df[f"BirdNET+agile labels: {part}"] - df[f"BirdNET labels: {part}"]
            print(f"  {part:<14} paired difference {d.mean():+.4f} ± {d.std(ddof=1):.4f} over {len(d)} seeds")

    print("\nper-class AUC on the test soundscapes (NaN: not scored / unknown to BirdNET):")
    print(per.loc[y.sum(0) > 0].to_string(float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
