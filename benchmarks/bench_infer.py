"""Inference speed on the CPU: end-to-end real-time factor, pipeline overhead, 7-model projection, runtimes.

Usage: python benchmarks/bench_infer.py [--checkpoint runs/NAME] [--soundscapes DIR] [--shifts 0,-2.5,2.5]

Without --checkpoint, a fresh EfficientNet-B0 SED model of configs/effnet_b0_sed.yaml (25 classes) is used:
speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from birdsed.config.load import load_config
from birdsed.inference.ensemble import load_member
from birdsed.inference.export import export, runtime_runner
from birdsed.inference.infer import InMemoryAudio, read_audio
from birdsed.inference.submit import infer_folder, window_spec, worker_count, write_submission
from birdsed.models import build_model, save_checkpoint

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "birdclef-real-mini" / "test_soundscapes"


def window_batches(files: list[Path], spec, frontend, sr: int) -> list[torch.Tensor]:
    """The log-mel batches the pipeline feeds the model: every window x shift of every file."""
    batches = []
    for path in files:
        audio = read_audio(str(path), sr, 1e9)
        assert isinstance(audio, InMemoryAudio)
        n = int(np.ceil(audio.length / spec.window - 0.1))
        for b0 in range(0, n, spec.batch_size):
            for shift in spec.shifts:
                s = int(shift * sr)
                starts = [
                    w * spec.window + spec.window // 2 + s - spec.context // 2
                    for w in range(b0, min(n, b0 + spec.batch_size))
                ]
                chunk = np.stack([audio.segment(a, a + spec.context) for a in starts])
                with torch.no_grad():
                    batches.append(frontend(torch.from_numpy(chunk)))
    return batches


def time_runner(run, batches) -> float:
    run(batches[0])
    t = time.perf_counter()
    for mel in batches:
        run(mel)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint")
    ap.add_argument("--soundscapes", type=Path, default=REAL)
    ap.add_argument("--shifts", default="0,-2.5,2.5")
    args = ap.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    tmp = Path(tempfile.mkdtemp())
    ckpt = args.checkpoint
    if ckpt is None:
        cfg = load_config("configs/effnet_b0_sed.yaml")
        ckpt = tmp / "b0.pt"
        save_checkpoint(ckpt, build_model(cfg, 25).eval(), cfg, [f"c{i}" for i in range(25)])
    shifts = [float(s) for s in args.shifts.split(",")]
    icfg = load_config(None, [f"infer.tta_shifts={shifts}", "infer.runtime=onnx"]).infer
    files = sorted(args.soundscapes.glob("*.ogg"))
    folder = export(ckpt, tmp / "onnx", "openvino")
    member = load_member(folder, 1.0, "onnx", "cpu")
    sr = member.cfg.audio.sample_rate
    audio_s = sum(read_audio(str(p), sr, 1e9).length for p in files) / sr
    print(f"{len(files)} soundscapes, {audio_s / 60:.1f} min, {member.cfg.model.backbone}, {len(shifts)} shift(s)")

    infer_folder(args.soundscapes, [member], icfg, member.classes, progress=False)  # warm-up
    timings = {}
    for workers in (1, 0):  # one file at a time; then the default, one file per core side by side
        icfg.workers = workers
        t = time.perf_counter()
        result = infer_folder(args.soundscapes, [member], icfg, member.classes, progress=False)
        write_submission(result.submission, tmp / "sub.csv")
        timings[workers] = time.perf_counter() - t
    e2e = timings[0]
    print(f"end-to-end (decode -> CSV), ONNX Runtime, one file at a time: {timings[1]:.2f} s")
    print(
        f"end-to-end (decode -> CSV), ONNX Runtime, {worker_count(icfg, [member], 'cpu', len(files))} files side by "
        f"side (default): {e2e:.2f} s = {audio_s / e2e:.0f}x real time (goal >= 150x)"
    )

    from birdsed.models.frontend import MelFrontend

    spec = window_spec(icfg, sr)
    batches = window_batches(files, spec, MelFrontend.from_config(member.cfg.audio), sr)
    bare = time_runner(runtime_runner(folder, "onnx"), batches)
    print(f"bare ONNX Runtime on the same {sum(len(b) for b in batches)} windows: {bare:.2f} s")
    print(f"pipeline overhead, one file at a time: end-to-end / bare model = {timings[1] / bare:.2f}x")
    print(f"pipeline overhead: end-to-end / bare model = {e2e / bare:.2f}x (goal <= 1.3x)")
    per_min_model = bare / (audio_s / 60)
    per_min_rest = (e2e - bare) / (audio_s / 60)
    projected = 700 * (7 * per_min_model + per_min_rest) / 60
    print(
        f"projected 7 models x {len(shifts)} shifts, 700 one-minute soundscapes, this machine: "
        f"{projected:.1f} min (goal <= 30)"
    )

    model = load_member(ckpt, 1.0, "torch", "cpu")
    t_torch = time_runner(model.runner, batches)
    t_ov = time_runner(runtime_runner(folder, "openvino"), batches)
    print(f"same windows: torch eager {t_torch:.2f} s, ONNX Runtime {bare:.2f} s, OpenVINO {t_ov:.2f} s")
    print(f"ratios vs ONNX Runtime: torch {t_torch / bare:.2f}x, OpenVINO {t_ov / bare:.2f}x")
    print(f"realtime_factor={audio_s / e2e:.0f}x")


if __name__ == "__main__":
    main()
