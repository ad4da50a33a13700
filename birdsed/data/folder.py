"""Read and validate a BirdCLEF-format folder; folds over recordings.

Layout (BirdCLEF 2025)::

    ROOT/train.csv              primary_label, secondary_labels ("['a', 'b']" or "['']"), filename, rating, ...
    ROOT/taxonomy.csv           primary_label, ..., class_name; its row order is the submission's column order
    ROOT/train_audio/<label>/<file>.ogg
    ROOT/train_soundscapes/*.ogg   unlabelled (pseudo-labelling pool)
    ROOT/test_soundscapes/*.ogg
    ROOT/sample_submission.csv
    ROOT/test_solution.csv      optional: 0/1 labels of the test windows (local scoring)
    ROOT/train_soundscapes_labels.csv  BirdCLEF+ 2026: labelled windows of some training soundscapes
                                (:mod:`birdsed.data.soundscapes`); those files never join the pseudo-label pool

Labels are strings even when numeric (``1139490`` is an insect in 2025): every CSV is read with ``dtype=str``.
"""

from __future__ import annotations

import ast
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from birdsed.data.audio import list_audio
from birdsed.errors import BirdsedError
from birdsed.scoring.metrics import SubmissionError, solution_labels

if TYPE_CHECKING:
    from birdsed.config import Config

log = logging.getLogger(__name__)

LABELS_FILE = "train_soundscapes_labels.csv"  # BirdCLEF+ 2026's labelled training soundscapes


class DataError(BirdsedError, ValueError):
    """A BirdCLEF-format folder is unusable; the message names the file and what is wrong."""


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as err:
        raise DataError(f"{path}: cannot parse as CSV ({err})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(df.columns)})")
    return df


def parse_label_list(text: str, where: str = "") -> list[str]:
    """Parse a BirdCLEF label list such as ``"['a', 'b']"``, ``"['']"`` or ``"[]"`` into ``['a', 'b']`` / ``[]``."""
    text = (text or "").strip()
    if not text:
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise DataError(f"{where}: cannot parse label list {text!r}") from None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        raise DataError(f"{where}: label list {text!r} is not a list")
    return [str(v).strip() for v in value if str(v).strip()]


def read_taxonomy(path: str | Path) -> pd.DataFrame:
    """taxonomy.csv with string labels; raises DataError on duplicates or blanks."""
    path = Path(path)
    tax = _read_csv(path, ("primary_label",))
    tax["primary_label"] = tax["primary_label"].str.strip()
    if (tax["primary_label"] == "").any():
        raise DataError(f"{path}: blank primary_label in row(s) {list(np.flatnonzero(tax['primary_label'] == ''))}")
    dup = tax["primary_label"][tax["primary_label"].duplicated()].unique().tolist()
    if dup:
        raise DataError(f"{path}: duplicate class label(s) {dup}")
    if "class_name" not in tax.columns:
        tax["class_name"] = ""
    return tax


