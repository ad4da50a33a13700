"""Competition scale (issue 37): the path a competitor runs, at several fractions S of BirdCLEF+ 2026's size, with
wall time, CPU time, peak memory and disk per stage; how each stage grows; and a projection to S = 1.

Usage:
    python benchmarks/bench_scale.py [--scales 0.002 0.005 0.01] [--out runs/scale] [--steps 12]

Per scale (``birdsed synth --like birdclef2026 --scale S``, kept in OUT for the next run), each stage one command:

- ``prepare``: the waveform cache of ``configs/birdnet_sed.yaml`` (whole files), then ``prepare_first15`` the same
  with ``data.cache_seconds=15`` (the recipes crop inside the first 15 s);
- ``teacher``: BirdNET (TFLite, ``birdsed teacher``) over the unlabelled pool, ``train_soundscapes``;
- ``train_<recipe>``: ``--steps`` optimiser steps of ``birdnet_sed`` and ``effnet_b0_distill`` (batch 32, their
  folder set-up, labelled-window validation and checkpoint included);
- ``pool``: a pseudo round's pool prediction — ``birdsed infer`` of the EfficientNet-B0 run over the pool;
- ``infer``: the test soundscapes with the BirdNET-backbone student (3 TTA shifts) + BirdNET as teacher.

Each stage's size n (files, soundscapes, or recordings for training's set-up) and its wall time give a growth
exponent b (log-log fit over the scales: 1 = linear); the S = 1 projection is the largest scale's cost per unit ×
S = 1's units, on this box and on a 4-core Kaggle CPU (× 2/4: compute-bound stages scale with cores). Training is
projected per full pass over the 35,549 recordings from the measured step time. Peak RSS is the largest process of
the stage (``os.wait4``); disk is the stage's output folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FULL = {"recordings": 35_549, "pool": 10_658, "test": 600}  # BirdCLEF+ 2026 at S = 1
RECIPES = ("birdnet_sed", "effnet_b0_distill")


def run(cmd: list[str], log: Path) -> dict:
    """Run one stage; its wall and CPU seconds and peak RSS (MB)."""
    t0 = time.perf_counter()
    with open(log, "a") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"{' '.join(cmd[:4])} failed: see {log}")
    return {"wall_s": time.perf_counter() - t0, "cpu_s": usage.ru_utime + usage.ru_stime,
            "rss_mb": usage.ru_maxrss / 1024}  # fmt: skip


def du(path: Path) -> float:
    """Megabytes under `path`."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 2**20


def birds_to_birdnet(root: Path) -> str:
    """A teacher.mapping YAML pairing each synthetic bird (eBird-style code) with one of BirdNET's labels."""
    import pandas as pd
    import yaml

    from birdsed.models.birdnet_port import birdnet_labels

    taxonomy = pd.read_csv(root / "taxonomy.csv", dtype=str)
    birds = taxonomy.loc[taxonomy["class_name"] == "Aves", "primary_label"]
    return yaml.safe_dump(dict(zip(birds, birdnet_labels(), strict=False)), allow_unicode=True)


def scale_stages(s: float, out: Path, steps: int) -> dict:
    """Every stage at scale `s` (see the module's text)."""
    bird = [sys.executable, "-m", "birdsed"]
    root, work = out / f"like_{s:g}", out / f"work_{s:g}"
    log = out / f"scale_{s:g}.log"
    stages: dict[str, dict] = {}
    if not (root / "train.csv").is_file():
        stages["synth"] = run([*bird, "synth", "--like", "birdclef2026", "--scale", str(s), "--out", str(root)], log)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    n_rec = len((root / "train.csv").read_text().splitlines()) - 1
    n_pool = len(list((root / "train_soundscapes").iterdir()))
    n_test = len(list((root / "test_soundscapes").iterdir()))
    mapping = work / "mapping.yaml"  # the synthetic birds stand for BirdNET's first 162 labels: the teacher's cost
    mapping.write_text(birds_to_birdnet(root))  # is that of a folder whose birds it knows, as BirdCLEF's
    common = [f"data.root={root}", f"augment.background_dir={root / 'train_soundscapes'}", f"teacher.mapping={mapping}"]
    for name, extra in (("prepare", []), ("prepare_first15", ["data.cache_seconds=15"])):
        cache = work / f"cache_{name}"
        stages[name] = run([*bird, "prepare", "configs/birdnet_sed.yaml", *common, f"data.cache_dir={cache}",
                            *extra, "--no-progress"], log)  # fmt: skip
        stages[name] |= {"n": n_rec + n_pool, "disk_mb": du(cache)}
    cache = f"data.cache_dir={work / 'cache_prepare'}"
    stages["teacher"] = run([*bird, "teacher", "configs/birdnet_sed.yaml", *common, "--folders", "train_soundscapes",
                             "--out", str(work / "teacher"), "--no-progress"], log)  # fmt: skip
    stages["teacher"] |= {"n": n_pool, "disk_mb": du(work / "teacher")}
    for recipe in RECIPES:
        # two epochs, the second validated: epoch 0 times the steps alone, epoch 1 - epoch 0 the validation
        epochs = ["train.epochs=2", "train.val_every=2", f"train.samples_per_epoch={32 * steps}"]
        out_dir = ["train.progress=false", "--out", str(work / recipe)]
        r = run([*bird, "train", f"configs/{recipe}.yaml", *common, cache, *epochs, *out_dir], log)
        history = json.loads((work / recipe / "metrics.json").read_text())["history"]
        e0, e1 = history[0]["elapsed_s"], history[1]["elapsed_s"]
        r |= {"n": n_rec, "steps": steps, "step_s": e0 / steps, "val_s": e1 - 2 * e0, "setup_s": r["wall_s"] - e1}
        stages[f"train_{recipe}"] = r | {"disk_mb": du(work / recipe)}
    pool = ["--soundscapes", str(root / "train_soundscapes"), "--out", str(work / "pool.csv"), "--no-progress"]
    stages["pool"] = run([*bird, "infer", "--checkpoint", str(work / "effnet_b0_distill"), *pool], log)
    stages["pool"] |= {"n": n_pool}
    stages["infer"] = run([*bird, "infer", "--checkpoint", str(work / "birdnet_sed"), "--soundscapes",
                           str(root / "test_soundscapes"), "--out", str(work / "submission.csv"),
                           "infer.tta_shifts=[0,-2.5,2.5]", "--no-progress", "teacher.infer=birdnet",
                           f"teacher.mapping={mapping}",
                           f"teacher.taxonomy={root / 'taxonomy.csv'}"], log)  # fmt: skip
    stages["infer"] |= {"n": n_test}
    stages["synth_disk_mb"] = {"disk_mb": du(root), "recordings": n_rec, "pool": n_pool, "test": n_test}
    return stages


