"""BirdNET distilled into EfficientNet-B0 (issue 38): the distillation recipe against the same recipe without the
teacher (the same steps, crops, augmentation and schedule), paired by seed, on the 2025-layout real mini set.

Usage:
    python benchmarks/bench_distill.py [--config configs/effnet_b0_distill.yaml] [--seeds 0 1 2]
        [--out runs/bench_distill] [--report-only] [--variants distilled control] [--rounds]

Each seed trains the recipe as shipped (``distilled``) and with ``train.distill=0 train.distill_probs=0
train.distill_unlabelled=0`` (``control``: from scratch, the same draws per epoch, all labelled), and that for 44
epochs instead of 12 (``control_compute``: about the distilled run's wall time on 2 CPU cores). All score the 30
labelled test soundscapes (``test_solution.csv``: never trained on; the recipe keeps its last epoch, so nothing is
chosen on them either). Printed per run: test AUC on all classes, on the classes BirdNET maps and on the others,
minutes; then the paired differences, and BirdNET's own AUC on its classes (``birdsed teacher`` on the test
soundscapes, written once to ``OUT/teacher``).

``--speed``: what distillation adds to a step, batch 32 × 5 s on this CPU (median of 5 after a warm-up): the
teacher's forward (the online targets) against the student's whole training step, and the one-off cost of a pass
of the teacher over all the audio a cached-target design would need instead.

``--rounds``: one noisy-student round on each seed's distilled model (``birdsed pseudo``, round 0 given), against
its same-compute control (``pseudo.control=true``: the same continued epochs without pseudo labels). The pool's
labels: BirdNET where it knows a class (``teacher.pseudo``, its CSV of ``train_soundscapes``), the distilled model
elsewhere; the student trains with MixUp, SpecAugment, stochastic depth and dropout on focal crops each mixed with a
pseudo chunk whose label mass is capped at the crop's (``pseudo.mass_cap=1``); distillation is off in the round.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
MINI = REPO.parent / "shared" / "data" / "birdclef-real-mini"
OFF = ["train.distill=0", "train.distill_probs=0", "train.distill_unlabelled=0"]
# control: the same steps; control_compute: the same wall time (the teacher's forward costs ~3.7x the student's
# step on this CPU, so the control trains 44 epochs where the distilled model trains 12)
VARIANTS = {"distilled": [], "control": OFF, "control_compute": [*OFF, "train.epochs=44"]}


ROUND = [
    *OFF, "pseudo.rounds=1", "pseudo.epochs=4", "pseudo.control=true", "pseudo.mode=mixup", "pseudo.mass_cap=1",
    "pseudo.power=[1.0]", "pseudo.min_max_prob=0.5", "pseudo.trim_prob=0.1", "train.warmup_epochs=0",
]  # fmt: skip


def birdsed(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "birdsed", *args], check=True, cwd=REPO)


def scores(run: Path, classes: list[str], mapped: list[str]) -> dict[str, float]:
    """A run's test figures from its soundscape_preds.csv (the last epoch's: train.select=last)."""
    from birdsed.scoring.metrics import macro_auc

    sol = pd.read_csv(MINI / "test_solution.csv", dtype={"row_id": str}).set_index("row_id")
    pred = pd.read_csv(run / "soundscape_preds.csv", dtype={"row_id": str}).set_index("row_id").loc[sol.index]
    others = [c for c in classes if c not in mapped]
    history = json.loads((run / "metrics.json").read_text())["history"]
    return {
        "all": macro_auc(sol[classes].to_numpy(), pred[classes].to_numpy()),
        "birdnet": macro_auc(sol[mapped].to_numpy(), pred[mapped].to_numpy()),
        "others": macro_auc(sol[others].to_numpy(), pred[others].to_numpy()),
        "minutes": history[-1]["elapsed_s"] / 60,
    }


def speed(config: Path) -> None:
    """The teacher's forward against the student's step (see the module's text)."""
    import time

    import torch

    from birdsed.config.load import load_config
    from birdsed.models.birdnet_port import BirdNetV24, load_birdnet
    from birdsed.models.build import build_model

    cfg = load_config(config, [f"data.root={MINI}"])
    model, teacher = build_model(cfg, 25, pretrained=False).train(), load_birdnet(BirdNetV24(32000)).eval()
    opt = torch.optim.AdamW(model.parameters())
    wave = torch.randn(32, cfg.seconds_to_samples(5.0)) * 0.1

    def step() -> None:
        loss = model(wave)["clip_logits"].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()

    def forward() -> None:
        with torch.no_grad():
            teacher.embed(wave)

    timings = {}
    for name, fn in (("student step", step), ("teacher forward", forward)):
        fn()
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t0)
        timings[name] = float(np.median(runs))
        print(f"{name}: {timings[name]:.2f} s per batch of 32 × 5 s ({torch.get_num_threads()} threads)")
    ratio = timings["teacher forward"] / timings["student step"]
    print(f"online distillation: step × {1 + ratio:.2f} (teacher / step = {ratio:.2f})")
    audio = 44 * 15 + 40 * 60  # the mini set's focal crops' region and unlabelled soundscapes, seconds
    once = timings["teacher forward"] * audio / (32 * 5)
    steps = 12 * 512 // 32
    print(f"cached targets: one pass over {audio} s of audio ≈ {once:.0f} s, against {steps} online steps × "
          f"{timings['teacher forward']:.2f} s = {steps * timings['teacher forward']:.0f} s")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "effnet_b0_distill.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench_distill")
    ap.add_argument("--report-only", action="store_true", help="print the figures of finished runs")
    ap.add_argument("--rounds", action="store_true", help="also one noisy-student round and its control per seed")
    ap.add_argument("--speed", action="store_true", help="only time the teacher's forward against a student step")
    args = ap.parse_args()
    if args.speed:
        return speed(args.config)
    if not (MINI / "test_solution.csv").is_file():
        sys.exit(f"{MINI} not found (../shared is absent)")
    from birdsed.data.folder import load_birdclef
    from birdsed.scoring.metrics import macro_auc

    classes = load_birdclef(MINI).classes
    teacher = args.out / "teacher"
    if not (teacher / "test_soundscapes.csv").is_file():
        birdsed("teacher", str(args.config), "--folders", "test_soundscapes", "--out", str(teacher), "--no-progress")
    birdnet = pd.read_csv(teacher / "test_soundscapes.csv", dtype={"row_id": str}).set_index("row_id")
    mapped = [c for c in classes if c in birdnet and birdnet[c].notna().all()]
    rows = {}
    for seed in args.seeds:
        for name in args.variants:
            run = args.out / f"{args.config.stem}_{name}_seed{seed}"
            if not args.report_only and not (run / "metrics.json").is_file():
                birdsed("train", str(args.config), f"train.seed={seed}", "train.progress=false", *VARIANTS[name],
                        "--out", str(run), "--overwrite")  # fmt: skip
            if (run / "metrics.json").is_file():
                rows[name, seed] = scores(run, classes, mapped)
    print(f"{args.config.name}: {len(mapped)} of {len(classes)} classes mapped to BirdNET")
    print("{:<10} {:>4} {:>8} {:>9} {:>8} {:>6}".format("variant", "seed", "all", "BirdNET's", "others", "min"))
    for (name, seed), f in rows.items():
        print(f"{name:<10} {seed:>4} {f['all']:>8.4f} {f['birdnet']:>9.4f} {f['others']:>8.4f} {f['minutes']:>6.1f}")
    for name in args.variants:
        got = [f for (n, _), f in rows.items() if n == name]
        if got:
            summary = ", ".join(f"{k} {np.mean([f[k] for f in got]):.4f} ± {np.std([f[k] for f in got]):.4f}"
                                for k in ("all", "birdnet", "others"))  # fmt: skip
            print(f"{name} over {len(got)} seed(s): {summary}")
    for control in ("control", "control_compute"):
        paired = [s for s in args.seeds if ("distilled", s) in rows and (control, s) in rows]
        for key in ("all", "birdnet", "others"):
            if paired:
                diff = np.array([rows["distilled", s][key] - rows[control, s][key] for s in paired])
                per = ", ".join(f"{d:+.4f}" for d in diff)
                print(f"distilled - {control}, {key}: mean {diff.mean():+.4f} (per seed {per})")
    if args.rounds:
        noisy_student(args, classes, mapped)
    sol = pd.read_csv(MINI / "test_solution.csv", dtype={"row_id": str}).set_index("row_id")
    auc = macro_auc(sol[mapped].to_numpy(), birdnet.loc[sol.index, mapped].to_numpy())
    print(f"BirdNET alone on its {len(mapped)} classes (teacher window rule as configured): {auc:.4f}")


