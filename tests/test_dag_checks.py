"""The ecosystem's standard DAG checks over every file in dags/: those of the `astro dev init`
template (tests/dags/test_dag_example.py: no import errors, every DAG tagged, default_args
retries >= 2), plus a failure alert on every DAG, no Variable/Connection access at parse time, a
parse-time budget per file and no heavy library imported by parsing.

Each check is a function that returns the problems it finds (empty: none). Every check is also
run against a deliberately bad DAG file written to tmp_path, to prove it reports what it is for,
and a good one, to prove it does not report everything."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from unittest import mock

import pytest

from tasks.config import REPO_ROOT

DAG_FILES = sorted((REPO_ROOT / "dags").glob("*.py"))
MIN_RETRIES = 2  # the astro template's test_dag_retries
PARSE_BUDGET_S = 2.0  # per file, parsed by a fresh process that has Airflow imported already
HEAVY = ("torch", "transformers", "pandas", "sklearn", "great_expectations")
PARSE_TIME_ACCESS = "at DAG parse time"


# --- the checks ------------------------------------------------------------------------------


class ParseTimeAccess(RuntimeError):
    """A DAG file read a Variable or a Connection while it was parsed."""


@contextmanager
def variables_and_connections_fail() -> Iterator[None]:
    """Every way to read an Airflow Variable or Connection raises ParseTimeAccess.
    ``airflow.hooks.base.BaseHook`` is ``airflow.sdk.bases.hook.BaseHook`` (a deprecated alias),
    so patching the class covers both import paths."""
    from airflow import models  # the pre-3.0 Variable and Connection: old DAG code still uses them
    from airflow.sdk import BaseHook, Connection, Variable

    def refuse(what: str):
        def refused(*args, **kwargs):
            raise ParseTimeAccess(f"{what}({', '.join(map(repr, args))}) {PARSE_TIME_ACCESS}: read it "
                                  "inside a task, or use a template ({{ var.value.x }}, {{ conn.x }})")
        return refused

    targets = [(Variable, "get", "airflow.sdk.Variable.get"),
               (Connection, "get", "airflow.sdk.Connection.get"),
               (BaseHook, "get_connection", "BaseHook.get_connection"),
               (models.Variable, "get", "airflow.models.Variable.get"),  # noqa: AIR311
               (models.Connection, "get_connection_from_secrets",  # noqa: AIR311
                "airflow.models.Connection.get_connection_from_secrets")]
    with ExitStack() as stack:
        for owner, name, what in targets:
            stack.enter_context(mock.patch.object(owner, name, side_effect=refuse(what)))
        yield


def parse(path: Path):
    """A DagBag of ``path`` (a file or a folder), parsed while Variables and Connections fail."""
    from airflow.dag_processing.dagbag import DagBag

    with variables_and_connections_fail():
        return DagBag(dag_folder=str(path))


def import_errors(bag) -> list[str]:
    return [f"{Path(file).name}: {error.strip().splitlines()[-1]}" for file, error in bag.import_errors.items()]


def parse_time_access(bag) -> list[str]:
    return [f"{Path(file).name}: {next(line for line in error.splitlines() if PARSE_TIME_ACCESS in line).strip()}"
            for file, error in bag.import_errors.items() if PARSE_TIME_ACCESS in error]


def untagged(bag) -> list[str]:
    return [f"{dag_id} in {Path(dag.fileloc).name} has no tags" for dag_id, dag in bag.dags.items() if not dag.tags]


def too_few_retries(bag) -> list[str]:
    return [f"{dag_id} in {Path(dag.fileloc).name}: default_args retries = {dag.default_args.get('retries')!r}, "
            f"not >= {MIN_RETRIES}"
            for dag_id, dag in bag.dags.items()
            if not isinstance(dag.default_args.get("retries"), int) or dag.default_args["retries"] < MIN_RETRIES]


def no_failure_alert(bag) -> list[str]:
    return [f"{dag_id} in {Path(dag.fileloc).name} has no on_failure_callback"
            for dag_id, dag in bag.dags.items() if not dag.on_failure_callback]


MEASURE = """
import json, sys, time
import airflow.sdk
from airflow.dag_processing.dagbag import DagBag

start = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "dags": sorted(bag.dags), "import_errors": len(bag.import_errors),
                  "heavy": [m for m in sys.argv[2:] if m in sys.modules]}))
