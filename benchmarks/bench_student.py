"""The soundscape student and its pseudo-label rounds on the 2026 mini set (issue 46), chosen out of fold, scored on
the test soundscapes (never trained or chosen on).

Usage (the teacher folder as the README's 2026 path writes it):
    birdsed teacher configs/soundscape_student.yaml data.root=MINI26 teacher.embeddings=true \
        --folders train_audio,train_soundscapes,test_soundscapes --out runs/teacher26
    python benchmarks/bench_student.py --teacher runs/teacher26 [--seeds 0 1 2 3 4] [--part select|test|scale|all]

``select`` (labelled *training* soundscapes only, out of fold over their 5 folds, 3 seeds): each setting's students
predict the held-out fold's labelled windows; printed the macro AUC of the student alone and of its mean with
BirdNET + agile (the agile model refitted without the fold), beside BirdNET + agile's. The recipe's settings were
chosen here. ``test`` (the 20 test soundscapes, ``test_solution.csv``), per seed, paired:
- round 1 vs round 0 (the pool with teacher labels vs none; same epochs, so the same steps per epoch plus the pool's);
- round 2 vs its same-compute control (round 2 trained on round 1's labels: the same epochs and draws, no new labels);
- the entry as ``birdsed choose`` would make it (the shares chosen out of fold on the labelled training windows),
  against BirdNET + agile on the same test windows;
and the seconds a round takes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from birdsed.config.load import load_config  # noqa: E402
from birdsed.data.folder import load_birdclef  # noqa: E402
from birdsed.data.soundscapes import read_if_present  # noqa: E402
from birdsed.pseudo.student import fold_agile, run_rounds, student_data  # noqa: E402
from birdsed.scoring.metrics import macro_auc  # noqa: E402
from birdsed.study.choose import blend, choose_shares, teacher_on_windows  # noqa: E402
from birdsed.teacher.agile import agile_inputs, with_agile  # noqa: E402
from birdsed.teacher.windows import read_folder, student_probs  # noqa: E402

MINI26 = REPO.parent / "shared" / "data" / "birdclef-real-mini-2026"
RECIPE = REPO / "configs" / "soundscape_student.yaml"
SETTINGS = {  # what `select` compares (each a set of overrides of the recipe: one pool round, 30 epochs)
    "gru": [],
    "gru, 2 rounds": ["student.rounds=2"],
    "transformer": ["student.temporal=transformer"],
    "none": ["student.temporal=none"],
    "gru, no pool": ["student.rounds=0"],
    "gru, no pool, 53 epochs (round 1's steps)": ["student.rounds=0", "student.epochs=53"],
    "gru, 60 epochs": ["student.epochs=60"],
    "gru, no pool, 106 epochs": ["student.rounds=0", "student.epochs=106"],
}


def paired(a: list[float], b: list[float]) -> str:
    d = np.array(a) - np.array(b)
    if len(d) < 2:
        return f"{d.mean():+.4f}"
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return f"{d.mean():+.4f} [{d.mean() - half:+.4f}, {d.mean() + half:+.4f}] ({int((d > 0).sum())}/{len(d)} > 0)"


def select(teacher: Path, seeds: list[int], names: list[str] | None = None) -> dict:
    """Out of fold on the labelled training soundscapes: every setting, every fold, `seeds`."""
    out = {}
    base = load_config(RECIPE, [f"data.root={MINI26}"])
    data = load_birdclef(base.data.root)
    lw = read_if_present(base, data.root, data.classes)
    safe, agile_only = teacher_on_windows(base, data, teacher, lw)
    y, folds = lw.targets, lw.table["fold"].to_numpy()
    out["BirdNET + agile"] = macro_auc(y, safe)
    print(f"BirdNET + agile, out of fold on {len(y)} labelled windows: {out['BirdNET + agile']:.4f}", flush=True)
    per_fold = {int(k): student_data(base, data, teacher, fold=int(k)) for k in np.unique(folds)}  # read once
    for name, extra in SETTINGS.items():
        if names and name not in names:
            continue
        cfg = load_config(RECIPE, [f"data.root={MINI26}", *extra])
        alone, mixed = [], []
        t0 = time.perf_counter()
        for seed in seeds:
            pred = np.full_like(safe, np.nan)
            for k in np.unique(folds):
                sd = per_fold[int(k)]
                model = run_rounds(cfg, sd, seed)[-1].model
                folder = sd.folders["train_soundscapes"]
                probs = pd.DataFrame(student_probs(model, folder, cfg.data.name_pattern), index=folder.ids)
                rows = folds == k
                pred[rows] = probs.loc[lw.table["row_id"][rows]].to_numpy()
            alone.append(macro_auc(y, pred))
            mixed.append(macro_auc(y, blend(pred, safe, 0.5, 0.5, agile_only)))
        out[name] = {"alone": alone, "half": mixed, "seconds": (time.perf_counter() - t0) / len(seeds)}
        print(f"{name:14s} alone {np.mean(alone):.4f} ± {np.std(alone):.4f}   half with BirdNET + agile "
              f"{np.mean(mixed):.4f} ± {np.std(mixed):.4f}   ({out[name]['seconds']:.0f} s per seed, 5 folds)",
              flush=True)  # fmt: skip
    return out


def test(teacher: Path, seeds: list[int]) -> dict:
    """The test soundscapes, per seed: rounds vs controls (the fold −1 student, trained on every labelled window),
    and the entry as the README's 2026 path makes it (one student per fold, the share chosen by ``choose``'s
    procedure on their out-of-fold predictions) vs BirdNET + agile."""
    cfg = load_config(RECIPE, [f"data.root={MINI26}", "data.soundscape_fold=-1"])
    data = load_birdclef(cfg.data.root)
    pattern = cfg.data.name_pattern
    solution = pd.read_csv(MINI26 / "test_solution.csv").set_index("row_id")[data.classes]
    tf = read_folder(teacher, "test_soundscapes", data.classes)
    y = solution.loc[tf.ids].to_numpy()
    lw = read_if_present(cfg, data.root, data.classes)
    agile = fold_agile(cfg, data, agile_inputs(cfg, data, teacher), lw, -1)
    safe = with_agile(
        tf.birdnet, agile.predict(tf.emb), cfg.teacher.agile_weight, agile.blend_mask(cfg.teacher.agile_classes)
    )
    lab_safe, lab_agile_only = teacher_on_windows(cfg, data, teacher, lw)
    folds = lw.table["fold"].to_numpy()
    per_fold = {int(k): student_data(cfg, data, teacher, fold=int(k)) for k in np.unique(folds)}
    sd = student_data(cfg, data, teacher)
    keys = ("round0", "control1", "round1", "round2", "control2", "students", "entry")
    rows: dict[str, list[float]] = {k: [] for k in keys}
    # round 1's same-compute control: round 0 (no pool) for as many steps as round 1 takes with the pool
    n0 = len(sd.focal) + len(sd.labelled)
    steps_cfg = load_config(RECIPE, [f"data.root={MINI26}", "data.soundscape_fold=-1"])
    steps_cfg.student.epochs = round(cfg.student.epochs * (n0 + len(sd.pool)) / n0)
    secs, shares = [], []
    for seed in seeds:
        r0 = run_rounds(cfg, sd, seed, rounds=0)[0]
        c1 = run_rounds(steps_cfg, sd, seed + 1, rounds=0)[0]  # round 1 trains with seed + 1
        chain = run_rounds(cfg, sd, seed, rounds=2)
        ctrl = run_rounds(cfg, sd, seed, rounds=2, control=True)
        secs.append(np.mean([r.seconds for r in chain]))
        runs = (
            ("round0", r0.model),
            ("control1", c1.model),
            ("round1", chain[0].model),
            ("round2", chain[1].model),
            ("control2", ctrl[1].model),
        )
        for key, model in runs:
            rows[key].append(macro_auc(y, student_probs(model, tf, pattern)))
        oof = np.full((len(lw), len(data.classes)), np.nan)
        fold_models = []
        for k, fsd in per_fold.items():
            model = run_rounds(cfg, fsd, seed)[-1].model
            fold_models.append(model)
            folder = fsd.folders["train_soundscapes"]
            probs = pd.DataFrame(student_probs(model, folder, pattern), index=folder.ids)
            oof[folds == k] = probs.loc[lw.table["row_id"][folds == k]].to_numpy()
        choice = choose_shares(lw.targets, [], lab_safe, lab_agile_only, folds, soundscape=oof)
        shares.append(choice.student_weight)
        students = np.mean([student_probs(m, tf, pattern) for m in fold_models], axis=0)
        agile_only = ~np.isfinite(tf.birdnet).any(axis=0) & np.isfinite(safe).any(axis=0)
        rows["students"].append(macro_auc(y, students))
        rows["entry"].append(
            macro_auc(y, blend(np.full_like(safe, np.nan), safe, 1.0, 1.0, agile_only, students, choice.student_weight))
        )
        print(
            f"seed {seed}: " + "  ".join(f"{k} {v[-1]:.4f}" for k, v in rows.items()) + f"  (share {shares[-1]:g})",
            flush=True,
        )
    base = macro_auc(y, safe)
    alone = macro_auc(y, np.nan_to_num(tf.birdnet))
    print(f"BirdNET alone {alone:.4f}; BirdNET + agile {base:.4f} (the test soundscapes, {len(y)} windows)")
    for k, v in rows.items():
        print(f"{k:9s} {np.mean(v):.4f} ± {np.std(v):.4f}")
    print(f"round 1 − round 0 (the same epochs):           {paired(rows['round1'], rows['round0'])}")
    print(f"round 1 − its control (round 0, same steps):   {paired(rows['round1'], rows['control1'])}")
    print(f"round 2 − its control (round 1's labels):      {paired(rows['round2'], rows['control2'])}")
    print(f"entry − BirdNET + agile:                        {paired(rows['entry'], [base] * len(seeds))}")
    print(f"students' share chosen: {shares}; a round: {np.mean(secs):.1f} s on this machine")
    return {"rows": rows, "birdnet_agile": base, "shares": shares, "round_seconds": float(np.mean(secs))}


def scale(seeds: list[int]) -> dict:
    """BirdCLEF+ 2026's size (35,549 recordings of synth --like's lengths, 10,658 pool and 66 labelled one-minute
    soundscapes, 234 classes, BirdNET's 1,024-d embeddings): the window table's memory as the student holds it, and
    one round's time, from steps measured here at the real sizes (random data: time and memory, not quality)."""
    import resource

    import torch

    from birdsed.pseudo.student import Batchable, train_student

    rng = np.random.default_rng(0)
    seconds = np.clip(rng.lognormal(np.log(25.0), 0.9, 35_549), 2.0, 600.0)  # synth --like's recording lengths
    windows = np.maximum(1, np.round(seconds / 5)).astype(int)
    pieces = int(np.ceil(windows / 12).sum())  # focal recordings cut into pieces of ≤ 12 windows
    n_seq = pieces + 10_658 + 66
    c, d, t = 234, 1024, 12
    table_gb = (windows.sum() + 10_724 * 12) * d * 2 / 2**30  # float16 on disk
    held_gb = n_seq * t * (d * 4 + c * 4 * 3 + 1) / 2**30  # float32 embeddings, teacher, targets, masks (+ valid)
    print(f"at 2026's size: {n_seq:,} sequences ({pieces:,} focal pieces); the window table {table_gb:.2f} GB float16, "
          f"{held_gb:.1f} GB as the student trains on it (float32)")  # fmt: skip
    cfg = load_config(RECIPE, [f"data.root={MINI26}", "student.epochs=1"])
    sd = type("SD", (), {"classes": [str(i) for i in range(c)], "sites": [f"S{i:02d}" for i in range(20)]})()
    out = {"sequences": n_seq, "table_gb": table_gb, "held_gb": held_gb}
    for batch in (32, 128):
        n = 50 * batch  # 50 steps
        data = Batchable(
            rng.normal(size=(n, t, d)).astype(np.float32), rng.random((n, t, c)).astype(np.float32),
            np.ones((n, t), bool), rng.integers(0, 21, n), rng.integers(0, 25, n),
            (rng.random((n, t, c)) < 0.01).astype(np.float32), np.ones((n, t, c), bool), np.ones(n, np.float32),
        )  # fmt: skip
        cfg.student.batch_size = batch
        t0 = time.perf_counter()
        train_student(cfg, sd, data, seed=0)
        step = (time.perf_counter() - t0) / 50
        epoch = step * np.ceil(n_seq / batch)
        out[f"batch{batch}"] = {"step_s": step, "round_min_30_epochs": 30 * epoch / 60}
        print(f"batch {batch}: {step * 1000:.0f} ms a step ({torch.get_num_threads()} threads) → an epoch "
              f"{epoch / 60:.1f} min, a round of 30 epochs {30 * epoch / 60:.0f} min")  # fmt: skip
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak memory of this process {out['peak_rss_gb']:.1f} GB")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--part", choices=("select", "test", "scale", "all"), default="all")
    ap.add_argument("--settings", nargs="+", help="only these of SETTINGS (select)")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench_student.json")
    args = ap.parse_args()
    if not (MINI26 / "train_soundscapes_labels.csv").is_file():
        sys.exit(f"{MINI26} not found (../shared is absent)")
    result = {}
    if args.part in ("select", "all"):
        result["select"] = select(args.teacher, args.seeds[:3], args.settings)
    if args.part in ("test", "all"):
        result["test"] = test(args.teacher, args.seeds)
    if args.part in ("scale", "all"):
        result["scale"] = scale(args.seeds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
