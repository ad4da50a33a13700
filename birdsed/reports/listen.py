"""Windows to listen to: a report entry's worst mistakes on the labelled soundscapes, with their audio and what
the model heard in them.

For each chosen class (the worst by AUC, and any the user names) the top false positives (highest scores on windows
without the class) and the missed positives (lowest scores on windows with it). Each window carries its 5-s clip
(decoded from the soundscape the solution names), the log-mel spectrogram of the run's own front-end and, when the
entry is a run folder with a checkpoint, the SED head's frame-level output for the class across the window. The
page shows them as images with an audio player (:mod:`birdsed.reports.html`); the clip is Ogg Vorbis at 16 kHz, so a
page of a few dozen windows stays a few MB.
"""

from __future__ import annotations

import base64
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import soxr
import torch

from birdsed.data.audio import list_audio, load_audio
from birdsed.data.folder import split_row_ids
from birdsed.errors import BirdsedError
from birdsed.training.losses import activation

log = logging.getLogger(__name__)

LISTEN_RATE = 16000  # the clip on the page: birdsong above 8 kHz is rare enough for listening


class ListenError(BirdsedError, ValueError):
    """A window cannot be listened to (a soundscape file is missing, a class is unknown)."""


@dataclass
class Window:
    """One window of one class worth listening to.

    Attributes:
        kind: ``false positive`` or ``missed positive``.
        mel: log-mel spectrogram of the window, shape (n_mels, T).
        frames: the SED head's frame-level probability of the class across the window, shape (T',), or None.
        audio: the clip as a ``data:audio/ogg`` URI.
    """

    cls: str
    kind: str
    row_id: str
    score: float
    mel: np.ndarray
    frames: np.ndarray | None
    seconds: float
    audio: str


def pick_windows(
    y_true: np.ndarray, y_score: np.ndarray, classes: list[str], n: int, worst: int = 3, named: list[str] = ()
) -> list[tuple[str, str, int]]:
    """(class, kind, row) of the windows to listen to: for the `worst` classes by AUC (classes with positives) and
    every `named` one, the `n` highest-scored negatives and the `n` lowest-scored positives. Shapes (N, C)."""
    from birdsed.scoring.metrics import per_class_auc

    unknown = [c for c in named if c not in classes]
    if unknown:
        raise ListenError(f"--listen-class: {unknown} not among the classes ({', '.join(classes[:8])}, ...)")
    auc = per_class_auc(y_true, y_score)
    order = [classes[i] for i in np.argsort(np.where(np.isfinite(auc), auc, np.inf)) if np.isfinite(auc[i])]
    chosen = list(dict.fromkeys([*order[:worst], *named]))
    out = []
    for c in chosen:
        j = classes.index(c)
        pos, neg = np.flatnonzero(y_true[:, j] > 0), np.flatnonzero(y_true[:, j] <= 0)
        out += [(c, "false positive", int(i)) for i in neg[np.argsort(-y_score[neg, j], kind="stable")][:n]]
        out += [(c, "missed positive", int(i)) for i in pos[np.argsort(y_score[pos, j], kind="stable")][:n]]
    return out


def ogg_uri(wave: np.ndarray, sample_rate: int) -> str:
    """A mono clip as a ``data:audio/ogg;base64`` URI (Vorbis at :data:`LISTEN_RATE`)."""
    clip = soxr.resample(wave.astype(np.float32), sample_rate, LISTEN_RATE) if sample_rate != LISTEN_RATE else wave
    peak = float(np.abs(clip).max()) if len(clip) else 0.0
    clip = clip / peak * 0.9 if peak > 0 else clip  # listening level; the spectrogram shows the true level
    buf = io.BytesIO()
    sf.write(buf, clip.astype(np.float32), LISTEN_RATE, format="OGG", subtype="VORBIS")
    return "data:audio/ogg;base64," + base64.b64encode(buf.getvalue()).decode()


def listen(
    y_true: np.ndarray,
    y_score: np.ndarray,
    classes: list[str],
    row_ids: list[str],
    soundscapes: Path,
    checkpoint: Path | None,
    n: int = 3,
    named: list[str] = (),
    window_seconds: float = 5.0,
) -> list[Window]:
    """The windows of :func:`pick_windows` with their clips, spectrograms and (with a `checkpoint`) frame outputs.

    Args:
        row_ids: the solution's row ids (``<stem>_<end second>``), one per row of `y_true`.
        soundscapes: the folder of the labelled soundscapes (``test_soundscapes``).
        checkpoint: a run's ``best.pt``, whose front-end draws the spectrogram and whose head gives the frame-level
            output; None: a generic 128-mel spectrogram and no frame output.

    Raises:
        ListenError: a soundscape named by a row id is not in `soundscapes`.
    """
    from birdsed.models import load_checkpoint
    from birdsed.models.frontend import MelFrontend

    picks = pick_windows(y_true, y_score, classes, n, named=named)
    if not picks:
        return []
    model, act, rate = None, "sigmoid", 32000
    frontend = MelFrontend(sample_rate=rate)
    if checkpoint is not None and Path(checkpoint).is_file():
        model, cfg, model_classes = load_checkpoint(checkpoint)
        if model_classes != list(classes):
            log.warning("%s: classes differ from the solution's; no frame-level output", checkpoint)
            model = None
        else:
            frontend, act, rate = model.frontend, activation(cfg.train.loss), cfg.audio.sample_rate
    files = {p.stem: p for p in list_audio(soundscapes)}
    stems, ends = split_row_ids(pd.Series(row_ids, dtype=str))
    cache: dict[str, np.ndarray] = {}
    out = []
    for c, kind, i in picks:
        stem, end = stems.iloc[i], float(ends.iloc[i])
        if stem not in files:
            raise ListenError(f"{soundscapes}: no audio for soundscape {stem!r} (row {row_ids[i]})")
        if stem not in cache:
            cache[stem] = load_audio(files[stem], rate)
        a, b = round((end - window_seconds) * rate), round(end * rate)
        wave = np.zeros(b - a, dtype=np.float32)
        part = cache[stem][max(0, a) : b]
        wave[: len(part)] = part
        x = torch.from_numpy(wave)[None]
        with torch.no_grad():
            mel = frontend(x)[0, 0].numpy()  # (M, T)
            frames = None
            if model is not None:
                logits = model(x)["frame_logits"][0]  # (T', K)
                probs = torch.softmax(logits, -1) if act == "softmax" else torch.sigmoid(logits)
                frames = probs[:, classes.index(c)].numpy()
        score = float(y_score[i, classes.index(c)])
        out.append(Window(c, kind, row_ids[i], score, mel, frames, window_seconds, ogg_uri(wave, rate)))
    return out


def page_megabytes(windows: list[Window]) -> float:
    """The audio's share of a page, in MB (base64 text)."""
    return sum(len(w.audio) for w in windows) / 1e6 if windows else 0.0


def describe(w: Window) -> str:
    """One caption line."""
    score = f"{w.score:.3f}" if math.isfinite(w.score) else "–"
    return f"{w.cls} · {w.kind} · {w.row_id} · score {score}"
