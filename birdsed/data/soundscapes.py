"""Labelled training soundscapes (BirdCLEF+ 2026's ``train_soundscapes_labels.csv``) and what soundscape names say.

The CSV as the competition ships it::

    filename,start,end,primary_label
    BC2026_Train_0001_S22_20250227_010002.ogg,00:00:00,00:00:05,grekis;1491113;47158son16

- ``start``/``end`` are ``HH:MM:SS`` strings on the 5-s grid (plain seconds are accepted too);
- ``primary_label`` is ``;``-joined, empty for a window listed with nothing in it;
- every row is written twice: identical rows are merged, and two rows of one window with other labels are joined;
- not every window of a file is listed: a window that is not listed is **unlabelled**, never a negative. A listed
  window's label set is complete: the classes it does not name are its negatives.

Soundscape names carry site, date and time (``BC2026_Train_0001_S22_20250227_010002``): :func:`name_fields` reads
them with ``data.name_pattern``; a name that does not match has none.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold

from birdsed.config import NAME_PATTERN, Config
from birdsed.data.audio import AudioError, audio_info, list_audio
from birdsed.data.folder import DataError, SoundscapeLabels, labels_file

log = logging.getLogger(__name__)

# taxonomy.csv's class_name → the class group a run reports its figures by
GROUPS = {
    "Aves": "birds",
    "Amphibia": "amphibians",
    "Insecta": "insects",
    "Mammalia": "mammals",
    "Reptilia": "reptiles",
}


def name_fields(stem: str, pattern: str = NAME_PATTERN) -> dict[str, str]:
    """The named groups of `pattern` in a soundscape's file stem (``site``, ``date``, ``time``); ``{}`` where the
    name does not follow the pattern."""
    match = re.match(pattern, stem)
    return {k: v for k, v in match.groupdict().items() if v is not None} if match else {}


def parse_seconds(text: str) -> float:
    """``HH:MM:SS``, ``MM:SS`` or plain seconds (``"5"``, ``"5.0"``) as seconds; NaN when it is none of them."""
    text = str(text).strip()
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        return math.nan
    if not 1 <= len(parts) <= 3 or any(p < 0 or not math.isfinite(p) for p in parts):
        return math.nan
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + p
    return seconds


@dataclass
class LabelledWindows:
    """The listed windows of the labelled training soundscapes, one row each (merged), with multi-hot targets.

    Attributes:
        table: ``filename``, ``key`` (cache key), ``start``/``end`` (seconds), ``row_id`` (``<stem>_<end>``),
            ``group`` (what a validation fold keeps together: the file or its site) and ``fold``.
        targets: (n_windows, C) float32 0/1 in taxonomy order.
        window: the window length in seconds.
    """

    table: pd.DataFrame
    targets: np.ndarray
    window: float

    def __len__(self) -> int:
        return len(self.table)

    @property
    def files(self) -> list[str]:
        """The labelled soundscapes' file names (never part of the pseudo-label pool)."""
        return sorted(self.table["filename"].unique())

    def rows(self, fold: int, held_out: bool) -> np.ndarray:
        """Row indices of fold `fold` (`held_out`) or of the other folds; fold -1 holds out nothing."""
        in_fold = self.table["fold"].to_numpy() == fold
        return np.flatnonzero(in_fold if held_out else ~in_fold)

    def as_solution(self, rows: np.ndarray, classes: list[str]) -> SoundscapeLabels | None:
        """Rows as a :class:`SoundscapeLabels` (what validation scores), or None when there are none."""
        if len(rows) == 0:
            return None
        sub = self.table.iloc[rows]
        solution = pd.DataFrame(self.targets[rows], columns=classes)
        solution.insert(0, "row_id", sub["row_id"].to_numpy())
        keys = sorted(sub["key"].unique())
        n_windows = [round(sub.loc[sub["key"] == k, "end"].max() / self.window) for k in keys]
        offset = dict(zip(keys, np.cumsum([0, *n_windows[:-1]]), strict=True))
        starts = zip(sub["key"], sub["start"], strict=True)
        row_item = np.array([offset[k] + round(s / self.window) for k, s in starts])
        return SoundscapeLabels(solution, keys, n_windows, row_item)