@dataclass
class BirdCLEFData:
    """A validated BirdCLEF-format folder.

    Attributes:
        root: the folder.
        classes: class labels in taxonomy order (= submission column order).
        taxonomy: taxonomy.csv as strings.
        train: train.csv as strings plus ``secondary`` (list of known secondary labels) and ``key`` (cache key).
    """

    root: Path
    classes: list[str]
    taxonomy: pd.DataFrame
    train: pd.DataFrame
    labels_file: Path | None = None  # the labelled soundscapes' CSV (``data.soundscape_labels``), or None

    @property
    def class_index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    @property
    def train_soundscapes(self) -> list[Path]:
        return list_audio(self.root / "train_soundscapes")

    @property
    def unlabelled_soundscapes(self) -> list[Path]:
        """``train_soundscapes`` less those listed in ``train_soundscapes_labels.csv``: the pseudo-label pool."""
        return [p for p in self.train_soundscapes if p.name not in self.labelled_files]

    @cached_property
    def labelled_files(self) -> set[str]:
        """File names listed in the labelled soundscapes' CSV (``labels_file``, however ``data.soundscape_labels``
        gave it; empty without one): the one answer every stage asks (pool, agile, background, folds)."""
        if self.labels_file is None:
            return set()
        names = _read_csv(self.labels_file, ("filename",))["filename"].str.strip()
        return set(names)

    @property
    def soundscape_only(self) -> list[str]:
        """Classes without a focal recording (BirdCLEF+ 2026: 28 of 234), in taxonomy order."""
        counts = self.class_counts()
        return counts[counts == 0].index.tolist()

    @property
    def test_soundscapes(self) -> list[Path]:
        return list_audio(self.root / "test_soundscapes")

    def targets(self, secondary_value: float) -> np.ndarray:
        """Multi-hot targets of the training recordings, shape (n_recordings, n_classes), float32.

        The primary label is 1, secondary labels `secondary_value` (0 ignores them).
        """
        idx = self.class_index
        y = np.zeros((len(self.train), len(self.classes)), dtype=np.float32)
        for row, (primary, secondary) in enumerate(
            zip(self.train["primary_label"], self.train["secondary"], strict=True)
        ):
            for label in secondary:
                y[row, idx[label]] = max(y[row, idx[label]], secondary_value)
            y[row, idx[primary]] = 1.0
        return y

    def class_counts(self) -> pd.Series:
        """Training recordings per class (primary label), every class listed, in taxonomy order."""
        return self.train["primary_label"].value_counts().reindex(self.classes, fill_value=0)


def labels_file(root: str | Path, setting: str = "auto") -> Path | None:
    """The labelled soundscapes' CSV by ``data.soundscape_labels``: ``auto`` → ``ROOT/train_soundscapes_labels.csv``
    where it exists, ``none`` → None, else that path (which must exist).

    Raises:
        DataError: a path that is not a file.
    """
    if setting == "none":
        return None
    path = Path(root) / LABELS_FILE if setting == "auto" else Path(setting)
    if setting == "auto":
        return path if path.is_file() else None
    if not path.is_file():
        raise DataError(f"data.soundscape_labels: {path} is not a file (auto: ROOT/{LABELS_FILE} if present; none)")
    return path


def load_data(cfg: Config, **kwargs: Any) -> BirdCLEFData:
    """``cfg.data.root`` read with ``cfg``'s labelled soundscapes (``data.soundscape_labels``): what every stage
    that asks which soundscapes are labelled loads."""
    return load_birdclef(cfg.data.root, labels=cfg.data.soundscape_labels, **kwargs)