"""


def measure(path: Path) -> dict:
    """Parse ``path`` with a DagBag in a fresh process, as the dag-processor does (Airflow is
    imported before the clock starts: the processor has it already): the seconds it took and
    which heavy libraries are in sys.modules afterwards."""
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path), *HEAVY], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return {"file": path.name, **json.loads(out.stdout.strip().splitlines()[-1])}


def too_slow(measured: dict) -> list[str]:
    return ([f"{measured['file']} parses in {measured['seconds']:.2f} s (budget {PARSE_BUDGET_S} s)"]
            if measured["seconds"] >= PARSE_BUDGET_S else [])


def heavy_imports(measured: dict) -> list[str]:
    return [f"{measured['file']} imports {module} when parsed" for module in measured["heavy"]]


# --- the real DAG files ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def dagbag():
    return parse(REPO_ROOT / "dags")


@pytest.fixture(scope="module")
def measured() -> list[dict]:
    return [measure(path) for path in DAG_FILES]


def test_every_dag_file_imports_without_errors_and_defines_a_dag(dagbag):
    assert import_errors(dagbag) == []
    assert {Path(dag.fileloc).name for dag in dagbag.dags.values()} == {path.name for path in DAG_FILES}
    assert set(dagbag.dags) >= {"textclf_retrain", "textclf_promote", "textclf_maintenance"}


def test_no_dag_file_reads_a_variable_or_connection_when_parsed(dagbag):
    assert parse_time_access(dagbag) == []


def test_every_dag_is_tagged(dagbag):
    assert untagged(dagbag) == []


def test_every_dag_retries_its_tasks_at_least_twice(dagbag):
    assert too_few_retries(dagbag) == []


def test_every_dag_alerts_when_a_run_fails(dagbag):
    assert no_failure_alert(dagbag) == []


def test_every_dag_file_parses_within_the_budget(measured):
    print("parse seconds:", {m["file"]: round(m["seconds"], 3) for m in measured})
    assert [problem for m in measured for problem in too_slow(m)] == []
    assert all(m["dags"] and m["import_errors"] == 0 for m in measured), measured  # timed a real parse


def test_no_dag_file_imports_heavy_libraries_when_parsed(measured):
    assert [problem for m in measured for problem in heavy_imports(m)] == []


# --- each check catches a bad DAG file ---------------------------------------------------------

DAG_TEMPLATE = """
from datetime import UTC, datetime

from airflow.sdk import dag, task
{top}


def alert(context):
    pass


@dag(dag_id="{dag_id}", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC), catchup=False,
     tags={tags}, default_args={default_args}, on_failure_callback={callback})
def the_dag():
    @task
    def hello():
        return 1

    hello()


the_dag()
"""


def write_dag(folder: Path, name: str, *, top: str = "", tags: str = '["demo"]', retries: int | None = 2,
              callback: str = "alert") -> Path:
    default_args = {} if retries is None else {"retries": retries}
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(DAG_TEMPLATE).format(
        top=top, dag_id=name, tags=tags, default_args=default_args, callback=callback))
    return path


ALL_BAG_CHECKS = (import_errors, parse_time_access, untagged, too_few_retries, no_failure_alert)


def reported_by(bag) -> dict[str, list[str]]:
    return {check.__name__: problems for check in ALL_BAG_CHECKS if (problems := check(bag))}


def test_a_good_dag_file_passes_every_check(tmp_path):
    path = write_dag(tmp_path, "good")
    bag = parse(path)
    assert list(bag.dags) == ["good"] and reported_by(bag) == {}
    measured = measure(path)
    assert measured["dags"] == ["good"] and too_slow(measured) == heavy_imports(measured) == []


@pytest.mark.parametrize(("bad", "check", "expected"), [
    ({"top": "import no_such_module_for_textclf"}, "import_errors", "No module named 'no_such_module_for_textclf'"),
    ({"tags": "[]"}, "untagged", "has no tags"),
    ({"retries": 1}, "too_few_retries", "retries = 1, not >= 2"),
    ({"retries": None}, "too_few_retries", "retries = None"),
    ({"callback": "None"}, "no_failure_alert", "has no on_failure_callback"),
])
def test_each_dagbag_check_reports_a_bad_dag(tmp_path, bad, check, expected):
    bag = parse(write_dag(tmp_path, "bad", **bad))
    problems = reported_by(bag)
    assert list(problems) == [check]  # that check, and only that one
    [problem] = problems[check]
    assert expected in problem and "bad" in problem


@pytest.mark.filterwarnings("ignore:The `airflow.hooks.base.BaseHook` attribute is deprecated")
@pytest.mark.parametrize("top", [
    "from airflow.sdk import Variable\nTHRESHOLD = Variable.get('threshold')",
    "from airflow.sdk import Variable\nTHRESHOLD = Variable.get('threshold', default='0.5')",
    "from airflow.sdk import Connection\nDB = Connection.get('textclf_db')",
    "from airflow.hooks.base import BaseHook\nDB = BaseHook.get_connection('textclf_db')",
    "from airflow.sdk import BaseHook\nDB = BaseHook.get_connection('textclf_db')",
    "from airflow.models import Variable\nTHRESHOLD = Variable.get('threshold')",
])
def test_a_variable_or_connection_read_at_parse_time_is_reported(tmp_path, top):
    bag = parse(write_dag(tmp_path, "reads_at_parse_time", top=top))
    [problem] = parse_time_access(bag)
    assert problem.startswith("reads_at_parse_time.py: ") and PARSE_TIME_ACCESS in problem
    assert bag.dags == {}  # it is an import error too: the file defines nothing


def test_the_guard_is_lifted_after_parsing():
    from airflow.sdk import Variable

    with variables_and_connections_fail(), pytest.raises(ParseTimeAccess):
        Variable.get("anything")
    assert not isinstance(Variable.__dict__["get"], mock.Mock)


def test_a_heavy_import_at_the_top_of_a_dag_file_is_reported(tmp_path):
    measured = measure(write_dag(tmp_path, "heavy", top="import pandas"))
    assert measured["dags"] == ["heavy"]
    assert heavy_imports(measured) == ["heavy.py imports pandas when parsed"]


def test_a_slow_dag_file_is_reported(tmp_path):
    measured = measure(write_dag(tmp_path, "slow", top=f"import time\ntime.sleep({PARSE_BUDGET_S + 0.3})"))
    [problem] = too_slow(measured)
    assert problem.startswith("slow.py parses in ") and f"(budget {PARSE_BUDGET_S} s)" in problem
