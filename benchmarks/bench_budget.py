"""The Kaggle CPU budget of the best entry (issue 37 item 4): BirdNET (the shipped window rule) + the agile model +
1 or 3 BirdNET-backbone students × 3 TTA shifts, on ONNX Runtime and OpenVINO, projected by ``birdsed budget`` to
600 one-minute soundscapes on a 4-core Kaggle CPU (BirdCLEF+ 2026's hidden test, 90-minute limit).

Usage:
    python benchmarks/bench_budget.py --students RUN [RUN ...] --agile AGILE [--runtimes onnx openvino]

The students are BirdNET-backbone run folders (``configs/birdnet_sed.yaml``; e.g. ``bench_soundscapes.py``'s
``with_seed{0,1,2}`` on the 2026 mini set) and AGILE the matching ``birdsed agile`` folder. On the first runtime also
1 student, and BirdNET + agile beside the cheapest student (1 student, no TTA), so that the teacher's TFLite pass
shows.
Each line is ``birdsed budget``'s own: the fastest of 3 repeats of one minute of audio, scaled by cores.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def budget(students: list[Path], agile: Path, runtime: str, shifts: str) -> float:
    cmd = [sys.executable, "-m", "birdsed", "budget", "--soundscapes", "600", "--cores", "4",
           f"infer.runtime={runtime}", f"infer.tta_shifts=[{shifts}]", "teacher.infer=birdnet",
           f"teacher.agile={agile}"]  # fmt: skip
    for s in students:
        cmd += ["--checkpoint", str(s)]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr[-2000:])
    lines = [x for x in out.stdout.splitlines() if x.startswith(("per minute", "projected for"))]
    print(f"{len(students)} student(s), shifts {shifts}, {runtime}: {'; '.join(lines)}", flush=True)
    return float(re.search(r"projected_minutes=([\d.]+)", out.stdout).group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", type=Path, nargs="+", required=True)
    ap.add_argument("--agile", type=Path, required=True)
    ap.add_argument("--runtimes", nargs="+", default=["openvino", "onnx"])
    args = ap.parse_args()
    rows = {}
    for k, runtime in enumerate(args.runtimes):  # the 1-student and teacher-share lines on the first runtime only
        if k == 0:
            rows[runtime, "teacher"] = budget(args.students[:1], args.agile, runtime, "0")
            rows[runtime, 1] = budget(args.students[:1], args.agile, runtime, "0,-2.5,2.5")
        rows[runtime, 3] = budget(args.students[:3], args.agile, runtime, "0,-2.5,2.5")
    for (runtime, what), minutes in rows.items():
        print(f"{runtime:<9} {what!s:<8} {minutes:6.1f} min for 600 one-minute soundscapes on 4 cores")


if __name__ == "__main__":
    main()
