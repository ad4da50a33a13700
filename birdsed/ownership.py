"""Ownership of output paths: the one rule for every file and folder birdsed writes.

An existing path is replaced only when birdsed wrote it and it is unchanged since — files by their folder's ledger
(kind and SHA-256, :func:`record_output`, updated under a file lock), folders by the list of files and digests they
were sealed with (:func:`seal_output`) — otherwise refused, naming it, ``--overwrite`` or not. Symbolic links at an
output are never written through. Every command checks its outputs before the work starts
(:func:`check_file_output`, :func:`check_dir_output`), so a mistyped or read-only destination fails before minutes
of compute; folders are written whole beside their place and swapped in (:func:`staged_dir`), and a failed swap puts
the old one back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from birdsed.errors import OutputError
from birdsed.outputs import _probe_dir, _reason, atomic_write

log = logging.getLogger(__name__)


# What a file birdsed writes begins with, by kind: an existing file of another kind is never replaced
_KINDS = {
    "submission": ("a submission CSV", lambda head: head.startswith(b"row_id,") or head.rstrip() == b"row_id"),
    "score": ("a `birdsed score --json` file", lambda head: head.lstrip().startswith(b'{\n  "macro_auc"')),
    "report": ("a `birdsed report` page", lambda head: b"<title>birdsed validation report</title>" in head),
    "report-json": ("a `birdsed report` JSON", lambda head: head.lstrip().startswith(b'{\n "threshold"')),
    "entry": ("a `birdsed choose` entry", lambda head: head.startswith(b"# birdsed choose")),
    "entry-json": ("a `birdsed choose` record", lambda head: head.startswith(b'{\n "birdsed": "choose"')),
    "screenshot": ("a `birdsed report --screenshot` picture", lambda head: head.startswith(b"\x89PNG")),
}


def check_file_output(path: str | Path, inputs: tuple[str | Path | None, ...] = (), kind: str = "") -> Path:
    """Check that `path` can be written as a file: not a folder, not one of `inputs`, its folder writable, and
    (with `kind`: ``submission``, ``score``, ``report``, ``report-json``) either absent or a file of that kind
    that birdsed wrote — never a user's file (a dataset's train.csv, a checkpoint) replaced by an output.

    The folder is created if missing (nothing else is written).

    Raises:
        OutputError: naming the path and the reason.
    """
    path = Path(path)
    if path.is_symlink():
        raise OutputError(f"{path}: is a symbolic link; birdsed does not write through links (give a real file)")
    if path.is_dir():
        raise OutputError(f"{path}: is an existing folder; give a file name")
    resolved = path.resolve()
    for item in inputs:
        if item is not None and Path(item).exists() and Path(item).resolve() == resolved:
            raise OutputError(f"{path}: is also an input of this command; write the output elsewhere")
    if kind and path.exists():
        what, ours = _KINDS[kind]
        try:
            with path.open("rb") as f:
                head = f.read(4096)
        except OSError as err:
            raise OutputError(f"{path}: cannot read the existing file ({_reason(err)})") from None
        if not ours(head) or not owned(path, kind):
            raise OutputError(
                f"{path}: exists and is not {what} birdsed wrote (or it was changed since); birdsed replaces only "
                "its own outputs"
            )
    _probe_dir(path.parent, "output folder")
    return path


# Every output file birdsed writes is entered, with its kind and digest, in its folder's ledger: a file replaced by
# --out must be in the ledger with the same content, so a user's file is never replaced however it begins
LEDGER = ".birdsed-outputs.json"


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _ledger(folder: Path) -> dict[str, dict]:
    try:
        data = json.loads((folder / LEDGER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # none yet, or damaged: nothing in it is trusted
    return data if isinstance(data, dict) else {}


def record_output(path: str | Path, kind: str, **facts: Any) -> None:
    """Enter `path` (just written) in its folder's ledger as birdsed's output of `kind`, with `facts` about it (a
    submission's checkpoints, which ``report --listen`` reads)."""
    from filelock import FileLock

    path = Path(path)
    entry = {"kind": kind, "sha256": _digest(path), **facts}
    # read, changed and rewritten under a lock: two processes recording at once lose nothing
    # the lock beside the system's temporary files, named by the folder: nothing extra in the user's folder
    key = hashlib.sha256(str(path.parent.resolve()).encode()).hexdigest()[:24]
    with FileLock(str(Path(tempfile.gettempdir()) / f"birdsed-ledger-{key}.lock"), timeout=120):
        ledger = _ledger(path.parent)
        ledger[path.name] = entry
        atomic_write(path.parent / LEDGER, json.dumps(ledger, indent=1))


def output_facts(path: str | Path, kind: str) -> dict[str, Any]:
    """What the ledger says of `path`, if birdsed wrote it as `kind` and it is unchanged since; else ``{}``."""
    path = Path(path)
    return dict(_ledger(path.parent).get(path.name, {})) if owned(path, kind) else {}


def owned(path: str | Path, kind: str) -> bool:
    """Whether `path` is in its folder's ledger as an output of `kind`, unchanged since birdsed wrote it."""
    path = Path(path)
    entry = _ledger(path.parent).get(path.name)
    if not isinstance(entry, dict) or entry.get("kind") != kind:
        return False
    try:
        return entry.get("sha256") == _digest(path)
    except OSError:
        return False


# The folders birdsed writes, by kind: what marks one (besides the marker file every such folder gets first)
OUTPUT_MARKER = ".birdsed-output"
_FOLDER_KINDS = {
    "export": "a `birdsed export` folder",
    "bundle": "a `birdsed bundle` folder",
    "teacher": "a `birdsed teacher` folder",
    "agile": "a `birdsed agile` folder",
    "student": "a `birdsed student` folder",
    "synth": "a `birdsed synth` dataset",
}


def _marker_lines(path: Path) -> list[str]:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return (path / OUTPUT_MARKER).read_text().splitlines()
    return []


def folder_kind(path: Path) -> str:
    """The kind of birdsed output folder `path` is (``export``, ``bundle``, ``teacher``, ``agile``, ``synth``), or ''.
    Only the marker file birdsed writes first says so: a folder that merely holds a ``model.json`` is a user's."""
    lines = _marker_lines(path)
    return lines[0].strip() if lines and lines[0].strip() in _FOLDER_KINDS else ""


def _files(folder: Path) -> set[str]:
    own = {OUTPUT_MARKER, LEDGER, f"{LEDGER}.lock"}
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir() or p.is_symlink()} - own


