"""The ``birdsed`` command line: the arguments of every subcommand, and the entry point that runs one (what each
does is in :mod:`birdsed.commands`) and prints its headline last."""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from birdsed import commands
from birdsed.config import TEACHER_FOLDERS
from birdsed.errors import BirdsedError
from birdsed.kaggle.image import PLATFORM as KAGGLE_PLATFORM
from birdsed.kaggle.image import PYTHON as KAGGLE_PYTHON


class _Help(argparse.HelpFormatter):
    """Every option's help line ends with its default, where it has one worth saying (not None, False or [])."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "%(default)" in text or not action.option_strings or default in (None, False, [], argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def _config_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "config_and_overrides",
        nargs="*",
        metavar="[CONFIG] [key=value ...]",
        help="a YAML config (optional) followed by dotted overrides such as data.root=/data/birdclef",
    )
    return parent


def _positive(kind: type) -> Callable[[str], float]:
    """An argparse type: a finite number > 0."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _non_negative(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _unit(text: str) -> float:
    """An argparse type: a number in [0, 1] (NaN refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:  # also false for NaN
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _overwrite_or_resume(p: argparse.ArgumentParser, resume_help: str) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--overwrite", action="store_true", help="replace an existing run folder (after the new run is validated)"
    )
    group.add_argument("--resume", action="store_true", help=resume_help)


# Flags that duplicated a config key: still read for one release, as that key, with a one-line notice.
DEPRECATED_FLAGS = {
    "--tta-shifts": "infer.tta_shifts",
    "--runtime": "infer.runtime",
    "--precision": "infer.precision",
    "--model": "teacher.model",
    "--embeddings": "teacher.embeddings",
}


def _old(flag: str) -> str:
    """Where a deprecated flag's value lands: ``--tta-shifts`` → ``old_tta_shifts``."""
    return "old_" + flag[2:].replace("-", "_")


def _deprecated(p: argparse.ArgumentParser, *flags: str) -> None:
    """Hidden flags kept for one release: ``--config YAML`` (now the positional CONFIG) and `flags`."""
    p.add_argument("--config", dest="old_config", help=argparse.SUPPRESS)
    for flag in flags:
        action = "store_true" if flag == "--embeddings" else "store"
        p.add_argument(flag, dest=_old(flag), action=action, help=argparse.SUPPRESS)


def apply_deprecated(args: argparse.Namespace) -> None:
    """Turn the old flags into the positional CONFIG and key=value overrides they stand for, naming each once."""
    items = getattr(args, "config_and_overrides", None)
    if items is None:
        return
    notes = []
    old_config = getattr(args, "old_config", None)
    if old_config:
        if items and "=" not in items[0]:
            raise SystemExit(f"birdsed {args.command}: error: a config given twice ({items[0]} and --config)")
        items.insert(0, old_config)
        notes.append(f"--config {old_config} is now the first argument: birdsed {args.command} {old_config} ...")
    for flag, key in DEPRECATED_FLAGS.items():
        value = getattr(args, _old(flag), None)
        if value in (None, False):
            continue
        value = "true" if value is True else f"[{value}]" if key == "infer.tta_shifts" else value
        items.append(f"{key}={value}")
        notes.append(f"{flag} is now the config key {key}: write {key}={value}")
    for note in notes:
        print(f"note: {note} (the flag goes in the next release)", file=sys.stderr)


