"""The ``birdsed`` command: parse, load the config, call one core function, print the headline last."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from birdsed.config import Config, ConfigError, load_config

log = logging.getLogger("birdsed")


def _config_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "config_and_overrides",
        nargs="*",
        metavar="[CONFIG] [key=value ...]",
        help="a YAML config (optional) followed by dotted overrides such as data.root=/data/birdclef",
    )
    return parent


def config_from_args(items: Sequence[str]) -> Config:
    """Split ``[CONFIG] [key=value ...]`` and load them."""
    items = list(items)
    path = None
    if items and "=" not in items[0]:
        path = items.pop(0)
    return load_config(path, items)


def cmd_synth(args: argparse.Namespace) -> str:
    from birdsed.synth import make_dataset

    out = make_dataset(
        args.out,
        n_classes=args.classes,
        seed=args.seed,
        files_per_class=args.files_per_class,
        train_soundscapes=args.train_soundscapes,
        test_soundscapes=args.test_soundscapes,
    )
    return f"wrote synthetic BirdCLEF dataset to {out}"


def cmd_prepare(args: argparse.Namespace) -> str:
    from birdsed.prepare import prepare

    cfg = config_from_args(args.config_and_overrides)
    summary = prepare(cfg, include_test=args.include_test, progress=not args.no_progress)
    for line in summary.lines()[1:]:
        print(line)
    return f"{cfg.cache_path}: {summary.lines()[0]}"


def cmd_score(args: argparse.Namespace) -> str:
    from birdsed.metrics import score_files

    score = score_files(args.solution, args.submission, threshold=args.threshold)
    if args.json:
        score.to_json(args.json)
    t = score.thresholds
    print(f"rows={score.n_rows} scored_classes={score.n_scored_classes}")
    print(f"padded_cmap={score.padded_cmap:.4f}")
    print(
        f"at threshold {t['threshold']:g}: accuracy={t['accuracy']:.4f} "
        f"precision_macro={t['precision_macro']:.4f} recall_macro={t['recall_macro']:.4f} f1_macro={t['f1_macro']:.4f} "
        f"f1_micro={t['f1_micro']:.4f}"
    )
    return f"macro_auc={score.macro_auc:.4f}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="birdsed", description="BirdCLEF-style audio → Kaggle submission pipeline")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    cfg_parent = _config_parent()

    p = sub.add_parser("synth", help="write a synthetic BirdCLEF-format dataset")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--classes", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--files-per-class", type=int, default=8)
    p.add_argument("--train-soundscapes", type=int, default=20)
    p.add_argument("--test-soundscapes", type=int, default=10)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("prepare", parents=[cfg_parent], help="decode data.root's audio once into the waveform cache")
    p.add_argument("--include-test", action="store_true", help="also cache test_soundscapes/")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("score", help="check a submission and compute the BirdCLEF metrics")
    p.add_argument("--solution", required=True, type=Path)
    p.add_argument("--submission", required=True, type=Path)
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--json", type=Path, help="write every figure here")
    p.set_defaults(func=cmd_score)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (1 for expected errors, with the message on stderr)."""
    from birdsed.audio import AudioError
    from birdsed.data import DataError
    from birdsed.metrics import SubmissionError

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        headline = args.func(args)
    except (ConfigError, DataError, AudioError, SubmissionError, FileNotFoundError) as err:
        print(f"birdsed {args.command}: error: {err}", file=sys.stderr)
        return 1
    print(headline)
    return 0


def main_exit() -> None:
    """Console-script wrapper around :func:`main`."""
    sys.exit(main())
