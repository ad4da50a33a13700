"""The ``birdsed`` command: parse, load the config, call one core function, print the headline last."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from birdsed.config import TEACHER_FOLDERS, Config, load_config
from birdsed.errors import BirdsedError, ConfigError
from birdsed.kaggle_image import PLATFORM as KAGGLE_PLATFORM
from birdsed.kaggle_image import PYTHON as KAGGLE_PYTHON
from birdsed.kaggle_image import RUNTIME_NEEDS
from birdsed.outputs import check_dir_output, check_file_output

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
        overwrite=args.overwrite,
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


def cmd_train(args: argparse.Namespace) -> str:
    from birdsed.train import fit

    cfg = config_from_args(args.config_and_overrides)
    summary = fit(cfg, out=args.out, overwrite=args.overwrite, resume=args.resume)
    print(json.dumps(summary, indent=1))
    return f"{summary['run_dir']}: best epoch {summary['best_epoch']} " + " ".join(
        f"{k}={summary[k]:.4f}" for k in ("val_auc", "soundscape_auc") if summary.get(k) is not None
    )


def _infer_config(args: argparse.Namespace) -> Config:
    """The infer config: --config YAML, then key=value overrides, then the dedicated flags."""
    items = list(args.overrides)
    if args.tta_shifts is not None:
        items.append(f"infer.tta_shifts=[{args.tta_shifts}]")
    if args.runtime:
        items.append(f"infer.runtime={args.runtime}")
    if args.precision:
        items.append(f"infer.precision={args.precision}")
    return load_config(args.config, items)


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cmd_infer(args: argparse.Namespace) -> str:
    from birdsed.audio import list_audio
    from birdsed.submit import (
        infer_folder,
        load_ensemble,
        output_columns,
        teacher_source,
        with_teacher,
        write_submission,
    )

    cfg = _infer_config(args)
    inputs = (args.sample_submission, args.config, *args.checkpoint, *list_audio(args.soundscapes))
    check_file_output(args.out, inputs)  # before minutes of compute, not after
    device = _device() if cfg.infer.runtime == "torch" else "cpu"
    if cfg.infer.threads:
        import torch

        torch.set_num_threads(cfg.infer.threads)
    members = load_ensemble(args.checkpoint, cfg.infer, device)
    columns = output_columns(members, args.sample_submission)
    teacher = teacher_source(cfg, columns)  # a bad teacher fails before minutes of compute
    result = infer_folder(args.soundscapes, members, cfg.infer, columns, device, progress=not args.no_progress)
    if teacher is not None:
        result.submission = with_teacher(result.submission, teacher(args.soundscapes), cfg)
    path = write_submission(result.submission, args.out)
    print(
        f"{result.files} file(s), {len(result.submission)} rows, {len(result.fallback_files)} fallback file(s), "
        f"{result.audio_seconds / 60:.1f} min of audio in {result.seconds:.1f} s "
        f"({result.realtime_factor:.0f}x real time)"
    )
    return f"wrote {path}"


def cmd_budget(args: argparse.Namespace) -> str:
    from birdsed.budget import measure
    from birdsed.submit import load_ensemble, teacher_source

    cfg = _infer_config(args)
    if cfg.infer.threads:
        import torch

        torch.set_num_threads(cfg.infer.threads)
    members = load_ensemble(args.checkpoint, cfg.infer, "cpu")
    teacher = teacher_source(cfg, list(members[0].classes)) if cfg.infer.teacher == "birdnet" else None
    b = measure(members, cfg.infer, args.soundscapes, args.minutes, args.cores, args.limit, teacher=teacher)
    shifts = len(cfg.infer.tta_shifts)
    print(
        f"{len(members)} model(s) x {shifts} shift(s){' + BirdNET' if teacher else ''}, runtime "
        f"{cfg.infer.runtime} at {cfg.infer.precision}, "
        f"{b.local_threads} thread(s) here"
    )
    print(f"per minute of audio here: decode {b.decode_s_per_min:.2f} s + models {b.model_s_per_min:.2f} s")
    print(
        f"projected for {args.soundscapes} x {args.minutes:g} min on {args.cores} cores: {b.projected_minutes:.1f} min "
        f"({'fits' if b.fits else 'does NOT fit'} the {args.limit:g}-minute limit)"
    )
    return f"projected_minutes={b.projected_minutes:.1f}"


def cmd_export(args: argparse.Namespace) -> str:
    from birdsed.export import export

    check_dir_output(args.out)
    out = export(args.checkpoint, args.out, args.format)
    return f"exported {args.checkpoint} as {args.format} to {out}"


def _kaggle_user(given: str | None) -> str:
    """--kaggle-user, else $KAGGLE_USERNAME, else the username of ~/.kaggle/kaggle.json (the Kaggle CLI's own)."""
    if given:
        return given
    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]
    token = Path.home() / ".kaggle" / "kaggle.json"
    if token.is_file():
        try:
            return str(json.loads(token.read_text())["username"])
        except (ValueError, KeyError):
            raise ConfigError(f"{token}: no username in it; pass --kaggle-user") from None
    raise ConfigError("--kaggle-user: not given, and neither $KAGGLE_USERNAME nor ~/.kaggle/kaggle.json is set")