def load_birdclef(
    root: str | Path, check_files: bool = True, min_rating: float = 0.0, labels: str = "auto"
) -> BirdCLEFData:
    """Read and validate a BirdCLEF-format folder.

    Errors (DataError): missing train.csv/taxonomy.csv or columns, duplicate recordings, primary labels absent
    from the taxonomy, listed audio files that do not exist (all listed). Warnings: secondary labels absent from
    the taxonomy (dropped, counted once), classes without any training recording.

    Args:
        root: the folder.
        check_files: verify that every train.csv file exists under train_audio/.
        min_rating: drop recordings whose rating is below this (unrated or 0-rated ones are kept).
        labels: ``data.soundscape_labels`` (:func:`labels_file`).
    """
    root = Path(root)
    found = labels_file(root, labels)  # first: a bad setting fails before the folder is read
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    tax = read_taxonomy(root / "taxonomy.csv")
    classes = tax["primary_label"].tolist()
    known = set(classes)
    train_path = root / "train.csv"
    train = _read_csv(train_path, ("primary_label", "filename"))
    train["primary_label"] = train["primary_label"].str.strip()
    train["filename"] = train["filename"].str.strip()
    if "secondary_labels" not in train.columns:
        train["secondary_labels"] = "[]"

    _check_train_rows(train, train_path, known)
    for folder in ("train_soundscapes", "test_soundscapes"):
        check_unique_stems(list_audio(root / folder), root / folder)

    dropped = 0
    secondary: list[list[str]] = []
    for i, text in enumerate(train["secondary_labels"]):
        labels = parse_label_list(text, f"{train_path} line {i + 2}")
        kept = [lab for lab in labels if lab in known and lab != train["primary_label"].iat[i]]
        dropped += sum(lab not in known for lab in labels)
        secondary.append(kept)
    if dropped:
        log.warning("%s: dropped %d secondary label(s) absent from taxonomy.csv", train_path, dropped)
    train["secondary"] = secondary

    if min_rating > 0 and "rating" in train.columns:
        rating = pd.to_numeric(train["rating"], errors="coerce").fillna(0.0)
        train = train[(rating >= min_rating) | (rating == 0)].reset_index(drop=True)

    train["key"] = "train_audio/" + train["filename"]
    if check_files:
        missing = [f for f in train["filename"] if not (root / "train_audio" / f).is_file()]
        if missing:
            raise DataError(
                f"{train_path}: {len(missing)} listed file(s) missing under {root / 'train_audio'}: "
                + ", ".join(missing[:10])
                + (" ..." if len(missing) > 10 else "")
            )

    data = BirdCLEFData(root=root, classes=classes, taxonomy=tax, train=train.reset_index(drop=True), labels_file=found)
    empty = data.soundscape_only
    if empty:
        covered = (
            f"; they are learnt from {found.name} (or a teacher)"
            if found is not None
            else f"; without {LABELS_FILE} only a teacher covers them"
        )
        log.warning("%s: %d class(es) have no focal recording: %s%s", train_path, len(empty), empty[:20], covered)
    return data


def _check_train_rows(train: pd.DataFrame, train_path: Path, known: set[str]) -> None:
    """train.csv's rows: every filename inside train_audio/ (normalised in place, so one recording however spelled is
    one key), listed once, its primary label in the taxonomy.

    Raises:
        DataError: naming the file, the rows' lines and what is wrong.
    """
    outside = [f for f in train["filename"] if not _inside(f)]
    if outside:
        rows = train.index[train["filename"].isin(outside)].tolist()
        raise DataError(
            f"{train_path}: filename(s) leave train_audio/ (absolute, '..' or empty): {outside[:5]} "
            f"(lines {[r + 2 for r in rows[:5]]})"
        )
    # one recording however spelled (a/x.ogg, a/./x.ogg, ./a//x.ogg) is one key: never in training and validation
    written = train["filename"]
    train["filename"] = pd.Series([PurePosixPath(f.replace("\\", "/")).as_posix() for f in written], train.index, str)
    dup = train["filename"][train["filename"].duplicated()].unique().tolist()
    if dup:
        spelled = {d: sorted(set(written[train["filename"] == d])) for d in dup[:10]}
        lines = {d: (train.index[train["filename"] == d] + 2).tolist() for d in dup[:10]}
        detail = "; ".join(f"{d} as {spelled[d]} (lines {lines[d]})" for d in dup[:10])
        raise DataError(f"{train_path}: {len(dup)} recording(s) listed more than once: {detail}")
    unknown = sorted(set(train["primary_label"]) - known)
    if unknown:
        rows = train.index[train["primary_label"].isin(unknown)].tolist()
        raise DataError(
            f"{train_path}: primary label(s) absent from taxonomy.csv: {unknown[:20]} "
            f"(lines {[r + 2 for r in rows[:10]]})"
        )


def _inside(filename: str) -> bool:
    """Whether a train.csv filename stays inside train_audio/ (relative, no '..', not empty)."""
    path = PurePosixPath(filename.replace("\\", "/"))
    return bool(filename) and not path.is_absolute() and ".." not in path.parts and not PureWindowsPath(filename).drive


