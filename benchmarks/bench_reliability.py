"""Reliability figures: peak memory of ``birdsed infer`` on a 2-hour soundscape, and f32 vs bf16 inference.

Usage: python benchmarks/bench_reliability.py [--checkpoint RUN] [--soundscapes DIR --solution CSV] [--hours 2]

1. Peak resident memory of a whole ``birdsed infer`` process (ONNX Runtime, 3 TTA shifts) on one 1-minute file and
   on one file of `--hours` hours: the long file is streamed, so its peak must stay close to the short one's.
2. Inference precision: speed and macro AUC of the same checkpoint at f32 and bf16 on torch and OpenVINO, with the
   precision OpenVINO reports it used (on a CPU without bf16 units its bf16 hint falls back to f32).

Without --checkpoint a fresh EfficientNet-B0 SED model is used (memory and speed do not depend on the weights; the
AUC figures then mean nothing and are not printed).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from birdsed.config.load import load_config
from birdsed.models import build_model, save_checkpoint

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "birdclef-real-mini"


def write_long(path: Path, seconds: float, sr: int = 32000) -> Path:
    """A long OGG of noise with chirps, written in 10-s chunks (libsndfile can crash writing it in one call)."""
    rng = np.random.default_rng(0)
    t = np.arange(sr * 10) / sr
    with sf.SoundFile(str(path), "w", sr, 1, format="OGG") as f:
        for i in range(int(seconds // 10)):
            chirp = 0.3 * np.sin(2 * np.pi * (2000 + 500 * (i % 7)) * t) * (t % 2 < 0.3)
            f.write((0.02 * rng.standard_normal(len(t)) + chirp).astype(np.float32))
    return path


def peak_rss_mb(args: list[str]) -> tuple[float, float]:
    """(peak resident MB, wall seconds) of ``python -m birdsed ARGS`` in its own process."""
    code = (
        "import resource, sys, runpy; sys.argv = ['birdsed', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('birdsed', run_name='__main__')\n"
        "finally:\n    print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    )
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    peak = [line for line in done.stderr.splitlines() if line.startswith("PEAK_KB")][-1]
    return int(peak.split()[1]) / 1024, wall


def memory(checkpoint: Path, tmp: Path, hours: float) -> None:
    short, long = tmp / "short", tmp / "long"
    short.mkdir()
    long.mkdir()
    write_long(short / "one_minute.ogg", 60)
    t0 = time.perf_counter()
    write_long(long / "long.ogg", hours * 3600)
    print(f"wrote a {hours:g}-hour OGG in {time.perf_counter() - t0:.0f} s")
    base = [
        "infer",
        "--checkpoint",
        str(checkpoint),
        "infer.runtime=onnx",
        "infer.tta_shifts=[0,-2.5,2.5]",
        "--no-progress",
    ]
    for name, folder in (("1 minute", short), (f"{hours:g} hours", long)):
        mb, wall = peak_rss_mb([*base, "--soundscapes", str(folder), "--out", str(tmp / f"{folder.name}.csv")])
        audio = sum(sf.info(str(p)).duration for p in folder.iterdir())
        print(f"infer on {name}: peak RSS {mb:.0f} MB, {wall:.1f} s wall ({audio / wall:.0f}x real time incl. start)")


def precision(checkpoint: Path, soundscapes: Path, solution: Path | None) -> None:
    import pandas as pd

    from birdsed.config import InferConfig
    from birdsed.inference.export import export_cached, openvino_model
    from birdsed.inference.submit import infer_folder, load_ensemble
    from birdsed.scoring.metrics import macro_auc

    for runtime in ("torch", "openvino"):
        rows = {}
        for prec in ("f32", "bf16"):
            icfg = InferConfig(runtime=runtime, precision=prec, tta_shifts=[0.0], workers=1)
            members = load_ensemble([checkpoint], icfg, "cpu")
            columns = list(members[0].classes)
            infer_folder(soundscapes, members, icfg, columns, progress=False, files=None)  # warm-up
            t0 = time.perf_counter()
            result = infer_folder(soundscapes, members, icfg, columns, progress=False)
            seconds = time.perf_counter() - t0
            used = prec
            if runtime == "openvino":
                compiled = openvino_model(export_cached(checkpoint, "openvino"), precision=prec)
                used = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # str(): "<Type: 'bfloat16'>"
            rows[prec] = (result.submission, seconds, used)
        (sub32, s32, _), (sub16, s16, used16) = rows["f32"], rows["bf16"]
        diff = np.abs(sub32[columns].to_numpy() - sub16[columns].to_numpy()).max()
        line = f"{runtime}: f32 {s32:.1f} s, bf16 {s16:.1f} s (bf16/f32 time {s16 / s32:.2f}x; bf16 ran as {used16}); "
        line += f"max |p_bf16 - p_f32| = {diff:.4f}"
        if solution is not None:
            sol = pd.read_csv(solution, dtype={"row_id": str}).set_index("row_id")
            auc = {
                k: macro_auc(sol.to_numpy(float), s.set_index("row_id").loc[sol.index][sol.columns].to_numpy(float))
                for k, (s, _, _) in rows.items()
            }
            line += f"; macro AUC f32 {auc['f32']:.4f}, bf16 {auc['bf16']:.4f}"
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", type=Path, help="a trained run (its AUC is then reported)")
    ap.add_argument("--soundscapes", type=Path, default=SHARED / "test_soundscapes")
    ap.add_argument("--solution", type=Path, default=SHARED / "test_solution.csv")
    ap.add_argument("--hours", type=float, default=2.0)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = args.checkpoint
        trained = checkpoint is not None
        if checkpoint is None:
            cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "effnet_b0_sed.yaml")
            checkpoint = tmp / "fresh.pt"
            save_checkpoint(checkpoint, build_model(cfg, 25).eval(), cfg, [f"c{i}" for i in range(25)])
        memory(checkpoint, tmp, args.hours)
        if args.soundscapes.is_dir():
            precision(checkpoint, args.soundscapes, args.solution if trained and args.solution.is_file() else None)


if __name__ == "__main__":
    main()