def cmd_bundle(args: argparse.Namespace) -> str:
    from birdsed.bundle import Target, make_bundle

    cfg = _infer_config(args)
    target = Target(
        user=_kaggle_user(args.kaggle_user),
        competition=args.competition,
        prefix=args.prefix,
        python=args.python_version,
        platform=args.platform,
        license=args.license,
    )
    result = make_bundle(
        args.checkpoint,
        cfg,
        args.out,
        target,
        sample_data=args.sample_data,
        dry_run=not args.no_dry_run,
        dry_run_files=args.dry_run_files,
        cores=args.cores,
        soundscapes=args.soundscapes,
        find_links=args.find_links,
        no_index=args.no_index,
        overwrite=args.overwrite,
    )
    for w in result.wheels:
        print(f"wheel {w['file']}: {w['reason']}")
    proven = "proven by a dry run" if result.dry_run else "NOT proven (--no-dry-run)"
    return f"wrote {result.out} ({len(result.members)} model(s), {len(result.wheels)} wheel(s)), {proven}"


def cmd_pseudo(args: argparse.Namespace) -> str:
    from birdsed.pseudo import rounds_table, run_pseudo

    cfg = config_from_args(args.config_and_overrides)
    result = run_pseudo(cfg, out=args.out, overwrite=args.overwrite, resume=args.resume)
    print(rounds_table(result.rounds))
    last = result.last
    figures = " ".join(
        f"{k}={last[k]:.4f}" for k in ("val_auc", "soundscape_auc") if last.get(k) is not None and last[k] == last[k]
    )
    return f"{result.root}: round {int(last['round'])} ({last['kind']}) {figures}"


def cmd_teacher(args: argparse.Namespace) -> str:
    from birdsed.teacher import run_teacher

    cfg = config_from_args(args.config_and_overrides)
    cfg.teacher.embeddings = cfg.teacher.embeddings or args.embeddings
    folders = [f.strip() for f in args.folders.split(",") if f.strip()]
    mapping, results = run_teacher(cfg, args.out, folders, progress=not args.no_progress)
    print(mapping.table())
    for name, r in results.items():
        rate = f"{r.audio_seconds / r.seconds:.0f}x real time" if r.seconds else ""
        print(f"{name}: {r.files} file(s), {len(r.table)} windows, {len(r.failed)} unreadable, {rate}")
    return f"teacher: {args.out} ({len(mapping.index)} of {len(mapping.classes)} classes known to {cfg.teacher.model})"


def cmd_agile(args: argparse.Namespace) -> str:
    from birdsed.agile import run_agile

    cfg = config_from_args(args.config_and_overrides)
    model = run_agile(cfg, args.teacher, args.out)
    lacking = model.info["classes_without_model"]
    return (
        f"agile: {args.out} ({int(model.known.sum())} of {len(model.classes)} classes have a model"
        + (f"; none for {', '.join(lacking)}" if lacking else "")
        + ")"
    )


def cmd_study(args: argparse.Namespace) -> str:
    from birdsed.study import load_study, parse_shard, read_study_dir, run_study
    from birdsed.study_stats import summary_lines

    out = args.out or Path("runs") / "studies" / args.study.stem
    if args.tables:
        _, table, summary = read_study_dir(out)
    else:
        shard = parse_shard(args.shard) if args.shard else None
        table = run_study(load_study(args.study), out, args.resume, args.jobs, shard)
        summary = json.loads((out / "summary.json").read_text())
    for line in summary_lines(summary):
        print(line)
    done = int((table["state"] == "finished").sum())
    return f"{out}: {done} of {len(table)} runs finished; study.csv, summary.csv, summary.json"


def cmd_score(args: argparse.Namespace) -> str:
    from birdsed.metrics import score_files

    if args.json:
        check_file_output(args.json, (args.solution, args.submission))
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


