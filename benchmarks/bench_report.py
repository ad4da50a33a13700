"""Validation report: build time, page size, and a headless-Chromium screenshot as the run's artefact.

Usage: python benchmarks/bench_report.py [RUN_DIR ...] [--solution CSV] [--submission CSV ...]

Without run folders it reports ``runs/demo`` (``make demo``) with ``submissions/demo.csv``. Writes
``benchmarks/out/report.html``, its ``report.json`` and, when ``chromium`` is on the PATH, ``report.png``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from pathlib import Path

from birdsed.reports.html import write_report
from birdsed.reports.report import gather

OUT = Path(__file__).resolve().parent / "out"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--solution", type=Path)
    ap.add_argument("--submission", action="append", type=Path, default=[])
    args = ap.parse_args()
    if not args.runs:
        if not Path("runs/demo/rounds.csv").is_file():
            raise SystemExit("runs/demo not found: run `make demo` first or give run folders")
        args.runs = [Path("runs/demo")]
        args.solution = args.solution or Path("data/demo/test_solution.csv")
        if not args.submission and Path("submissions/demo.csv").is_file():
            args.submission = [Path("submissions/demo.csv")]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores")
    t = time.perf_counter()
    report = gather(args.runs, args.submission, args.solution)
    t_gather = time.perf_counter() - t
    page = OUT / "report.html"
    t = time.perf_counter()
    write_report(report, page)
    t_render = time.perf_counter() - t
    n = f"{len(report.entries)} entries, {len(report.classes)} classes"
    print(f"{n}: gather {t_gather:.1f} s, render {t_render:.1f} s")
    print(f"page {page.stat().st_size / 1e6:.2f} MB, numbers {page.with_suffix('.json').stat().st_size / 1e3:.0f} kB")
    if shutil.which("chromium"):
        from birdsed.reports.html import screenshot_html

        t = time.perf_counter()
        png = screenshot_html(page, OUT / "report.png")
        print(f"screenshot {png} ({time.perf_counter() - t:.1f} s)")
    else:
        print("no chromium on PATH: no screenshot (apt-get install chromium)")
    print(f"report={page}")


if __name__ == "__main__":
    main()