UNITS = {"prepare": "recordings+pool", "prepare_first15": "recordings+pool", "teacher": "pool", "pool": "pool",
         "infer": "test", "train_birdnet_sed": "recordings", "train_effnet_b0_distill": "recordings"}  # fmt: skip


def full_units(unit: str) -> int:
    return sum(FULL[u] for u in unit.split("+"))


def linear(y, n) -> tuple[float, float]:
    """Least-squares y = fixed + per · n: (fixed, per)."""
    per, fixed = np.polyfit(np.asarray(n, float), np.asarray(y, float), 1)
    return float(fixed), float(per)


def growth(y, n) -> str:
    """The exponent b of y ~ n^b once the fixed start is taken off (1: linear), and the linear fit's R²."""
    y, n = np.asarray(y, float), np.asarray(n, float)
    fixed, per = linear(y, n)
    r2 = 1 - np.sum((y - fixed - per * n) ** 2) / max(np.sum((y - y.mean()) ** 2), 1e-12)
    marginal = y - min(fixed, 0.9 * y.min())
    b = np.polyfit(np.log(n), np.log(marginal), 1)[0]
    return f"b = {b:.2f}, linear R² = {r2:.3f}"


def report(results: dict[float, dict]) -> None:
    scales = sorted(results)
    print("| stage | " + " | ".join(f"S={s:g}: n, wall s, CPU s, peak MB, disk MB" for s in scales) + " |")
    print("|---|" + "---|" * len(scales))
    for stage in UNITS:
        cells = []
        for s in scales:
            r = results[s][stage]
            cells.append(f"{r['n']}, {r['wall_s']:.1f}, {r['cpu_s']:.1f}, {r['rss_mb']:.0f}, {r.get('disk_mb', 0):.0f}")
        print(f"| {stage} | " + " | ".join(cells) + " |")
    print()
    print("| stage | growth exponent b (wall ~ n^b) | per unit (largest S) | S = 1 on this box (2 cores) | "
          "S = 1 on a 4-core Kaggle CPU |")  # fmt: skip
    print("|---|---|---|---|---|")
    for stage, unit in UNITS.items():
        n = np.array([results[s][stage]["n"] for s in scales], float)
        if stage.startswith("train"):  # steps do not grow with the folder; set-up and validation do
            rs = [results[s][stage] for s in scales]
            step = np.median([r["step_s"] for r in rs])
            fixed, per = linear([r["setup_s"] for r in rs], n)
            _, vper = linear([r["val_s"] for r in rs], n)
            full_pass = step * FULL["recordings"] / 32
            print(f"| {stage} | set-up {growth([r['setup_s'] for r in rs], n)}, validation "
                  f"{growth([r['val_s'] for r in rs], n)}; {step:.2f} s/step (batch 32) at every scale | "
                  f"set-up {per * 1000:.0f} ms, validation {vper * 1000:.0f} ms per recording | set-up "
                  f"{(fixed + per * FULL['recordings']) / 60:.0f} min; one pass over the recordings "
                  f"{full_pass / 3600:.1f} h; validating every recording's tail {(vper * FULL['recordings']) / 60:.0f} "
                  f"min | pass {full_pass / 3600 / 2:.1f} h |")  # fmt: skip
            continue
        wall = [results[s][stage]["wall_s"] for s in scales]
        fixed, per = linear(wall, n)
        full = fixed + per * full_units(unit)
        print(f"| {stage} | {growth(wall, n)} | {per:.3f} s per {unit} file (+{fixed:.0f} s start) | "
              f"{full / 3600:.2f} h | {full / 3600 / 2:.2f} h |")  # fmt: skip
    top = results[scales[-1]]
    for name in ("prepare", "prepare_first15"):
        r = top[name]
        print(f"{name}: disk {r['disk_mb'] / r['n']:.2f} MB per file → S = 1: "
              f"{r['disk_mb'] / r['n'] * full_units('recordings+pool') / 1024:.0f} GB")  # fmt: skip
    synth = top["synth_disk_mb"]
    print(
        f"the folder itself: {synth['disk_mb']:.0f} MB at S={scales[-1]:g} → S = 1: "
        f"{synth['disk_mb'] / (synth['recordings'] + synth['pool'] + synth['test']) * sum(FULL.values()) / 1024:.0f} GB"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", type=float, nargs="+", default=[0.002, 0.005, 0.01])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "scale")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for s in args.scales:
        path = args.out / f"results_{s:g}.json"
        if not args.report_only:
            t0 = time.perf_counter()
            path.write_text(json.dumps(scale_stages(s, args.out, args.steps), indent=1))
            print(f"S={s:g}: {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
        results[s] = json.loads(path.read_text())
    report(results)


if __name__ == "__main__":
    main()