def check_unique_stems(files: list[Path], folder: Path) -> None:
    """Soundscapes are named by their stem in row ids (``<stem>_<seconds>``): two files with one stem (``a.ogg``,
    ``a.wav``) would give duplicate rows. Raises DataError naming them."""
    seen: dict[str, Path] = {}
    for f in files:
        if f.stem in seen:
            raise DataError(
                f"{folder}: {seen[f.stem].name} and {f.name} share the stem {f.stem!r}, so their row ids would "
                "collide; rename or remove one"
            )
        seen[f.stem] = f


def assign_folds(labels: list[str] | pd.Series, n_folds: int, seed: int) -> np.ndarray:
    """Stratified K-fold assignment over recordings, deterministic by seed.

    Each class's recordings are shuffled and dealt round-robin into folds, starting where the previous class
    stopped, so fold sizes stay balanced and a class with fewer recordings than folds still spreads out.

    Returns:
        fold index per recording, shape (n_recordings,), int.
    """
    labels = pd.Series(list(labels))
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=np.int64)
    nxt = 0
    for label in sorted(labels.unique()):
        members = np.flatnonzero((labels == label).to_numpy())
        rng.shuffle(members)
        for m in members:
            folds[m] = nxt % n_folds
            nxt += 1
    return folds


def row_ids(stem: str, count: int, window_seconds: float) -> list[str]:
    """BirdCLEF row ids ``<stem>_<end second>`` of `count` windows."""
    return [f"{stem}_{round((w + 1) * window_seconds)}" for w in range(count)]


def split_row_ids(ids: pd.Series) -> tuple[pd.Series, pd.Series]:
    """The inverse of :func:`row_ids`: (file stems, end seconds as numbers; NaN where the id has no number)."""
    parts = ids.astype(str).str.rsplit("_", n=1)
    return parts.str[0], pd.to_numeric(parts.str[1], errors="coerce")


@dataclass
class SoundscapeLabels:
    """Labelled 5-s windows of soundscapes: cache keys, windows per file, and each solution row's item index."""

    solution: pd.DataFrame
    keys: list[str]
    n_windows: list[int]
    row_item: np.ndarray  # solution row → WindowDataset item


def read_soundscape_labels(path: Path, root: Path, classes: list[str], window: float) -> SoundscapeLabels:
    """Match a ``test_solution.csv`` (row_id ``<stem>_<end second>``, `window`-second windows) to
    ``root/test_soundscapes``."""
    try:
        sol = pd.read_csv(path, dtype={"row_id": str})
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise DataError(f"{path}: cannot read the solution ({str(err).splitlines()[0]})") from None
    if list(sol.columns) != ["row_id", *classes]:
        raise DataError(f"{path}: columns must be row_id followed by the taxonomy's classes in order")
    try:
        sol[classes] = solution_labels(sol, classes, path, need_positive=False)  # before any training, not after
    except SubmissionError as err:
        raise DataError(str(err)) from None
    files = {p.stem: p for p in list_audio(root / "test_soundscapes")}
    stems, ends = split_row_ids(sol["row_id"])
    if ends.isna().any():
        raise DataError(f"{path}: row_id {sol['row_id'][ends.isna()].iat[0]!r} does not end in _<seconds>")
    missing = sorted(set(stems) - set(files))
    if missing:
        raise DataError(f"{path}: {len(missing)} soundscape(s) not in {root / 'test_soundscapes'}: {missing[:5]}")
    order = sorted(set(stems))
    n_windows = [int(ends[stems == s].max() // window) for s in order]
    offset = dict(zip(order, np.cumsum([0, *n_windows[:-1]]), strict=True))
    row_item = np.array([offset[s] + int(e // window) - 1 for s, e in zip(stems, ends, strict=True)])
    keys = [f"test_soundscapes/{files[s].name}" for s in order]
    return SoundscapeLabels(sol, keys, n_windows, row_item)


def n_windows(n_samples: int, window: int, min_tail: int = 0) -> int:
    """Windows in a file of `n_samples`: a last partial window counts if it holds more than `min_tail` samples."""
    full, tail = divmod(n_samples, window)
    return max(1, full + (1 if tail > min_tail else 0))
