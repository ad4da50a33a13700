"""Local validation reports: the plots (matplotlib), each returned as PNG data for the page
(:mod:`birdsed.reports.html`).
"""

from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve

from birdsed.reports.listen import Window
from birdsed.reports.report import TITLES, Evaluation, Report, StudyView

GRID = np.linspace(0, 1, 201)


def _png(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _class_curves(ev: Evaluation) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per scored class: (fpr, tpr, recall, precision)."""
    out = {}
    for c in np.flatnonzero(np.isfinite([ev.score.per_class[k]["auc"] for k in ev.classes])):
        fpr, tpr, _ = roc_curve(ev.y_true[:, c], ev.y_score[:, c])
        prec, rec, _ = precision_recall_curve(ev.y_true[:, c], ev.y_score[:, c])
        out[int(c)] = (fpr, tpr, rec, prec)
    return out


def macro_curves(ev: Evaluation, curves: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Macro-average ROC (TPR on a common FPR grid) and PR (interpolated precision on a recall grid) over the
    scored classes (`curves`: :func:`_class_curves` of `ev`, when already computed); two arrays of shape
    (len(GRID),)."""
    curves = _class_curves(ev) if curves is None else curves
    if not curves:
        return np.full_like(GRID, np.nan), np.full_like(GRID, np.nan)
    tpr = np.mean([np.interp(GRID, fpr, t) for fpr, t, _, _ in curves.values()], axis=0)
    prec = np.mean([interpolated_precision(r, p) for _, _, r, p in curves.values()], axis=0)
    return tpr, prec


def interpolated_precision(recall: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """The best precision reached at recall ≥ g, for each g of GRID; shape (len(GRID),)."""
    levels, inv = np.unique(recall, return_inverse=True)  # ascending
    best = np.zeros(len(levels))
    np.maximum.at(best, inv, precision)
    at_or_above = np.maximum.accumulate(best[::-1])[::-1]
    idx = np.searchsorted(levels, GRID, side="left")
    return np.where(idx < len(levels), at_or_above[np.minimum(idx, len(levels) - 1)], 0.0)


def plot_curves(report: Report, key: str) -> str:
    """ROC and PR: the focus entry's macro curve with its three worst and three best classes, and every entry's
    macro curve side by side."""
    entries = [e for e in report.entries if key in e.evals]
    focus = entries[-1]
    ev = focus.evals[key]
    curves = _class_curves(ev)
    aucs = {c: ev.score.per_class[ev.classes[c]]["auc"] for c in curves}
    ranked = sorted(aucs, key=aucs.get)
    picked = ranked[:3] + [c for c in ranked[-3:] if c not in ranked[:3]]
    fig, ax = plt.subplots(2, 2, figsize=(11, 9), layout="constrained")
    tpr, prec = macro_curves(ev, curves)
    ax[0, 0].plot(GRID, tpr, "k", lw=2.5, label=f"macro (AUC {ev.score.macro_auc:.3f})")
    ax[1, 0].plot(GRID, prec, "k", lw=2.5, label="macro")
    for c in picked:
        fpr, t, r, p = curves[c]
        label = f"{ev.classes[c]} (AUC {aucs[c]:.3f})"
        ax[0, 0].plot(fpr, t, lw=1.2, label=label)
        ax[1, 0].plot(r, p, lw=1.2, label=f"{ev.classes[c]} (AP {ev.score.per_class[ev.classes[c]]['ap']:.3f})")
    for e in entries:
        t_e, p_e = (tpr, prec) if e is focus else macro_curves(e.evals[key])
        ax[0, 1].plot(GRID, t_e, lw=1.6, label=f"{e.name} ({e.evals[key].score.macro_auc:.3f})")
        ax[1, 1].plot(GRID, p_e, lw=1.6, label=f"{e.name} ({e.evals[key].score.padded_cmap:.3f} cmAP)")
    for a in ax[0]:
        a.plot([0, 1], [0, 1], ":", color="grey")
        a.set(xlabel="false positive rate", ylabel="true positive rate")
    for a in ax[1]:
        a.set(xlabel="recall", ylabel="precision", ylim=(0, 1.02))
    ax[0, 0].set_title(f"ROC — {focus.name}: macro, 3 worst, 3 best classes", fontsize=10)
    ax[1, 0].set_title(f"precision–recall — {focus.name}", fontsize=10)
    ax[0, 1].set_title("macro ROC of every entry", fontsize=10)
    ax[1, 1].set_title("macro precision–recall of every entry", fontsize=10)
    for a in ax.ravel():
        a.legend(fontsize=7, loc="lower right" if a in ax[0] else "upper right")
        a.grid(alpha=0.3)
    fig.suptitle(TITLES[key])
    return _png(fig)


def plot_calibration(report: Report, key: str, numbers: dict[str, Any]) -> str:
    """Reliability diagram: mean predicted probability against the fraction of positives, per entry."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for e in numbers["entries"]:
        bins = e["evaluations"].get(key, {}).get("calibration")
        if bins:
            a.plot([x["mean_prob"] for x in bins], [x["positive_rate"] for x in bins], "o-", ms=4, label=e["name"])
            b.semilogy([x["mean_prob"] for x in bins], [x["n"] for x in bins], "o-", ms=4, label=e["name"])
    a.plot([0, 1], [0, 1], ":", color="grey")
    a.set(xlabel="mean predicted probability (10 bins)", ylabel="fraction positive", title="reliability")
    b.set(xlabel="mean predicted probability", ylabel="(window, class) pairs", title="how many predictions per bin")
    for x in (a, b):
        x.grid(alpha=0.3)
        x.legend(fontsize=7)
    fig.suptitle(f"calibration on {TITLES[key]}")
    return _png(fig)


def plot_training(report: Report) -> str | None:
    """Training loss and per-epoch AUCs from each run's ``metrics.json``."""
    runs = [e for e in report.entries if e.history]
    if not runs:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for i, e in enumerate(runs):
        color = f"C{i % 10}"
        ep = [h["epoch"] for h in e.history]
        a.plot(ep, [h.get("train_loss") or np.nan for h in e.history], color=color, label=e.name)
        for k, style in (("val_auc", "-"), ("soundscape_auc", "--")):
            vals = [h.get(k) or np.nan for h in e.history]
            if np.isfinite(vals).any():
                b.plot(ep, vals, style, color=color, label=f"{e.name} {k}")
    a.set(xlabel="epoch", ylabel="training loss", title="training loss")
    b.set(xlabel="epoch", ylabel="macro AUC", title="AUC per epoch (solid: validation clips, dashed: soundscapes)")
    for x in (a, b):
        x.grid(alpha=0.3)
        x.legend(fontsize=7)
    return _png(fig)


def plot_rounds(report: Report) -> list[str]:
    """Per pseudo-label folder: macro AUC by round for the pseudo chain and the control chain (both start at
    round 0), computed here like the headline, and the pseudo chunks predicted and kept per round."""
    out = []
    for pr in report.rounds:
        t = pr.table
        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
        start = [(r, e) for (r, k), e in pr.entries.items() if k in ("supervised", "given")]
        for kind, style in (("pseudo", "o-"), ("control", "s--")):
            if not any(k == kind for _, k in pr.entries):
                continue
            chain = sorted(start + [(r, e) for (r, k), e in pr.entries.items() if k == kind], key=lambda x: x[0])
            for key, color in (("soundscape", "C0"), ("validation", "C1")):
                pts = [(r, e.evals[key].score.macro_auc) for r, e in chain if key in e.evals]
                if pts:
                    a.plot(*zip(*pts, strict=True), style, color=color, label=f"{kind} chain: {TITLES[key]}")
        a.set(xlabel="round", ylabel="macro AUC", title=f"{pr.name}: macro AUC per round")
        a.set_xticks(sorted(t["round"].unique()))
        kept = t[t["kind"] == "pseudo"]
        if len(kept):
            b.bar(kept["round"] - 0.2, kept["pseudo_chunks"], 0.4, label="chunks predicted", color="C7")
            b.bar(kept["round"] + 0.2, kept["kept_chunks"], 0.4, label="chunks kept", color="C2")
        b.set(xlabel="round", ylabel="chunks", title="pseudo-labelled chunks per round")
        b.set_xticks(sorted(t["round"].unique()))
        for x in (a, b):
            x.grid(alpha=0.3)
            x.legend(fontsize=7)
        out.append(_png(fig))
    return out


def plot_study(study: StudyView) -> str:
    """Left: soundscape AUC of every run by variant (dots: seeds, bar: mean ± sd). Right: the paired difference
    to the baseline with its three 95 % bootstrap intervals (over seeds, soundscapes, both)."""
    t = study.table[study.table["state"] == "finished"]
    names = [v["variant"] for v in study.summary["variants"]]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 0.9 + 0.45 * max(3, len(names))), layout="constrained")
    for i, v in enumerate(names):
        vals = pd.to_numeric(t.loc[t["variant"] == v, "soundscape_auc"], errors="coerce").dropna()
        if len(vals):
            a.plot(vals, [i] * len(vals), "o", color="C0", alpha=0.6)
            a.errorbar(vals.mean(), i, xerr=vals.std(ddof=1) if len(vals) > 1 else None, fmt="s", color="k", capsize=4)
    a.set_yticks(range(len(names)), names)
    a.set(xlabel="soundscape macro AUC (chosen epoch)", title="runs (dots: seeds; square: mean ± sd)")
    diffs = {d["variant"]: d for d in study.summary["differences"]}
    for i, v in enumerate(names):
        d = diffs.get(v)
        if d is None:
            continue
        for off, key, color in ((-0.2, "ci_seeds", "C1"), (0.0, "ci_soundscapes", "C2"), (0.2, "ci_both", "C3")):
            lo, hi = d[key]
            if lo is not None:
                b.plot([lo, hi], [i + off, i + off], "-", color=color, lw=3, label=key if i == 1 or not b.lines else "")
        b.plot(d["diff_mean"], i, "kD")
    b.axvline(0, color="grey", lw=1)
    b.set_yticks(range(len(names)), names)
    b.set(xlabel=f"paired difference to {study.summary['baseline']}", title="Δ soundscape AUC, 95 % bootstrap")
    handles = {h.get_label(): h for h in b.lines if h.get_label() and not h.get_label().startswith("_")}
    b.legend(handles.values(), [k.replace("ci_", "over ") for k in handles], fontsize=7)
    for x in (a, b):
        x.grid(alpha=0.3)
    return _png(fig)


def plot_window(w: Window) -> str:
    """The window's log-mel spectrogram with the SED head's frame-level probability of its class drawn over it."""
    fig, ax = plt.subplots(figsize=(4.6, 2.3), layout="constrained")
    ax.imshow(w.mel, origin="lower", aspect="auto", cmap="magma", extent=(0, w.seconds, 0, w.mel.shape[0]))
    ax.set(xlabel="seconds", ylabel="mel bin")
    if w.frames is not None:
        twin = ax.twinx()
        t = (np.arange(len(w.frames)) + 0.5) * w.seconds / len(w.frames)
        twin.plot(t, w.frames, color="cyan", lw=2)
        twin.set(ylim=(0, 1.02), ylabel=f"p({w.cls}) per frame")
    ax.set_title(f"{w.kind}: {w.cls}, score {w.score:.3f}", fontsize=9)
    return _png(fig)
