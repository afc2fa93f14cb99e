"""The `textclf` command line, called in-process against the test database."""

from __future__ import annotations

import json

from conftest import register_tiny
from tasks import db
from tasks.cli import main


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_db_url_and_upgrade(settings, capsys):
    assert run(capsys, "db-url") == (0, settings.database_url + "\n", "")
    code, out, _ = run(capsys, "db", "upgrade")
    assert code == 0 and "migration 0008" in out


def test_import_reports_counts_and_where_rejects_went(settings, capsys, tmp_path):
    path = tmp_path / "docs.csv"
    path.write_text("id,text,created_at\n1,hello,2026-11-01\n2,,2026-11-01\n")
    code, out, _ = run(capsys, "import", "documents", str(path))
    assert code == 0
    assert "2 data rows -> 1 loaded" in out and "1 quarantined" in out
    assert "missing or empty text" in out and "textclf.quarantine" in out


def test_bad_input_is_a_clear_error_not_a_traceback(settings, capsys, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("identifier,body\n1,hello\n")
    code, _, err = run(capsys, "import", "labelled", str(path))
    assert code == 2 and "required column(s) ['id', 'text', 'label']" in err
    code, _, err = run(capsys, "predict", "--text", "hello")
    assert code == 2 and "no champion yet" in err


def test_registry_commands(settings, capsys, tiny_tfidf_dir):
    v1 = register_tiny(settings, tiny_tfidf_dir, key="a")
    v2 = register_tiny(settings, tiny_tfidf_dir, key="b")
    assert run(capsys, "champion")[0] == 1  # no champion yet
    code, _, err = run(capsys, "promote", str(v1), "--reason", "first", "--actor", "ops")
    # No Airflow listens here: nothing changes, and the error says what to do.
    assert code == 2 and "nothing was changed" in err and "--no-airflow" in err and "textclf_promote" in err
    assert run(capsys, "champion")[0] == 1
    assert run(capsys, "promote", str(v1), "--reason", "first", "--actor", "ops", "--no-airflow")[0] == 0
    assert run(capsys, "promote", str(v2), "--reason", "better", "--actor", "ops", "--no-airflow") == (
        0, f"model version {v2} is champion\n", "")
    code, out, _ = run(capsys, "champion")
    assert code == 0 and f"model version {v2}" in out
    code, out, _ = run(capsys, "rollback", "--actor", "ops", "--no-airflow")
    assert code == 0 and f"model version {v1} is champion again" in out

    with db.connect(settings) as conn, conn, conn.cursor() as cur:
        db.upsert_evaluation(cur, {"run_id": "night-9", "model_version": v1, "role": "champion",
                                   "test_rows": 10, "test_fingerprint": "f", "metrics": {"macro_f1": 0.8125}})
    code, out, _ = run(capsys, "models")
    [line] = [line for line in out.splitlines() if line.split()[:2] == [str(v1), "tfidf"]]
    assert line.split()[2:4] == ["1.0000", "0.8125"] and line.endswith("night-9")  # val beside test

    code, out, _ = run(capsys, "models", "--json")
    data = json.loads(out)
    assert [m["version"] for m in data["models"]] == [v1, v2]
    assert [m["is_champion"] for m in data["models"]] == [True, False]
    assert [h["model_version"] for h in data["champion_history"]] == [v1, v2, v1]

    code, out, _ = run(capsys, "predict", "--text", "love this wonderful day")
    result = json.loads(out)
    assert result["model_version"] == v1
    assert result["predictions"][0]["label"] == "positive"


def test_a_date_already_being_run_is_refused_in_one_line(settings, capsys):
    """Was: two of three concurrent runs of one date exited with a 276-line IntegrityError."""
    with db.run_date_lock(settings.database_url, "2026-11-20") as mine:
        assert mine
        code, _, err = run(capsys, "run", "--date", "2026-11-20")
    assert code == 1 and err.strip() == ("textclf run for 2026-11-20 is already in progress (another `textclf run` of "
                                         "that date holds its lock); wait for it to end, or stop it")
    with db.run_date_lock(settings.database_url, "2026-11-20") as mine:
        assert mine  # released with its connection


def test_run_and_db_upgrade_on_an_unreachable_database_are_one_line(capsys, monkeypatch):
    monkeypatch.setenv("TEXTCLF_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    for argv in (["db", "upgrade"], ["run", "--date", "2026-11-20"], ["models"]):
        code, out, err = run(capsys, *argv)
        assert code == 2 and err.startswith("textclf: error: cannot reach the database:"), (argv, err)
        assert len(err.strip().splitlines()) == 1, err


def test_terminal_control_characters_from_the_data_are_shown_escaped(settings, capsys, pg):
    """A label holding ESC sequences (a title change, colours) must not drive the reader's
    terminal: every CLI output shows them escaped."""
    from tasks.console import escape_controls

    assert escape_controls("pos\x1b]0;pwned\x07itive\t1\n") == "pos\\x1b]0;pwned\\x07itive\t1\n"
    with pg.cursor() as cur:
        cur.execute("INSERT INTO textclf.label_sets (labels, origin) VALUES (%s, 'test')",
                    ('["neg\\u001b[31mative", "positive"]',))
    code, out, _ = run(capsys, "labels")
    assert code == 0 and "\x1b" not in out and "neg\\x1b[31mative" in out
