"""What each ``birdsed`` command does: load its config, check its outputs, call one core function, return the
headline (``birdsed.cli`` parses the arguments and prints it)."""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from birdsed.config import Config
from birdsed.config.load import load_config
from birdsed.errors import BirdsedError, ConfigError
from birdsed.ownership import check_file_output

log = logging.getLogger("birdsed")


def split_config(items: Sequence[str]) -> tuple[str | None, list[str]]:
    """``[CONFIG] [key=value ...]`` as (the config file or None, the overrides)."""
    items = list(items)
    return (items.pop(0) if items and "=" not in items[0] else None), items


def config_from_args(items: Sequence[str], defaults: Sequence[str] = ()) -> Config:
    """Load ``[CONFIG] [key=value ...]``; `defaults` (key=value) are the command's own, used where neither the
    config file nor an override sets that key."""
    path, overrides = split_config(items)
    given = {o.split("=", 1)[0] for o in overrides}
    unset = [d for d in defaults if d.split("=", 1)[0] not in given and not _in_file(path, d.split("=", 1)[0])]
    return load_config(path, [*unset, *overrides])


def _in_file(path: str | None, key: str) -> bool:
    """Whether the YAML config at `path` sets the dotted `key` (False where it cannot be read: load_config says why)."""
    from birdsed.config.text import parse_yaml

    try:
        node: object = parse_yaml(Path(path).read_text(encoding="utf-8")) if path else None
    except (OSError, ValueError):
        return False
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def cmd_synth(args: argparse.Namespace) -> str:
    from birdsed.data.synth import make_dataset

    if args.like:
        from birdsed.data.synth_like import make_like

        out = make_like(args.out, args.like, args.scale, args.seed, overwrite=args.overwrite)
        return f"wrote a synthetic folder shaped like {args.like} at scale {args.scale:g} to {out}"
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
    from birdsed.data.prepare import prepare

    cfg = config_from_args(args.config_and_overrides)
    summary = prepare(cfg, include_test=args.include_test, progress=not args.no_progress)
    for line in summary.lines()[1:]:
        print(line)
    return f"{cfg.cache_path}: {summary.lines()[0]}"


def cmd_train(args: argparse.Namespace) -> str:
    from birdsed.training.train import fit

    cfg = config_from_args(args.config_and_overrides)
    summary = fit(cfg, out=args.out, overwrite=args.overwrite, resume=args.resume)
    print(json.dumps(summary, indent=1))
    return f"{summary['run_dir']}: best epoch {summary['best_epoch']} " + " ".join(
        f"{k}={summary[k]:.4f}" for k in ("val_auc", "soundscape_auc") if summary.get(k) is not None
    )


def cmd_infer(args: argparse.Namespace) -> str:
    from birdsed.data.audio import list_audio
    from birdsed.inference.predict import predict
    from birdsed.inference.submit import write_submission

    cfg = config_from_args(args.config_and_overrides)
    config = split_config(args.config_and_overrides)[0]
    inputs = (args.sample_submission, config, *args.checkpoint, *cfg.teacher.student, *list_audio(args.soundscapes))
    check_file_output(args.out, inputs, kind="submission")  # before minutes of compute, not after
    pred = predict(cfg, args.checkpoint, args.soundscapes, args.sample_submission, progress=not args.no_progress)
    path = write_submission(pred.submission, args.out, args.checkpoint)
    r = pred.result
    print(
        f"{r.files} file(s), {len(pred.submission)} rows, {len(r.fallback_files)} fallback file(s), "
        f"{r.audio_seconds / 60:.1f} min of audio in {r.seconds:.1f} s ({r.realtime_factor:.0f}x real time)"
    )
    print(pred.describe(cfg))
    return f"wrote {path}"


def cmd_budget(args: argparse.Namespace) -> str:
    from birdsed.inference.budget import measure
    from birdsed.inference.submit import load_ensemble
    from birdsed.teacher.source import teacher_source

    cfg = config_from_args(args.config_and_overrides)
    if cfg.infer.threads:
        import torch

        torch.set_num_threads(cfg.infer.threads)
    if not args.checkpoint and cfg.teacher.infer != "birdnet":
        raise ConfigError("budget: give --checkpoint, or teacher.infer=birdnet (the teacher alone)")
    members = load_ensemble(args.checkpoint, cfg.infer, "cpu") if args.checkpoint else []
    roots = [m.cfg.data.root for m in members]
    if members:
        columns = list(members[0].classes)
    else:
        from birdsed.data.folder import read_taxonomy

        columns = read_taxonomy(Path(cfg.data.root) / "taxonomy.csv")["primary_label"].astype(str).tolist()
    teacher = teacher_source(cfg, columns, roots) if cfg.teacher.infer == "birdnet" else None
    b = measure(members, cfg.infer, args.soundscapes, args.minutes, args.cores, args.limit, teacher=teacher)
    shifts = len(cfg.infer.tta_shifts)
    print(
        f"{len(members)} model(s) x {shifts} shift(s){' + BirdNET' if teacher else ''}"
        f"{f' + {len(cfg.teacher.student)} soundscape student run(s)' if cfg.teacher.student else ''}, runtime "
        f"{cfg.infer.runtime} at {cfg.infer.precision}, "
        f"{b.local_threads} thread(s) here"
    )
    print(f"per minute of audio here: decode {b.decode_s_per_min:.2f} s + models {b.model_s_per_min:.2f} s")
    lo, hi = b.projected_range
    print(
        f"projected for {args.soundscapes} x {args.minutes:g} min on {args.cores} cores: {b.projected_minutes:.1f} min "
        f"(repeats {lo:.1f}–{hi:.1f}; {'fits' if b.fits else 'does NOT fit'} the {args.limit:g}-minute limit)"
    )
    if b.busy:
        log.warning(
            "the machine was busy while measuring (load average %.1f on %d thread(s)): the projection is pessimistic; "
            "measure again on an idle machine",
            b.load, b.local_threads,
        )  # fmt: skip
    return f"projected_minutes={b.projected_minutes:.1f}"


