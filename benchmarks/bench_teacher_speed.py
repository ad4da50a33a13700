"""The teacher's raw speed (issue 47's starting point): BirdNET V2.4's TFLite interpreter against its PyTorch port,
the same 3-s chunks, scores and embeddings, on this machine's threads; and whether the port exports to ONNX.

Usage: python benchmarks/bench_teacher_speed.py [--chunks 64] [--repeats 3]

Both runtimes get the same random 48-kHz chunks (independent: no overlap); each is timed `repeats` times after a
warm-up, alternating, and the best time is kept. Printed: chunks per second and "× real time" counted in chunk audio
(a 5-s window under the default rule `overlap:1.5` at a 1-s stride takes five chunks, so a soundscape's real-time
factor is about a third of this), the ratio port / TFLite, and the largest difference of their outputs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from birdsed.models.birdnet_port import load_birdnet
    from birdsed.rules import usable_cores
    from birdsed.teacher.birdnet_tflite import BirdNET

    threads = usable_cores()
    torch.set_num_threads(threads)
    x = np.random.default_rng(0).normal(scale=0.1, size=(args.chunks, 144000)).astype(np.float32)
    port = load_birdnet().eval()
    tflite = BirdNET(threads=threads, batch_size=16, embeddings=True)

    def run_port() -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            emb = port.embed(torch.from_numpy(x))
            return torch.sigmoid(port.classifier(emb)).numpy(), emb.numpy()

    runs = {"tflite": tflite.embed, "torch port": run_port}
    best = {k: np.inf for k in runs}
    outs = {}
    for name, f in runs.items():
        outs[name] = f(x) if name == "tflite" else f()  # warm-up
    for _ in range(args.repeats):
        for name, f in runs.items():
            t0 = time.perf_counter()
            f(x) if name == "tflite" else f()
            best[name] = min(best[name], time.perf_counter() - t0)
    audio = args.chunks * 3.0
    for name, t in best.items():
        rate = f"{args.chunks / t:6.1f} chunks/s = {audio / t:5.0f}x real time of chunk audio"
        print(f"{name:10s} {rate} ({threads} threads)")
    print(f"port / tflite time: {best['torch port'] / best['tflite']:.2f}")
    s_diff = np.abs(outs["tflite"][0] - outs["torch port"][0]).max()
    e_diff = np.abs(outs["tflite"][1] - outs["torch port"][1]).max()
    print(f"max |difference|: scores {s_diff:.2g}, embeddings {e_diff:.2g}")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            quiet = contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())
            with quiet[0], quiet[1]:  # the exporter prints its whole graph when it fails
                torch.onnx.export(port, (torch.from_numpy(x[:2]),), str(Path(tmp) / "port.onnx"),
                                  opset_version=17, dynamo=False)  # fmt: skip
            print("ONNX export of the port: ok")
        except Exception as err:  # what blocks it is the finding
            print(f"ONNX export of the port: fails ({type(err).__name__}: {str(err).splitlines()[0][:160]})")


if __name__ == "__main__":
    main()
