"""Every exception textclf raises, in one place (no module imports another for its errors), and
the one rule that decides whether a retry can help.

Two families. A ``FinalError`` (configuration, bad input or data, an artifact that is not what
was registered, a schema that needs migrating) and a full disk end a task on its first try with
one clear line: retrying the same inputs would fail the same way, minutes later. Everything
else (a lost connection, a worker that died, a lock held too long) may be transient and is
retried by Airflow as configured.
"""

from __future__ import annotations

import errno


class FinalError(Exception):
    """An error a retry cannot fix; the message says what to change."""


class ConfigError(FinalError, ValueError):
    """A configuration value is missing or malformed; the message names the setting."""


class InputError(FinalError, ValueError):
    """Input a user gave (a text, a file, an argument, a date) cannot be used; the message says which."""


class ImportError_(FinalError, ValueError):
    """The file as a whole cannot be imported (e.g. a required column is missing)."""


class RegistryError(FinalError, RuntimeError):
    """A model version does not exist, or its artifact is gone."""


class ChecksumMismatch(FinalError, RuntimeError):
    """The artifact on storage is not the one that was registered."""


class SchemaNotCurrent(FinalError, RuntimeError):
    """The database schema is not the one this code needs; migrations are an explicit step."""


class RunInProgress(FinalError):
    """Another `textclf run` of the same date holds its lock."""


class ChampionLocked(RuntimeError):
    """Another champion change holds the lock for longer than the wait allows (transient)."""


class AirflowUnreachable(RuntimeError):
    """Airflow could not be told (not running, not configured, refused the credentials)."""


class Skip(Exception):  # noqa: N818 - it is an outcome, not an error
    """Nothing to do for this step; the message says why (the DAG shows a skipped task)."""


NO_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# A read-only file system: the same write fails the same way on a retry. (A refused permission
# is not listed: s3fs reports expired credentials as PermissionError, which a retry can fix; local
# roots are checked for it up front, tasks.topology.check_writable_roots.)
NOT_WRITABLE_ERRNOS = {errno.EROFS}
# PostgreSQL errors about the statement or the data, not the connection (psycopg2 class names).
_FINAL_DATABASE_ERRORS = {"DataError", "ProgrammingError"}


def is_final(exc: BaseException) -> bool:
    """Whether retrying cannot help: a FinalError, a full disk or quota, a read-only file system,
    or a database error
    about the statement or the data (a missing column, a value of the wrong type)."""
    if isinstance(exc, FinalError):
        return True
    if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS | NOT_WRITABLE_ERRNOS:
        return True
    return any(cls.__name__ in _FINAL_DATABASE_ERRORS and cls.__module__.startswith("psycopg2")
               for cls in type(exc).__mro__)


def one_line(exc: BaseException) -> str:
    """The error as one line for the task log and the failure alert."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
        text = f"out of space: {text}"
    return text