def read_labelled_windows(
    path: str | Path,
    folder: str | Path,
    classes: list[str],
    window: float = 5.0,
    group_by: str = "file",
    n_folds: int = 5,
    pattern: str = NAME_PATTERN,
) -> LabelledWindows:
    """Read and validate ``train_soundscapes_labels.csv`` against the soundscapes in `folder`.

    Args:
        path: the CSV (``filename,start,end,primary_label``; extra columns are ignored).
        folder: ``train_soundscapes/``, where every listed file must be.
        classes: taxonomy order (the targets' columns).
        window: the window grid in seconds: every start a multiple, every end = start + window.
        group_by: ``file`` or ``site`` (a name's ``site`` field; a name without one is its own site).
        n_folds: validation folds over the groups (fewer when there are fewer groups).

    Raises:
        DataError: naming the file and line: a missing column, a time that is not a time, a window off the grid or
            past its file's end, a label absent from the taxonomy, a listed file missing from `folder`.
    """
    path, folder = Path(path), Path(folder)
    if group_by == "site" and "(?P<site>" not in pattern:
        raise DataError("data.val_group=site: data.name_pattern has no (?P<site>...) group to group by; use file")
    df = _read(path)
    start = df["start"].map(parse_seconds)
    end = df["end"].map(parse_seconds)
    lines = df.index.to_numpy() + 2
    for name, values in (("start", start), ("end", end)):
        bad = values.isna().to_numpy()
        if bad.any():
            raise DataError(f"{path} line {lines[bad][0]}: {name} {df[name][bad].iat[0]!r} is not HH:MM:SS or seconds")
    off = ~(np.isclose(start / window, np.round(start / window)) & np.isclose(end - start, window))
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise DataError(
            f"{path} line {lines[i]}: window {df['start'].iat[i]}–{df['end'].iat[i]} is off the {window:g}-s grid "
            f"(each window starts at a multiple of {window:g} s and lasts {window:g} s); {int(off.sum())} such row(s)"
        )
    labels = df["primary_label"].map(lambda s: [x.strip() for x in str(s).split(";") if x.strip()])
    known = set(classes)
    unknown = sorted({lab for labs in labels for lab in labs if lab not in known})
    if unknown:
        where = [int(lines[i]) for i, labs in enumerate(labels) if set(labs) - known][:5]
        raise DataError(f"{path}: label(s) absent from taxonomy.csv: {unknown[:20]} (lines {where})")
    files = {p.name: p for p in list_audio(folder)}
    missing = sorted(set(df["filename"]) - set(files))
    if missing:
        raise DataError(f"{path}: {len(missing)} listed soundscape(s) not in {folder}: {missing[:5]}")
    _check_ends(path, df["filename"], end, lines, files)
    table = _merge(df["filename"], start, end, labels)
    targets = np.zeros((len(table), len(classes)), dtype=np.float32)
    index = {c: i for i, c in enumerate(classes)}
    for r, labs in enumerate(table["labels"]):
        targets[r, [index[lab] for lab in labs]] = 1.0
    stems = table["filename"].map(lambda f: Path(f).stem)
    table["key"] = "train_soundscapes/" + table["filename"]
    table["row_id"] = [f"{s}_{round(e)}" for s, e in zip(stems, table["end"], strict=True)]
    if group_by == "site":
        sites = [name_fields(s, pattern).get("site") for s in stems]
        if not any(sites):
            log.warning("data.val_group=site: no labelled soundscape's name gives a site (data.name_pattern): "
                        "each file is its own group")  # fmt: skip
        table["group"] = [site or s for site, s in zip(sites, stems, strict=True)]
    else:
        table["group"] = table["filename"]
    table["fold"] = _folds(table["group"], n_folds)
    return LabelledWindows(table.drop(columns="labels"), targets, window)