def noisy_student(args: argparse.Namespace, classes: list[str], mapped: list[str]) -> None:
    """One pseudo round per seed on the distilled model against its control (see the module's text)."""
    pool = args.out / "teacher_pool"
    if not (pool / "train_soundscapes.csv").is_file():
        birdsed("teacher", str(args.config), "--folders", "train_soundscapes", "--out", str(pool), "--no-progress")
    diffs = {k: [] for k in ("all", "birdnet", "others")}
    for seed in args.seeds:
        start = args.out / f"{args.config.stem}_distilled_seed{seed}"
        out = args.out / f"{args.config.stem}_round1_seed{seed}"
        if not args.report_only and not (out / "round_1" / "DONE").is_file():
            birdsed("pseudo", str(args.config), f"train.seed={seed}", "train.progress=false", *ROUND,
                    f"pseudo.init_checkpoints=[{start}]", f"teacher.pseudo={pool / 'train_soundscapes.csv'}",
                    "--out", str(out), "--overwrite")  # fmt: skip
        if not (out / "round_1" / "DONE").is_file():
            continue
        got = {name: scores(out / name / ("run" if name == "round_1" else ""), classes, mapped)
               for name in ("round_1", "control_1")}  # fmt: skip
        meta = json.loads((out / "round_1" / "pseudo_meta.json").read_text())
        print(f"seed {seed}: round 1 {got['round_1']['all']:.4f} (BirdNET's {got['round_1']['birdnet']:.4f}), "
              f"control {got['control_1']['all']:.4f} (BirdNET's {got['control_1']['birdnet']:.4f}); "
              f"{meta['kept']} of {meta['chunks']} chunks kept, {got['round_1']['minutes']:.1f} min")  # fmt: skip
        for k in diffs:
            diffs[k].append(got["round_1"][k] - got["control_1"][k])
    for k, d in diffs.items():
        if d:
            d = np.array(d)
            lo, hi = (
                (d.mean() - 1.96 * d.std(ddof=1) / np.sqrt(len(d)), d.mean() + 1.96 * d.std(ddof=1) / np.sqrt(len(d)))
                if len(d) > 1
                else (np.nan, np.nan)
            )
            print(
                f"round 1 - control, {k}: mean {d.mean():+.4f} [{lo:+.4f}, {hi:+.4f}] (per seed "
                + ", ".join(f"{x:+.4f}" for x in d)
                + ")"
            )


if __name__ == "__main__":
    main()
