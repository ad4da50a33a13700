"""Local validation reports: the page. The plots (:mod:`birdsed.reports.plots`) and tables of a
:class:`birdsed.reports.report.Report` laid out by ``templates/report.html.j2`` in one self-contained HTML file that
needs no network to view, and a headless Chromium screenshot of it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup, escape

from birdsed.outputs import atomic_write
from birdsed.ownership import check_file_output, record_output
from birdsed.reports.listen import describe, page_megabytes
from birdsed.reports.plots import plot_calibration, plot_curves, plot_rounds, plot_study, plot_training, plot_window
from birdsed.reports.report import EVALUATIONS, TITLES, Listening, Report, ReportError, StudyView, to_json
from birdsed.study.stats import summary_frame

HEADLINE = [
    ("macro_auc", "macro ROC-AUC (Kaggle metric)"),
    ("padded_cmap", "padded cmAP"),
    ("n_scored_classes", "classes scored"),
    ("n_rows", "rows"),
    ("accuracy", "accuracy"),
    ("precision_micro", "precision (micro)"),
    ("recall_micro", "recall (micro)"),
    ("f1_micro", "F1 (micro)"),
    ("precision_macro", "precision (macro)"),
    ("recall_macro", "recall (macro)"),
    ("f1_macro", "F1 (macro)"),
]


THRESHOLD_FIELDS = {f for f, _ in HEADLINE[4:]}


@dataclass
class Cell:
    """A table cell: its text (escaped by the template; newlines become line breaks) and CSS class."""

    text: str
    cls: str = ""


@dataclass
class Table:
    """A table for the template: header labels, rows of cells; `row_head` shows each row's first cell as a header."""

    head: list[str]
    rows: list[list[Cell]]
    row_head: bool = False
    sortable: bool = False


@dataclass
class Clip:
    """A window to listen to: its picture (spectrogram, frame-level output), caption and audio (data URIs)."""

    alt: str
    image: str
    caption: str
    audio: str


@dataclass
class Section:
    """One ``<h2>`` part of the page: a paragraph, images (alt, data URI), clips, tables and a folded-away table."""

    title: str
    text: str = ""
    muted: bool = False
    images: list[tuple[str, str]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    details: tuple[str, Table] | None = None
    clips: list[Clip] = field(default_factory=list)


def _cell(v: Any, extra: str = "") -> Cell:
    """Numbers right-aligned, text left; `extra` adds a CSS class (``best``)."""
    numeric = isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
    return Cell(_fmt(v), " ".join(x for x in ("n" if numeric or v is None else "", extra) if x))


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float | np.floating):
        return f"{v:.{digits}f}"
    return str(v)


def _listening_section(listening: Listening) -> Section:
    clips = [Clip(f"{w.kind} {w.cls}", plot_window(w), describe(w), w.audio) for w in listening.windows]
    what = (
        "with the SED head's frame-level output for the class (cyan) over the spectrogram"
        if listening.frames
        else ("(no checkpoint for this entry: spectrogram only)")
    )
    return Section(
        f"Listening: {listening.entry}",
        f"The worst classes' top false positives and missed positives on the labelled soundscapes, {what}. "
        f"{len(clips)} windows, {page_megabytes(listening.windows):.1f} MB of audio.",
        clips=clips,
    )


def _study_section(study: StudyView) -> Section:
    s = study.summary
    missing = ", ".join(f"{m['variant']} seed {m['seed']} ({m['state']})" for m in s["missing"]) or "none"
    runs = study.table.drop(columns=["predictions", "predictions_last"], errors="ignore")
    return Section(
        f"Study: {study.name}",
        f"{study.path} · {s['command']} of {s['config']} · baseline {s['baseline']} · {s['soundscapes']} labelled "
        f"soundscapes · runs not finished: {missing}. The verdict reads the interval over seeds and soundscapes "
        "drawn together: helps / hurts when it excludes 0.",
        muted=True,
        images=[("study", plot_study(study))],
        tables=[_frame_table(summary_frame(s).round(4))],
        details=("every run", _frame_table(runs)),
    )


def _headline(report: Report, key: str) -> Table:
    entries = [e for e in report.entries if key in e.evals]
    rows = []
    for name, label in HEADLINE:
        vals = []
        for e in entries:
            sc = e.evals[key].score
            vals.append(getattr(sc, name) if hasattr(sc, name) else sc.thresholds.get(name))
        finite = [v for v in vals if isinstance(v, float) and math.isfinite(v)]
        best = max(finite) if finite and name not in ("n_rows", "n_scored_classes") else None
        if name in THRESHOLD_FIELDS:
            label = f"{label} @ threshold {report.threshold:g}"
        rows.append([Cell(label), *(_cell(v, "best" if v == best and len(finite) > 1 else "") for v in vals)])
    return Table([TITLES[key], *(e.name for e in entries)], rows, row_head=True)