def _read(path: Path) -> pd.DataFrame:
    """The labels CSV as text: a byte-order mark, CRLF line ends, spaces around names and a trailing comma on every
    row (as spreadsheets export it) are read as the same table; no rows is an error."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, index_col=False, encoding="utf-8-sig")
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise DataError(f"{path}: cannot parse as CSV ({str(err).splitlines()[0]})") from None
    df.columns = [str(c).strip() for c in df.columns]
    df = df.loc[:, [c for c in df.columns if c and not c.startswith("Unnamed:")]]  # a trailing comma's empty column
    need = ("filename", "start", "end", "primary_label")
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(df.columns)})")
    if df.empty:
        raise DataError(
            f"{path}: lists no window (a header only); give labelled windows or data.soundscape_labels=none"
        )
    for c in need:
        df[c] = df[c].str.strip()
    bad = df["filename"].map(lambda f: not f or "/" in f or "\\" in f)
    if bad.any():
        line = int(np.flatnonzero(bad)[0]) + 2
        raise DataError(f"{path} line {line}: filename must be a file name in train_soundscapes/")
    return df


def _check_ends(path: Path, filenames: pd.Series, end: pd.Series, lines: np.ndarray, files: dict[str, Path]) -> None:
    """Every window ends inside its file (half a second of slack for an encoder's rounding)."""
    longest = end.groupby(filenames.to_numpy()).max()
    for name, last in longest.items():
        try:
            info = audio_info(files[name])
        except AudioError as err:
            raise DataError(f"{path}: listed soundscape unreadable: {err}") from None
        duration = info.frames / info.samplerate
        if last > duration + 0.5:
            i = int(np.flatnonzero((filenames == name).to_numpy() & (end == last).to_numpy())[0])
            raise DataError(
                f"{path} line {lines[i]}: window ends at {last:g} s, past the end of {name} ({duration:.2f} s)"
            )


def _merge(filenames: pd.Series, start: pd.Series, end: pd.Series, labels: pd.Series) -> pd.DataFrame:
    """One row per (file, window): the doubled rows merged, rows of one window with other labels joined."""
    rows = pd.DataFrame({"filename": filenames.to_numpy(), "start": start.to_numpy(), "end": end.to_numpy()})
    rows["labels"] = labels.to_numpy()
    merged = rows.groupby(["filename", "start", "end"], sort=True)["labels"].agg(
        lambda ls: sorted({lab for labs in ls for lab in labs})
    )
    differing = rows.assign(text=rows["labels"].map(";".join)).groupby(["filename", "start"])["text"].nunique()
    if (differing > 1).any():
        log.warning(
            "train_soundscapes_labels.csv: %d window(s) listed with different labels; their labels are joined",
            int((differing > 1).sum()),
        )
    return merged.reset_index()


def _folds(groups: pd.Series, n_folds: int) -> np.ndarray:
    """GroupKFold over the groups: every window of a group in one fold (fewer folds when there are fewer groups)."""
    k = min(n_folds, groups.nunique())
    if k < 2:
        return np.zeros(len(groups), dtype=np.int64)
    folds = np.empty(len(groups), dtype=np.int64)
    for f, (_, held) in enumerate(GroupKFold(n_splits=k).split(np.zeros(len(groups)), groups=groups.to_numpy())):
        folds[held] = f
    return folds


def read_if_present(cfg: Config, root: Path, classes: list[str]) -> LabelledWindows | None:
    """The folder's labelled windows by ``cfg.data``: ``soundscape_labels`` ``auto`` reads
    ``ROOT/train_soundscapes_labels.csv`` where it exists, ``none`` ignores it, anything else is a path that must
    exist; windows of ``infer.window_seconds``, folds by ``soundscape_folds`` and ``val_group``."""
    d = cfg.data
    path = labels_file(root, d.soundscape_labels)
    if path is None:
        return None
    return read_labelled_windows(
        path, root / "train_soundscapes", classes, cfg.infer.window_seconds, d.val_group, d.soundscape_folds,
        d.name_pattern,
    )  # fmt: skip


def class_groups(taxonomy: pd.DataFrame, soundscape_only: list[str]) -> dict[str, np.ndarray]:
    """Class indices per reporting group: ``birds``, ``amphibians``, ``insects``, ... from taxonomy.csv's
    ``class_name``, and ``soundscape_only`` (the classes without a focal recording). Empty groups are left out."""
    names = taxonomy["class_name"].fillna("").astype(str).map(lambda n: GROUPS.get(n.strip(), "")).to_numpy()
    groups = {g: np.flatnonzero(names == g) for g in dict.fromkeys(GROUPS.values())}
    labels = taxonomy["primary_label"].tolist()
    groups["soundscape_only"] = np.array([labels.index(c) for c in soundscape_only], dtype=np.int64)
    return {g: idx for g, idx in groups.items() if len(idx)}
