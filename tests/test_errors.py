"""Which errors end a task on its first try and which are retried (tasks.errors.is_final), and
the one line each leaves. The DAG applies it in dags/textclf_retrain.py::_run; the end-to-end
proof is tests/test_dag.py::test_a_configuration_error_fails_on_the_first_try."""

from __future__ import annotations

import errno

import psycopg2
import psycopg2.errors
import pytest

from tasks import errors


@pytest.mark.parametrize(("exc", "final"), [
    # Configuration, bad input or data, artifacts and schema: a retry fails the same way.
    (errors.ConfigError("[source] labelled_at: unusable column type"), True),
    (errors.InputError("--date 2031-01-01 is in the future"), True),
    (errors.ImportError_("required column 'text' is missing"), True),
    (errors.RegistryError("model version 9 does not exist"), True),
    (errors.ChecksumMismatch("artifact has sha256 x, registered y"), True),
    (errors.SchemaNotCurrent("run textclf db upgrade"), True),
    (OSError(errno.ENOSPC, "No space left on device"), True),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
    (OSError(errno.EROFS, "Read-only file system"), True),
    (PermissionError(errno.EACCES, "Permission denied"), False),  # s3fs: expired credentials, say
    (psycopg2.errors.UndefinedColumn("column \"txt\" does not exist"), True),
    (psycopg2.errors.InvalidTextRepresentation("invalid input syntax for type integer"), True),
    # Connections, workers, locks: the next try may well succeed.
    (psycopg2.OperationalError("server closed the connection unexpectedly"), False),
    (psycopg2.errors.SerializationFailure("could not serialize access"), False),
    (errors.ChampionLocked("another champion change holds the lock"), False),
    (errors.AirflowUnreachable("connection refused"), False),
    (ConnectionResetError("worker lost"), False),
    (OSError(errno.EIO, "Input/output error"), False),
    (TimeoutError("read timed out"), False),
    (RuntimeError("something unexpected"), False),
])
def test_each_error_class_and_its_retry_behaviour(exc, final):
    assert errors.is_final(exc) is final


def test_the_message_is_one_line_and_says_out_of_space():
    assert errors.one_line(errors.ConfigError("bad\n  value\tfor x")) == "bad value for x"
    line = errors.one_line(OSError(errno.ENOSPC, "No space left on device"))
    assert line.startswith("out of space:") and "\n" not in line
    assert errors.one_line(ValueError()) == "ValueError"


def test_every_textclf_error_lives_in_errors_py():
    """One rule, stated in the README's layout table: every exception class is in tasks/errors.py."""
    import ast

    from tasks.config import REPO_ROOT

    elsewhere = []
    for path in (REPO_ROOT / "tasks").rglob("*.py"):
        if path.name == "errors.py" or "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    ast.unparse(b).endswith(("Error", "Exception", "Mismatch")) for b in node.bases):
                elsewhere.append(f"{path.name}:{node.name}")
    assert elsewhere == []