def cmd_report(args: argparse.Namespace) -> str:
    import tempfile

    from birdsed import tracking
    from birdsed.report import gather
    from birdsed.report_html import write_report

    check_file_output(args.out, (args.solution, *(args.submission or []), *(args.teacher or [])))
    if args.screenshot:
        check_file_output(args.screenshot, (args.out,))
    if args.mlflow_run and not args.mlflow_uri:
        raise BirdsedError("--mlflow-run needs --mlflow-uri (the tracking store, e.g. sqlite:///mlflow.db)")
    with tempfile.TemporaryDirectory(prefix="birdsed-mlflow-") as tmp:
        named = []  # runs read back from the MLflow store, each as a local folder of its logged files
        for run_id in args.mlflow_run or []:
            named += tracking.download_run(args.mlflow_uri, run_id, Path(tmp) / run_id)[1]
        report = gather(
            args.runs,
            args.submission or [],
            args.solution,
            args.threshold,
            args.teacher or [],
            named,
            args.listen,
            args.listen_class or [],
        )
        out = write_report(report, args.out, args.screenshot)
    print(f"numbers: {out.with_suffix('.json')}")
    if args.screenshot:
        print(f"screenshot: {args.screenshot}")
    if args.mlflow_run:  # the report goes back to the store, beside the last run it reads
        files = [out, out.with_suffix(".json"), *([args.screenshot] if args.screenshot else [])]
        tracking.log_report(args.mlflow_uri, args.mlflow_run[-1], files)
        print(f"logged to MLflow run {args.mlflow_run[-1]} under report/")
    figure = ""
    if report.entries and report.entries[-1].evals:
        last = report.entries[-1]
        key = "soundscape" if "soundscape" in last.evals else "validation"
        figure = f" ({last.name}: {key} macro_auc={last.evals[key].score.macro_auc:.4f})"
    elif report.studies:
        st = report.studies[-1]
        figure = f" (study {st.name}: {sum(v['finished'] for v in st.summary['variants'])} runs)"
    return f"report: {out}{figure}"


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
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("prepare", parents=[cfg_parent], help="decode data.root's audio once into the waveform cache")
    p.add_argument("--include-test", action="store_true", help="also cache test_soundscapes/")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", parents=[cfg_parent], help="train one SED model into a run folder")
    p.add_argument("--out", type=Path, help="run folder (default runs/<name>)")
    _overwrite_or_resume(p, "continue a killed run after its last finished epoch")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("pseudo", parents=[cfg_parent], help="rounds of pseudo-labelling on train_soundscapes")
    p.add_argument("--out", type=Path, help="run folder (default runs/<name>)")
    _overwrite_or_resume(p, "continue at the first unfinished round, inside it after its last finished epoch")
    p.set_defaults(func=cmd_pseudo)

    p = sub.add_parser("infer", help="predict soundscapes with one or more checkpoints; write a submission")
    p.add_argument("--checkpoint", action="append", required=True, help="a .pt file, run folder or export folder")
    p.add_argument("--soundscapes", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--sample-submission", type=Path, help="column order of the submission")
    p.add_argument("--tta-shifts", help="comma-separated offsets in seconds, e.g. 0,-2.5,2.5")
    p.add_argument("--runtime", choices=["torch", "onnx", "openvino"])
    p.add_argument("--precision", choices=["f32", "bf16"], help="model precision (default f32 on every machine)")
    p.add_argument("--config", help="a YAML config whose infer section is used")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. infer.clip_weight=0.75")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser("budget", help="project the Kaggle wall time of an ensemble from timings on this machine")
    p.add_argument("--checkpoint", action="append", required=True)
    p.add_argument("--soundscapes", type=_positive(int), default=700)
    p.add_argument("--minutes", type=_positive(float), default=1.0, help="length of each soundscape")
    p.add_argument("--cores", type=_positive(int), default=4, help="CPU cores of the target (Kaggle: 4)")
    p.add_argument("--limit", type=_positive(float), default=90.0, help="the notebook's time limit in minutes")
    p.add_argument("--tta-shifts")
    p.add_argument("--runtime", choices=["torch", "onnx", "openvino"])
    p.add_argument("--precision", choices=["f32", "bf16"])
    p.add_argument("--config")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=cmd_budget)

    p = sub.add_parser("export", help="export a checkpoint for CPU inference")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--format", choices=["onnx", "openvino"], default="onnx")
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bundle", help="models, wheels, notebook and metadata for an offline Kaggle submission")
    p.add_argument("--checkpoint", action="append", required=True, help="a .pt file or run folder (repeat)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--runtime", choices=list(RUNTIME_NEEDS), default="onnx")
    p.add_argument("--tta-shifts", help="comma-separated offsets in seconds, e.g. 0,-2.5,2.5")
    p.add_argument("--config", help="a YAML config whose infer and teacher sections are bundled")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. infer.weights=[2,1]")
    p.add_argument("--kaggle-user", help="owner of the datasets and notebook (default: $KAGGLE_USERNAME)")
    p.add_argument("--competition", default="birdclef-2025", help="the competition's Kaggle slug")
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
    p.set_defaults(func=cmd_bundle, precision=None)

    p = sub.add_parser(
        "teacher", parents=[cfg_parent], help="predict folders with an external teacher (BirdNET) as teacher CSVs"
    )
    p.add_argument("--out", required=True, type=Path, help="folder for <folder>.csv files and teacher.json")
    p.add_argument("--model", choices=["birdnet"], default="birdnet")
    p.add_argument(
        "--folders", default="train_soundscapes,test_soundscapes", help="comma-separated: " + ",".join(TEACHER_FOLDERS)
    )
    p.add_argument(
        "--embeddings", action="store_true", help="also write BirdNET's 1,024-d window embeddings (for birdsed agile)"
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_teacher)

    p = sub.add_parser(
        "agile", parents=[cfg_parent], help="fit a linear classifier per class on the teacher's embeddings"
    )
    p.add_argument("--teacher", required=True, type=Path, help="a `birdsed teacher --embeddings` folder")
    p.add_argument("--out", required=True, type=Path, help="folder for agile.npz, agile.json and <folder>.csv")
    p.set_defaults(func=cmd_agile)

    p = sub.add_parser("study", help="variants × seeds of a recipe as run folders, compared with paired statistics")
    p.add_argument("study", type=Path, help="a study YAML (command, config, variants, seeds, baseline)")
    p.add_argument("--out", type=Path, help="study folder (default runs/studies/<study file name>)")
    p.add_argument("--resume", action="store_true", help="continue: skip finished runs, resume unfinished ones")
    p.add_argument("--jobs", type=_positive(int), default=1, help="runs side by side here, the cores split")
    p.add_argument("--shard", help="i/n: only runs i, i+n, ... (one task of a job array; implies --resume)")
    p.add_argument("--tables", action="store_true", help="only rewrite the tables from the finished runs")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("score", help="check a submission and compute the BirdCLEF metrics")
    p.add_argument("--solution", required=True, type=Path)
    p.add_argument("--submission", required=True, type=Path)
    p.add_argument("--threshold", type=_unit, default=0.5)
    p.add_argument("--json", type=Path, help="write every figure here")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("report", help="one self-contained HTML validation report of runs, rounds and submissions")
    p.add_argument("runs", nargs="*", type=Path, help="run, pseudo-label and study folders, in column order")
    p.add_argument("--solution", type=Path, help="labelled soundscapes (test_solution.csv)")
    p.add_argument("--submission", action="append", type=Path, help="a submission CSV to score and compare")
    p.add_argument("--teacher", action="append", type=Path, help="a teacher CSV (birdsed teacher) to score and compare")
    p.add_argument("--threshold", type=_unit, default=0.5, help="threshold of accuracy/precision/recall/F1")
    p.add_argument("--out", required=True, type=Path, help="the HTML file; its numbers go beside it as .json")
    p.add_argument("--screenshot", type=Path, help="also render the page to this PNG with headless Chromium")
    p.add_argument(
        "--listen",
        type=int,
        default=0,
        metavar="N",
        help="for the last entry: N top false positives and N missed positives of its 3 worst classes, with audio",
    )
    p.add_argument("--listen-class", action="append", help="also listen to this class (implies --listen 3)")
    p.add_argument("--mlflow-uri", help="an MLflow tracking store to read --mlflow-run runs from")
    p.add_argument(
        "--mlflow-run",
        action="append",
        help="an MLflow run id (a training run, or a pseudo folder's run: its rounds); the report is logged to the "
        "last one",
    )
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status.

    A :class:`~birdsed.errors.BirdsedError` (bad input or output) prints one line, ``error: <file or key>: <what is
    wrong>``, and returns 1; Ctrl-C returns 130. Anything else is a bug and keeps its traceback.
    """
    args = build_parser().parse_args(argv)
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
        return 1
    except KeyboardInterrupt:
        print(f"error: birdsed {args.command}: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130
    print(headline)
    return 0


def main_exit() -> None:
    """Console-script wrapper around :func:`main`."""
    sys.exit(main())
