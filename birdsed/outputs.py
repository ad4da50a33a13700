"""Output paths written atomically, never half-written, and the base's shared helpers.

Files are written through a temporary file beside the target and renamed into place (:func:`atomic_write`), so a
crash or a kill leaves the old file or the new one, never a partial one; which existing path birdsed may replace is
:mod:`birdsed.ownership`'s rule. Readers of birdsed's own files name the file when it is damaged. Progress bars
are drawn only where a person watches them (:func:`show_bars`), and worker processes die with the command that
started them (:func:`die_with_parent`).
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from birdsed.errors import DamagedFileError, OutputError

log = logging.getLogger(__name__)


def show_bars(wanted: bool = True) -> bool:
    """Whether to draw progress bars: when wanted and both stdout and stderr are terminals.

    Output to a log file (a cluster job, ``nohup``, CI) gets the one line per epoch, round or folder the stages log
    anyway, instead of every redraw of a bar (about 6 kB an epoch).
    """
    return wanted and sys.stdout.isatty() and sys.stderr.isatty()


class _LogProgress:
    """Where no bar is drawn (output to a file, ``--no-progress``): one log line at least every `every` seconds with
    the count, the rate and the time left, so a long step is never silent. The parts of tqdm's API birdsed uses."""

    def __init__(self, iterable: Any = None, total: int | None = None, desc: str = "", unit: str = "it",
                 every: float = 30.0) -> None:  # fmt: skip
        self.iterable, self.desc, self.unit, self.every = iterable, desc, unit, every
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n, self.start = 0, time.monotonic()
        self.last = self.start

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            rate = self.n / max(now - self.start, 1e-9)
            left = f", ~{(self.total - self.n) / rate / 60:.1f} min left" if self.total and rate > 0 else ""
            of = f"/{self.total}" if self.total else ""
            log.info("%s: %d%s %s(s) (%.2f/s%s)", self.desc, self.n, of, self.unit, rate, left)

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable:
            yield item
            self.update(1)

    def __enter__(self) -> _LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def close(self) -> None:
        return None


def progress(iterable: Any = None, total: int | None = None, desc: str = "", unit: str = "it", wanted: bool = True):
    """A tqdm bar on a terminal (:func:`show_bars`); elsewhere a log line at least every 30 s (count, rate, time
    left). Use it like tqdm: iterate it, or ``with progress(total=n) as bar: bar.update(1)``."""
    if show_bars(wanted):
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit)
    return _LogProgress(iterable, total, desc, unit)


def die_with_parent(parent: int) -> None:
    """A worker process's initializer (``ProcessPoolExecutor(initializer=die_with_parent, initargs=(os.getpid(),))``):
    on Linux the kernel sends it SIGKILL when `parent` dies, even by ``kill -9``, so no worker (hundreds of MB each)
    lives on for minutes after its command (elsewhere that part is a no-op); on Ctrl-C it exits quietly."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    # Ctrl-C reaches the whole process group: a worker leaves at once and quietly (no traceback of its own), the
    # parent reports the interrupt and removes what the workers left half-written
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))
    if os.getppid() != parent:  # the parent died before the line above: go now
        os._exit(1)


def read_json(path: str | Path) -> Any:
    """A JSON file birdsed wrote (cache index, run metrics, markers, study records), read through one error path.

    Raises:
        DamagedFileError: the file is missing, unreadable or not valid JSON, naming it.
    """
    return _read_own(path, json.loads, "JSON", ValueError)


def read_yaml(path: str | Path) -> Any:
    """A YAML file birdsed wrote (a run's config.yaml), read through the same error path as :func:`read_json` and the
    same loader as a config (:func:`birdsed.config.text.parse_yaml`: no repeated key, no alias that multiplies)."""
    from birdsed.config.text import parse_yaml

    return _read_own(path, parse_yaml, "YAML", ValueError)


def read_csv_own(path: str | Path, required: tuple[str, ...] = (), numeric: str = "", dtype: dict | None = None) -> Any:
    """A CSV birdsed wrote (``oof.csv``, ``rounds.csv``, ``pseudo.csv``), read through the same error path as
    :func:`read_json`: unreadable, cut short (a ragged or half-written last row), missing a column, or (`numeric`:
    ``"after:COL"``, every column after COL; ``"all"``) holding a value that is not a finite number → one
    DamagedFileError naming the file.

    Returns:
        the table (a pandas DataFrame).
    """
    import numpy as np
    import pandas as pd

    path = Path(path)

    def parse(text: str) -> Any:
        if text and not text.endswith("\n"):
            raise ValueError("the last line is cut off")
        table = pd.read_csv(io.StringIO(text), dtype=dtype)
        missing = [c for c in required if c not in table.columns]
        if missing:
            raise ValueError(f"no column(s) {', '.join(missing)}")
        if numeric:
            cols = list(table.columns)
            cols = cols[cols.index(numeric.split(":", 1)[1]) + 1 :] if numeric.startswith("after:") else cols
            values = table[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
            if not np.isfinite(values).all():
                raise ValueError(f"{int((~np.isfinite(values)).sum())} value(s) that are not finite numbers")
        return table

    return _read_own(path, parse, "CSV", ValueError)  # pandas' ParserError is a ValueError


def _read_own(path: str | Path, parse: Any, fmt: str, bad: type[Exception]) -> Any:
    """`parse` of the text of `path`, a file birdsed wrote; any failure is a DamagedFileError naming the file."""
    path = Path(path)
    try:
        return parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, bad) as err:
        what = _reason(err) if isinstance(err, OSError) else f"not valid {fmt}: {str(err).splitlines()[0][:120]}"
        raise DamagedFileError(
            f"{path}: birdsed's own file cannot be read back ({what}); it was cut short or changed — remove it (or "
            "its folder) and run the command that writes it again"
        ) from None


def _reason(err: OSError) -> str:
    return err.strerror or type(err).__name__


def _probe_dir(folder: Path, what: str) -> None:
    """Create `folder` if needed and prove it takes a new file (catches read-only mounts, which os.access misses)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{folder}: {what} exists but is not a folder") from None
    except OSError as err:
        raise OutputError(f"{folder}: cannot create {what} ({_reason(err)})") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".birdsed-write-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f"{folder}: {what} is not writable ({_reason(err)})") from None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (named by this process, so two processes writing one file do not
    share it); on success it replaces `path`, on any error it is removed.

    An OSError while writing becomes an :class:`OutputError` naming `path`.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OutputError):
            raise
        raise OutputError(f"{path}: cannot write ({_reason(err)})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)