def cmd_export(args: argparse.Namespace) -> str:
    from birdsed.inference.export import export

    out = export(args.checkpoint, args.out, args.format)  # checks --out before any work
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


def competition_of(root: Path) -> str:
    """The Kaggle slug a folder's layout says: ``birdclef-2026`` where it has labelled training soundscapes or
    BirdCLEF+ 2026's soundscape names, else ``birdclef-2025``."""
    from birdsed.data.audio import list_audio
    from birdsed.data.folder import LABELS_FILE

    names = [p.name for d in ("train_soundscapes", "test_soundscapes") for p in list_audio(root / d)[:50]]
    modern = (root / LABELS_FILE).is_file() or any(n.startswith("BC2026_") for n in names)
    return "birdclef-2026" if modern else "birdclef-2025"


def cmd_bundle(args: argparse.Namespace) -> str:
    from birdsed.kaggle.bundle import Target, make_bundle

    cfg = config_from_args(args.config_and_overrides, defaults=["infer.runtime=onnx"])  # Kaggle's CPU
    target = Target(
        user=_kaggle_user(args.kaggle_user),
        competition=args.competition or competition_of(Path(cfg.data.root)),
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
    from birdsed.pseudo.rounds import rounds_table, run_pseudo

    cfg = config_from_args(args.config_and_overrides)
    result = run_pseudo(cfg, out=args.out, overwrite=args.overwrite, resume=args.resume)
    print(rounds_table(result.rounds))
    last = result.last
    figures = " ".join(
        f"{k}={last[k]:.4f}" for k in ("val_auc", "soundscape_auc") if last.get(k) is not None and last[k] == last[k]
    )
    return f"{result.root}: round {int(last['round'])} ({last['kind']}) {figures}"


def cmd_teacher(args: argparse.Namespace) -> str:
    from birdsed.teacher.birdnet_tflite import run_teacher

    cfg = config_from_args(args.config_and_overrides)
    folders = [f.strip() for f in args.folders.split(",") if f.strip()]
    mapping, results = run_teacher(cfg, args.out, folders, progress=not args.no_progress, overwrite=args.overwrite)
    print(mapping.table())
    for name, r in results.items():
        rate = f"{r.audio_seconds / r.seconds:.0f}x real time" if r.seconds else ""
        print(f"{name}: {r.files} file(s), {len(r.table)} windows, {len(r.failed)} unreadable, {rate}")
    known = len(mapping.index) + len(mapping.proxies)
    return f"teacher: {args.out} ({known} of {len(mapping.classes)} classes known to {cfg.teacher.model})"


def cmd_agile(args: argparse.Namespace) -> str:
    from birdsed.teacher.agile import run_agile

    cfg = config_from_args(args.config_and_overrides)
    model = run_agile(cfg, args.teacher, args.out, overwrite=args.overwrite)
    lacking = model.info["classes_without_model"]
    return (
        f"agile: {args.out} ({int(model.known.sum())} of {len(model.classes)} classes have a model"
        + (f"; none for {', '.join(lacking)}" if lacking else "")
        + ")"
    )


def cmd_student(args: argparse.Namespace) -> str:
    from birdsed.pseudo.student import run_student

    cfg = config_from_args(args.config_and_overrides)
    info = run_student(cfg, args.teacher, args.out, progress=not args.no_progress, overwrite=args.overwrite)
    held = f"; held-out labelled windows {info['labelled_auc']:.4f}" if "labelled_auc" in info else ""
    seconds = sum(map(sum, info["round_seconds"]))
    return f"student: {args.out} ({info['seeds']} student(s), fold {info['fold']}, {seconds:.0f} s{held})"


def cmd_choose(args: argparse.Namespace) -> str:
    from birdsed.study.choose import run_choose

    cfg = config_from_args(args.config_and_overrides)
    c = run_choose(cfg, args.teacher, args.runs or [], args.out, args.students or [])
    return (
        f"choose: {args.out}: {c.settings()}; out of fold on {c.windows} labelled windows {c.oof_auc:.4f} "
        f"(BirdNET + agile {c.baseline_auc:.4f}, the students alone {c.student_auc:.4f})"
    )


def cmd_study(args: argparse.Namespace) -> str:
    from birdsed.study.runner import read_study_dir, run_study
    from birdsed.study.spec import load_study, parse_shard
    from birdsed.study.stats import summary_lines

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
    from birdsed.scoring.metrics import score_files

    if args.json:
        check_file_output(args.json, (args.solution, args.submission), kind="score")
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

    from birdsed.reports.html import write_report
    from birdsed.reports.report import gather
    from birdsed.training import tracking

    inputs = (args.solution, *(args.submission or []), *(args.teacher or []))
    if Path(args.out).suffix.lower() not in (".html", ".htm"):
        raise BirdsedError(f"--out {args.out}: the page is an .html file (its numbers go beside it as .json)")
    check_file_output(args.out, inputs, kind="report")
    check_file_output(Path(args.out).with_suffix(".json"), inputs, kind="report-json")  # written beside the page
    if args.screenshot:
        check_file_output(args.screenshot, (args.out, *inputs), kind="screenshot")
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
