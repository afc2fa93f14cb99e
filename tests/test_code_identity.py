"""Code identity: the code version in the training key is a hash of the source, so a code fix
trains again on a re-run or backfill, and the same source reuses its models whatever commit or
image it ran from."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import fetch, register_tiny
from support import seed
from tasks import registry
from tasks.airflow_env import manual_run_interval
from tasks.cli import main
from tasks.config import REPO_ROOT
from tasks.pipeline import RunOptions, extract_step, train_step, validate_step

DAY = datetime(2026, 11, 20, tzinfo=UTC)
TRAINING = Path("tasks/candidates/tfidf/training.py")


def copy_code(destination: Path) -> Path:
    """The repository's code folders, without .git (as in an image)."""
    for folder in registry.CODE_FOLDERS:
        shutil.copytree(REPO_ROOT / folder, destination / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return destination


def flip_last_byte(path: Path) -> bytes:
    original = path.read_bytes()
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    return original


@pytest.fixture
def code_copy(tmp_path) -> Path:
    return copy_code(tmp_path / "src")


def test_the_hash_follows_the_source_bytes_and_nothing_else(code_copy):
    before = registry.source_hash(code_copy)
    assert re.fullmatch(r"src-[0-9a-f]{16}", before)
    original = flip_last_byte(code_copy / TRAINING)
    assert registry.source_hash(code_copy) != before
    (code_copy / TRAINING).write_bytes(original)
    assert registry.source_hash(code_copy) == before
    # Bytecode and templates are not source; an expectation suite is.
    cache = code_copy / TRAINING.parent / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "x.pyc").write_bytes(b"\0bytecode")
    (code_copy / "plugins" / "textclf_templates" / "registry.html").write_text("<p>new page</p>")
    assert registry.source_hash(code_copy) == before
    flip_last_byte(code_copy / "expectations" / "labelled_rows.json")
    assert registry.source_hash(code_copy) != before


def test_the_hash_needs_no_git(code_copy):
    """Run from the copy (no .git, like every image): the copy's own package computes it."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TEXTCLF_CODE_ROOT", "TEXTCLF_CODE_VERSION", "TEXTCLF_EXPECTATIONS_DIR")}
    env["PYTHONPATH"] = str(code_copy)
    script = ("import json; from tasks import registry; "
              "print(json.dumps([str(registry.REPO_ROOT), registry.code_identity()]))")
    done = subprocess.run([sys.executable, "-c", script], cwd=code_copy, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    root, identity = json.loads(done.stdout.splitlines()[-1])
    assert Path(root) == code_copy.resolve()
    assert identity["source"] == registry.source_hash(code_copy) != "textclf-0.1.0"
    assert identity["git_commit"] is None and identity["git_dirty"] is None


def test_commit_and_image_are_recorded_but_not_in_the_training_key(code_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTCLF_CODE_ROOT", str(code_copy))
    args = ("tfidf", {"alpha": 1e-4}, ["neg", "pos"], {"rows": 3})
    key = registry.training_key(*args)
    monkeypatch.setenv("TEXTCLF_CODE_VERSION", "textclf-airflow:2026-12-01")
    monkeypatch.setattr(registry, "_git_state", lambda root: {"git_commit": "f" * 40, "git_dirty": True})
    assert registry.code_identity() == {
        "source": registry.source_hash(code_copy), "git_commit": "f" * 40, "git_dirty": True,
        "image": "textclf-airflow:2026-12-01", "package": registry._package_version()}
    assert registry.training_key(*args) == key
    fixed = copy_code(tmp_path / "fixed")
    flip_last_byte(fixed / TRAINING)
    monkeypatch.setenv("TEXTCLF_CODE_ROOT", str(fixed))
    assert registry.training_key(*args) != key


@pytest.mark.skipif(not (REPO_ROOT / ".git").exists(), reason="not a git checkout")
def test_a_checkout_records_its_commit():
    state = registry._git_state(str(REPO_ROOT))
    assert re.fullmatch(r"[0-9a-f]{40}", state["git_commit"]) and isinstance(state["git_dirty"], bool)


def test_a_code_change_trains_again_and_the_same_code_reuses(settings, pg, code_copy, tmp_path, monkeypatch):
    start, end = manual_run_interval(DAY.date())
    seed(settings, days=3, per_day=60, end=end)
    validation = validate_step(settings, "run-1", DAY, extract_step(settings, "run-1", start, end))
    options = RunOptions(candidates=("tfidf",))
    monkeypatch.setenv("TEXTCLF_CODE_ROOT", str(code_copy))
    monkeypatch.setenv("TEXTCLF_CODE_VERSION", "image-1")
    first = train_step(settings, "tfidf", "run-1", DAY, validation, options)
    assert "reused" not in first
    monkeypatch.setenv("TEXTCLF_CODE_VERSION", "image-2")  # another image of the same source
    again = train_step(settings, "tfidf", "run-2", DAY, validation, options)
    assert (again["version"], again.get("reused")) == (first["version"], True)

    fixed = copy_code(tmp_path / "fixed")
    flip_last_byte(fixed / TRAINING)  # the code fix a backfill must not ignore
    monkeypatch.setenv("TEXTCLF_CODE_ROOT", str(fixed))
    third = train_step(settings, "tfidf", "run-3", DAY, validation, options)
    assert "reused" not in third and third["version"] != first["version"]

    rows = fetch(pg, "SELECT version, code_version, code_identity, training_key "
                     "FROM textclf.model_versions ORDER BY version")
    assert [(v, code) for v, code, _, _ in rows] == [
        (first["version"], registry.source_hash(code_copy)),
        (third["version"], registry.source_hash(fixed))]
    assert rows[0][2] == {"source": registry.source_hash(code_copy), "git_commit": None,
                          "git_dirty": None, "image": "image-1", "package": registry._package_version()}
    assert rows[1][2]["image"] == "image-2" and rows[0][3] != rows[1][3]


def test_models_shows_the_code_version_and_json_the_identity(settings, tiny_tfidf_dir, capsys):
    version = register_tiny(settings, tiny_tfidf_dir)
    assert main(["models"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines()
                if line.split() and line.split()[0] == str(version))
    assert registry.code_version() in line
    assert main(["models", "--json"]) == 0
    (model,) = json.loads(capsys.readouterr().out)["models"]
    assert model["code_version"] == registry.code_version()
    assert model["code_identity"] == json.loads(json.dumps(registry.code_identity()))