def _per_class(report: Report, key: str) -> Section:
    entries = [e for e in report.entries if key in e.evals]
    focus = entries[-1].evals[key]
    classes = list(focus.classes)
    positives = {c: int(focus.y_true[:, i].sum()) for i, c in enumerate(classes)}

    def auc_of(c: str) -> float:
        v = focus.score.per_class.get(c, {}).get("auc", math.nan)
        return v if math.isfinite(v) else math.inf

    head = ["class", "group", "training files", "positives"]
    head += [x for e in entries for x in (f"AUC {e.name}", f"AP {e.name}")]
    rows = []
    for c in sorted(classes, key=auc_of):  # worst first, classes without positives last
        info = report.classes.loc[c] if c in report.classes.index else None
        files = info["training_files"] if info is not None else math.nan
        cells = [
            c,
            str(info["group"]) if info is not None else "",
            int(files) if np.isfinite(files) else None,
            positives[c],
        ]
        for e in entries:
            pc = e.evals[key].score.per_class.get(c, {})
            cells += [pc.get("auc"), pc.get("ap")]
        rows.append([_cell(x) for x in cells])
    return Section(
        f"Per class on {TITLES[key]}",
        f"Sorted by the AUC of {entries[-1].name}, worst first; click a column to sort.",
        tables=[Table(head, rows, sortable=True)],
    )


def _config_diff(report: Report) -> Section:
    diff = report.config_differences()
    if not diff:
        return Section(
            "Config differences",
            "The entries with a config share every resolved setting (or fewer than two have one).",
        )
    names = list(next(iter(diff.values())).keys())
    rows = [[Cell(k), *(_cell(v.get(n)) for n in names)] for k, v in diff.items()]
    return Section("Config differences", tables=[Table(["setting", *names], rows, row_head=True)])


def _frame_table(df: Any) -> Table:
    return Table([str(c) for c in df.columns], [[_cell(v) for v in row] for row in df.itertuples(index=False)])