def _synth(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    p = sub.add_parser("synth", help="write a synthetic BirdCLEF-format dataset")
    p.add_argument("--out", required=True, type=Path, help="the folder of the synthetic dataset")
    p.add_argument("--classes", type=_positive(int), default=12, help="species (the last one a frog or insect)")
    p.add_argument("--seed", type=int, default=0, help="the random seed: the same seed, the same dataset")
    p.add_argument("--files-per-class", type=_positive(int), default=8, help="focal recordings per class")
    p.add_argument("--train-soundscapes", type=_non_negative, default=20, help="unlabelled one-minute soundscapes")
    p.add_argument("--test-soundscapes", type=_positive(int), default=10, help="labelled one-minute test soundscapes")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    p.add_argument("--like", choices=["birdclef2026"], help="a competition's shape (its classes, long tail, lengths, "
                   "soundscapes) instead of the small demo set; the other size options do not apply")  # fmt: skip
    p.add_argument("--scale", type=float, default=0.01, help="with --like: the fraction of its size (1: all of it)")
    p.set_defaults(func=commands.cmd_synth)


def _prepare(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    help_ = "decode data.root's audio once into the waveform cache"
    p = sub.add_parser("prepare", parents=[parents["config"], parents["progress"]], help=help_)
    p.add_argument("--include-test", action="store_true", help="also cache test_soundscapes/")
    p.set_defaults(func=commands.cmd_prepare)


def _train(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    p = sub.add_parser("train", parents=[parents["config"]], help="train one SED model into a run folder")
    p.add_argument("--out", type=Path, help="run folder (default runs/<name>)")
    _overwrite_or_resume(p, "continue a killed run after its last finished epoch")
    p.set_defaults(func=commands.cmd_train)


def _pseudo(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pseudo", parents=[parents["config"]], help="rounds of pseudo-labelling on train_soundscapes")
    p.add_argument("--out", type=Path, help="run folder (default runs/<name>)")
    _overwrite_or_resume(p, "continue at the first unfinished round, inside it after its last finished epoch")
    p.set_defaults(func=commands.cmd_pseudo)


def _infer(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "infer",
        parents=[parents["config"], parents["ensemble"], parents["progress"]],
        help="predict soundscapes with checkpoints and/or the teacher (teacher.*); write a submission",
    )
    p.add_argument("--soundscapes", required=True, type=Path, help="the folder of soundscapes to predict")
    p.add_argument("--out", required=True, type=Path, help="the submission CSV")
    p.add_argument("--sample-submission", type=Path, help="column order of the submission")
    _deprecated(p, "--tta-shifts", "--runtime", "--precision")
    p.set_defaults(func=commands.cmd_infer)


def _budget(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    help_ = "project the Kaggle wall time of an ensemble from timings on this machine"
    p = sub.add_parser("budget", parents=[parents["config"], parents["ensemble"]], help=help_)
    p.add_argument("--soundscapes", type=_positive(int), default=700, help="how many test soundscapes to project")
    p.add_argument("--minutes", type=_positive(float), default=1.0, help="length of each soundscape")
    p.add_argument("--cores", type=_positive(int), default=4, help="CPU cores of the target (Kaggle: 4)")
    p.add_argument("--limit", type=_positive(float), default=90.0, help="the notebook's time limit in minutes")
    _deprecated(p, "--tta-shifts", "--runtime", "--precision")
    p.set_defaults(func=commands.cmd_budget)


def _export(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    p = sub.add_parser("export", help="export a checkpoint for CPU inference")
    p.add_argument("--checkpoint", required=True, help="a .pt file or run folder")
    p.add_argument("--format", choices=["onnx", "openvino"], default="onnx", help="the runtime's file format")
    p.add_argument("--out", required=True, type=Path, help="the export folder")
    p.set_defaults(func=commands.cmd_export)


def _bundle(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    help_ = "models, wheels, notebook and metadata for an offline Kaggle submission"
    p = sub.add_parser("bundle", parents=[parents["config"], parents["ensemble"]], help=help_)
    p.add_argument("--out", required=True, type=Path, help="the bundle folder (models, wheels, notebook)")
    p.add_argument("--kaggle-user", help="owner of the datasets and notebook (default: $KAGGLE_USERNAME)")
    p.add_argument("--competition", help="the competition's Kaggle slug (default: birdclef-2026 for a folder in its "
                   "layout — labelled training soundscapes or BC2026 names —, else birdclef-2025)")  # fmt: skip
    p.add_argument("--prefix", default="birdsed", help="names PREFIX-models, PREFIX-wheels, PREFIX-inference")
    p.add_argument("--python-version", default=KAGGLE_PYTHON, help="the Kaggle image's Python (wheels are for it)")
    p.add_argument("--platform", default=KAGGLE_PLATFORM, help="pip platform tag of the Kaggle image")
    p.add_argument("--license", default="CC-BY-NC-SA-4.0", help="licence of the models dataset (Kaggle's names)")
    p.add_argument("--find-links", action="append", default=[], help="extra wheel folder or index page for pip")
    p.add_argument("--no-index", action="store_true", help="take wheels from --find-links only (no package index)")
    p.add_argument("--sample-data", type=Path, help="BirdCLEF folder for the dry run (default: the models' data)")
    p.add_argument("--dry-run-files", type=_positive(int), default=2, help="soundscapes the dry run predicts")
    p.add_argument("--no-dry-run", action="store_true", help="skip running the notebook (the bundle is unproven)")
    p.add_argument("--cores", type=_positive(int), default=4, help="CPU cores of the Kaggle notebook")
    p.add_argument("--soundscapes", type=_positive(int), default=700, help="test minutes the budget projects")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    _deprecated(p, "--tta-shifts", "--runtime")
    p.set_defaults(func=commands.cmd_bundle)


def _teacher(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    help_ = "predict folders with an external teacher (BirdNET) as teacher CSVs"
    p = sub.add_parser("teacher", parents=[parents["config"], parents["progress"]], help=help_)
    p.add_argument("--out", required=True, type=Path, help="folder for <folder>.csv files and teacher.json")
    p.add_argument(
        "--folders", default="train_soundscapes,test_soundscapes", help="comma-separated: " + ",".join(TEACHER_FOLDERS)
    )
    _deprecated(p, "--model", "--embeddings")
    p.add_argument("--overwrite", action="store_true", help="replace the folder if birdsed wrote it (and only then)")
    p.set_defaults(func=commands.cmd_teacher)


def _agile(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    help_ = "fit a linear classifier per class on the teacher's embeddings"
    p = sub.add_parser("agile", parents=[parents["config"]], help=help_)
    p.add_argument("--teacher", required=True, type=Path, help="a `birdsed teacher ... teacher.embeddings=true` folder")
    p.add_argument("--out", required=True, type=Path, help="folder for agile.npz, agile.json and <folder>.csv")
    p.add_argument("--overwrite", action="store_true", help="replace the folder if birdsed wrote it (and only then)")
    p.set_defaults(func=commands.cmd_agile)


def _student(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    help_ = "train the soundscape student on the teacher's window table, with pseudo-label rounds over the pool"
    p = sub.add_parser("student", parents=[parents["config"], parents["progress"]], help=help_)
    p.add_argument("--teacher", required=True, type=Path, help="a `birdsed teacher ... teacher.embeddings=true` folder")
    p.add_argument("--out", required=True, type=Path, help="folder for student.pt, labelled_preds.csv, student.json")
    p.add_argument("--overwrite", action="store_true", help="replace the folder if birdsed wrote it (and only then)")
    p.set_defaults(func=commands.cmd_student)


def _choose(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    help_ = "choose the teacher's shares in the entry on the folder's labelled soundscapes, out of fold"
    p = sub.add_parser("choose", parents=[parents["config"]], help=help_)
    p.add_argument("--teacher", required=True, type=Path, help="a `birdsed teacher ... teacher.embeddings=true` folder")
    p.add_argument("--runs", nargs="+", type=Path, help="SED run folders trained with data.soundscape_fold=k")
    p.add_argument(
        "--students", nargs="+", type=Path, help="`birdsed student` folders trained with data.soundscape_fold=k"
    )
    p.add_argument("--out", required=True, type=Path, help="the config with the chosen shares (infer's CONFIG)")
    p.set_defaults(func=commands.cmd_choose)


def _study(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    p = sub.add_parser("study", help="variants × seeds of a recipe as run folders, compared with paired statistics")
    p.add_argument("study", type=Path, help="a study YAML (command, config, variants, seeds, baseline)")
    p.add_argument("--out", type=Path, help="study folder (default runs/studies/<study file name>)")
    p.add_argument("--resume", action="store_true", help="continue: skip finished runs, resume unfinished ones")
    p.add_argument("--jobs", type=_positive(int), default=1, help="runs side by side here, the cores split")
    p.add_argument("--shard", help="i/n: only runs i, i+n, ... (one task of a job array; implies --resume)")
    p.add_argument("--tables", action="store_true", help="only rewrite the tables from the finished runs")
    p.set_defaults(func=commands.cmd_study)


def _score(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    p = sub.add_parser("score", help="check a submission and compute the BirdCLEF metrics")
    p.add_argument("--solution", required=True, type=Path, help="the answer key (test_solution.csv)")
    p.add_argument("--submission", required=True, type=Path, help="the submission CSV to score")
    p.add_argument("--threshold", type=_unit, default=0.5, help="for accuracy, precision, recall and F1")
    p.add_argument("--json", type=Path, help="write every figure here")
    p.set_defaults(func=commands.cmd_score)


def _report(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    p = sub.add_parser("report", help="one self-contained HTML validation report of runs, rounds and submissions")
    p.add_argument("runs", nargs="*", type=Path, help="run, pseudo-label and study folders, in column order")
    p.add_argument("--solution", type=Path, help="labelled soundscapes (test_solution.csv)")
    p.add_argument("--submission", action="append", type=Path, help="a submission CSV to score and compare")
    p.add_argument("--teacher", action="append", type=Path, help="a teacher CSV (birdsed teacher) to score and compare")
    p.add_argument("--threshold", type=_unit, default=0.5, help="threshold of accuracy/precision/recall/F1")
    p.add_argument("--out", required=True, type=Path, help="the HTML file; its numbers go beside it as .json")
    p.add_argument("--screenshot", type=Path, help="also render the page to this PNG with headless Chromium")
    p.add_argument("--listen", type=_non_negative, default=0, metavar="N", help="for the last entry: N top false "
                   "positives and N missed positives of its 3 worst classes, with audio")  # fmt: skip
    p.add_argument("--listen-class", action="append", help="also listen to this class (implies --listen 3)")
    p.add_argument("--mlflow-uri", help="an MLflow tracking store to read --mlflow-run runs from")
    p.add_argument("--mlflow-run", action="append", help="an MLflow run id (a training run, or a pseudo folder's "
                   "run: its rounds); the report is logged to the last one")  # fmt: skip
    p.set_defaults(func=commands.cmd_report)


SUBCOMMANDS = (_synth, _prepare, _train, _pseudo, _infer, _budget, _export, _bundle, _teacher, _agile, _student,
               _choose, _study, _score, _report)  # fmt: skip


def _parents() -> dict[str, argparse.ArgumentParser]:
    """The options several commands share: the positional CONFIG, the ensemble's checkpoints, --no-progress."""
    ensemble = argparse.ArgumentParser(add_help=False)
    ensemble.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        help="a .pt file, run folder or export folder (repeat); "
        "none: the teacher alone (teacher.infer=birdnet with its agile model and soundscape students)",
    )
    progress = argparse.ArgumentParser(add_help=False)
    progress.add_argument("--no-progress", action="store_true", help="no progress bar")
    return {"config": _config_parent(), "ensemble": ensemble, "progress": progress}


def build_parser() -> argparse.ArgumentParser:
    """The ``birdsed`` parser: one small function per subcommand (``SUBCOMMANDS``), shared parents."""
    parser = argparse.ArgumentParser(prog="birdsed", description="BirdCLEF-style audio → Kaggle submission pipeline")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    parents = _parents()
    for add in SUBCOMMANDS:
        add(sub, parents)
    for p in sub.choices.values():  # every option's default in its --help line
        p.formatter_class = _Help
    return parser


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments, with CONFIG and key=value items accepted anywhere among the options (argparse takes one
    run of positionals only), the deprecated flags applied."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if getattr(args, "config_and_overrides", None) is None or any(e.startswith("-") for e in extra):
            parser.parse_args(argv)  # argparse's own message for what it does not know (exits 2)
        args.config_and_overrides += extra
    apply_deprecated(args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status.

    A :class:`~birdsed.errors.BirdsedError` (bad input or output) prints one line, ``error: <file or key>: <what is
    wrong>``, and returns 1; Ctrl-C returns 130, a training run stopped by SIGTERM 143. Anything else is a bug and
    keeps its traceback.
    """
    args = parse(argv)
    if hasattr(signal, "SIGXFSZ") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file-size limit: an OSError naming the file, not a kill
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:  # Lightning's start-up notes (accelerators found, a logging-service tip) are not for users
        logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    try:
        headline = args.func(args)
    except BirdsedError as err:
        if args.verbose:
            raise
        print("error: " + " ".join(str(err).split("\n")), file=sys.stderr)  # one line, whatever the message
        return getattr(err, "exit_code", 1)
    except KeyboardInterrupt:
        print(f"error: birdsed {args.command}: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130
    print(headline)
    return 0


def main_exit() -> None:
    """Console-script wrapper around :func:`main`."""
    sys.exit(main())
