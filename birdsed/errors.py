"""The one base of every error a user can fix: a bad config key, data file, checkpoint or output path.

The CLI prints these as one line (``error: <file or key>: <what is wrong>``) and exits with status 1; any other
exception is a bug in birdsed and keeps its traceback.
"""

from __future__ import annotations


class BirdsedError(Exception):
    """An input or output problem the user can fix; the message starts with the file or key at fault."""


class OutputError(BirdsedError, OSError):
    """An output path cannot be written (missing permission, read-only file system, a folder in the way, …)."""


class ConfigError(BirdsedError, ValueError):
    """A configuration file or override is invalid; the message names the key."""


class Stopped(BirdsedError):
    """The work was stopped from outside (SIGTERM: a scheduler's first word) at a clean point; the CLI exits with
    `exit_code` (128 + the signal, 143 for SIGTERM) so that the scheduler reads it as a stop, not a success."""

    exit_code = 143


class DamagedFileError(BirdsedError, ValueError):
    """A file birdsed wrote earlier (a cache index, a run's metrics, a study's record) cannot be read back: a disk
    that filled, a job killed mid-copy, a hand edit. The message names the file and what to do."""