STYLE = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1200px;color:#222}
h1{margin-bottom:4px}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}th{background:#f4f4f4}
td.n{text-align:right;font-variant-numeric:tabular-nums}tr>th:first-child{white-space:nowrap}
td.best{font-weight:bold;background:#e8f5e9}.wide{overflow-x:auto}.muted{color:#666;font-size:13px}
table.sortable th{cursor:pointer}img{max-width:100%}
figure.clip{display:inline-block;margin:6px;vertical-align:top;width:420px}figure.clip img{width:100%}
figure.clip figcaption{font-size:12px;color:#444}figure.clip audio{width:100%}
"""
SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function(th){th.addEventListener('click',function(){
var t=th.closest('table'),b=t.tBodies[0],i=Array.prototype.indexOf.call(th.parentNode.children,th),
up=th.dataset.dir!=='up';th.dataset.dir=up?'up':'down';
var v=function(r){var s=r.children[i].textContent,n=parseFloat(s);return isNaN(n)?(s==='–'?Infinity:s):n;};
Array.from(b.rows).sort(function(x,y){var a=v(x),c=v(y);return (a<c?-1:a>c?1:0)*(up?1:-1);})
.forEach(function(r){b.appendChild(r);});});});
document.querySelectorAll('audio').forEach(function(a){var f=function(){a.dataset.duration=a.duration;};
if(a.readyState>0){f();}a.addEventListener('loadedmetadata',f);});
"""


def _nl2br(text: str) -> Markup:
    """Escape `text` and show its newlines as line breaks."""
    return Markup("<br>").join(escape(text).split("\n"))


TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("birdsed.reports", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
)
TEMPLATES.filters["nl2br"] = _nl2br


def sections(report: Report, numbers: dict[str, Any]) -> list[Section]:
    """The page's parts in order, every value computed (the template only lays them out)."""
    entries = Table(
        ["entry", "kind", "path", "best epoch", "notes"],
        [
            [*(_cell(v) for v in (e.name, e.kind, str(e.path), e.best.get("epoch"))), Cell("\n".join(e.notes))]
            for e in report.entries
        ],
    )
    out = [Section("Entries", tables=[entries])] if report.entries else []
    out += [_study_section(st) for st in report.studies]
    keys = [k for k in EVALUATIONS if any(k in e.evals for e in report.entries)]
    if keys:
        out.append(
            Section(
                "Headline",
                "Macro ROC-AUC averages over classes with at least one positive; padded cmAP adds five all-positive "
                "rows. The best value of each row is green.",
                tables=[_headline(report, k) for k in keys],
            )
        )
    for k in keys:
        images = [("ROC and PR curves", plot_curves(report, k)), ("calibration", plot_calibration(report, k, numbers))]
        out.append(Section(f"Curves on {TITLES[k]}", images=images))
    training = plot_training(report)
    if training:
        out.append(Section("Training", images=[("training curves", training)]))
    for pr, img in zip(report.rounds, plot_rounds(report), strict=True):
        out.append(
            Section(f"Pseudo-label rounds: {pr.name}", images=[("rounds", img)], tables=[_frame_table(pr.table)])
        )
    out += [_per_class(report, k) for k in keys]
    if report.listening is not None:
        out.append(_listening_section(report.listening))
    out.append(_config_diff(report))
    return out


def render_html(report: Report, numbers: dict[str, Any]) -> str:
    """The whole page as one string (``templates/report.html.j2``); images are inline PNG data, scripts and
    styles inline."""
    return TEMPLATES.get_template("report.html.j2").render(
        style=Markup(STYLE),
        script=Markup(SORT_JS),
        stamp=time.strftime("%Y-%m-%d %H:%M"),
        threshold=f"{report.threshold:g}",
        solution=str(report.solution or "from each run config"),
        sections=sections(report, numbers),
    )


def page_height(page: str) -> int:
    """A screenshot height in pixels that holds the whole page: its images and table rows, roughly."""
    clips = page.count("<figure class=clip")  # two to a row, ~300 px a row
    return min(30000, 800 + 560 * (page.count("<img") - clips) + 160 * clips + 26 * page.count("<tr"))


def screenshot_html(page: Path, png: Path, width: int = 1280, height: int | None = None) -> Path:
    """Render `page` with headless Chromium into `png` (the page as a person sees it).

    Raises:
        ReportError: no Chromium on PATH, or it failed.
    """
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe is None:
        raise ReportError("no chromium on PATH for --screenshot (Debian/Ubuntu: apt-get install chromium)")
    png.parent.mkdir(parents=True, exist_ok=True)
    height = height or page_height(page.read_text())
    cmd = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={width},{height}",
        f"--screenshot={png.resolve()}", page.resolve().as_uri(),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not png.is_file():
        raise ReportError(f"chromium could not render {page}: {done.stderr.strip()[-500:]}")
    return png


def rendered_dom(page: Path, budget_ms: int = 10000) -> str:
    """The page's DOM after headless Chromium loaded it and ran its scripts (audio metadata included).

    Raises:
        ReportError: no Chromium on PATH, or it failed.
    """
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe is None:
        raise ReportError("no chromium on PATH (Debian/Ubuntu: apt-get install chromium)")
    cmd = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required",
        f"--virtual-time-budget={budget_ms}", "--dump-dom", page.resolve().as_uri(),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        raise ReportError(f"chromium could not load {page}: {done.stderr.strip()[-500:]}")
    return done.stdout


def write_report(report: Report, out: str | Path, screenshot: str | Path | None = None) -> Path:
    """Write the HTML page to `out` and its numbers beside it (``report.html`` → ``report.json``); returns `out`.

    With `screenshot`, headless Chromium also renders the page to that PNG.
    """
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ReportError(f"--out {out}: the page is an .html file (its numbers go beside it as .json)")
    out = check_file_output(out, kind="report")
    beside = check_file_output(out.with_suffix(".json"), kind="report-json")
    shot = check_file_output(screenshot, (out,), kind="screenshot") if screenshot else None
    numbers = to_json(report)
    page = render_html(report, numbers)
    had = beside.exists()
    atomic_write(beside, json.dumps(numbers, indent=1))
    try:
        atomic_write(out, page)
    except BaseException:
        if not had:  # no numbers left behind without their page
            beside.unlink(missing_ok=True)
        raise
    record_output(beside, "report-json")
    record_output(out, "report")
    if shot is not None:  # rendered beside (Chromium wants a .png name), then renamed: a failure leaves what was there
        tmp = shot.with_name(f".{shot.stem}.{os.getpid()}.part.png")
        try:
            screenshot_html(out, tmp)
            os.replace(tmp, shot)
        finally:
            tmp.unlink(missing_ok=True)
        record_output(shot, "screenshot")
    return out