def foreign_files(folder: Path) -> list[str]:
    """Files in a birdsed output folder that birdsed did not write: those beyond the list its marker was sealed with
    (:func:`seal_output`), those whose content changed since (a file edited by hand is the user's now), and any
    symbolic link (never followed into a user's files); none for a folder not sealed yet (one being written)."""
    lines = _marker_lines(folder)
    if len(lines) < 2:
        return []
    sealed = dict(line.split("\t", 1) if "\t" in line else (line, "") for line in lines[1:])
    out = []
    for name in sorted(_files(folder)):
        path = folder / name
        if name not in sealed or path.is_symlink():
            out.append(name)
        elif sealed[name]:
            try:
                changed = _digest(path) != sealed[name]
            except OSError:
                changed = True
            if changed:
                out.append(f"{name} (changed since birdsed wrote it)")
    return out


def seal_output(folder: Path, kind: str) -> None:
    """Mark a finished output folder with the files birdsed wrote in it and each one's SHA-256 (ownership goes by
    content: a file edited since is the user's)."""
    lines = [f"{name}\t{_digest(folder / name)}" for name in sorted(_files(folder)) if not (folder / name).is_symlink()]
    atomic_write(folder / OUTPUT_MARKER, "\n".join([kind, *lines]) + "\n")


def check_dir_output(
    path: str | Path,
    kind: str = "",
    inputs: tuple[str | Path | None, ...] = (),
    overwrite: bool = True,
    create: bool = True,
) -> Path:
    """Check that `path` can be used as an output folder (created if missing); with `kind` (``export``,
    ``bundle``, ``teacher``, ``agile``) also that it holds nothing birdsed did not write: an existing non-empty
    folder must be that kind of output (and, unless `overwrite`, is refused too), and no input of the command may be
    the folder or lie inside it — with or without ``--overwrite``, a run, a dataset or a user's notes are never
    replaced by an output. A new folder gets the kind's marker file; with `create` False (an output written whole
    beside it and renamed into place, :func:`staged_dir`) a missing folder is not made, only its parent proven.

    Raises:
        OutputError: naming the path and the reason.
    """
    path = Path(path)
    if path.is_symlink():
        raise OutputError(f"{path}: is a symbolic link; birdsed does not write through links (give a real folder)")
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: exists and is a file, not a folder")
    if kind:
        what = _FOLDER_KINDS[kind]
        resolved = path.resolve()
        for item in inputs:
            if item is not None and Path(item).exists():
                inp = Path(item).resolve()
                if inp == resolved or resolved in inp.parents:
                    raise OutputError(f"{path}: holds {item}, an input of this command; write the output elsewhere")
        if path.is_dir() and any(path.iterdir()):
            if folder_kind(path) != kind:
                raise OutputError(
                    f"{path}: exists and is not {what}; birdsed replaces only its own outputs "
                    "(choose another --out, or remove the folder yourself)"
                )
            foreign = foreign_files(path)
            if foreign:
                raise OutputError(
                    f"{path}: holds {len(foreign)} file(s) birdsed did not write ({', '.join(foreign[:5])}); "
                    "move them out first: birdsed replaces only its own outputs"
                )
            if not overwrite:
                raise OutputError(f"{path}: exists and is not empty; pass --overwrite to replace it")
    if not create and not path.exists():
        _probe_dir(path.parent, "output folder's parent")
        return path
    _probe_dir(path, "output folder")
    if kind and not (path / OUTPUT_MARKER).is_file():
        mark_output(path, kind)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def sweep_staging(path: Path) -> None:
    """Remove what a killed writer of `path` left beside it (``.NAME.partial-PID``, ``.NAME.old-PID`` folders,
    ``.NAME.PID.part`` files) whose process is gone; a live writer's are left alone."""
    parent = path.parent
    if not parent.is_dir():
        return
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:(?:partial|old)-(\d+)|(\d+)\.part)$")
    for entry in parent.iterdir():
        match = pattern.match(entry.name)
        if not match or _alive(int(match.group(1) or match.group(2))):
            continue
        log.info("%s: removing %s, left by a writer that was stopped", path, entry.name)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def mark_output(folder: Path, kind: str) -> None:
    """Mark `folder` as birdsed's output of `kind` (what :func:`folder_kind` reads), before anything else is in it."""
    atomic_write(folder / OUTPUT_MARKER, kind + "\n")


@contextlib.contextmanager
def staged_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; on success it replaces `path` (an old folder is removed only
    after the new one is in place), on any error it is removed and `path` stays as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    sweep_staging(path)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        yield tmp
        kind = folder_kind(tmp)
        if kind:  # the finished folder lists what birdsed wrote in it
            seal_output(tmp, kind)
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            if old.exists() and not path.exists():  # the old folder back where it was
                os.replace(old, path)
            raise
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OutputError):
            raise
        raise OutputError(f"{path}: cannot write ({_reason(err)})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
