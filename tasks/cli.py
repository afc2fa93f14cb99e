"""`textclf`: the command line for everything outside the Airflow UI."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _settings(args):
    from tasks.config import load_settings

    return load_settings()


def _parse_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _parse_timestamp(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO timestamp") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, default=str))


# --- database ---------------------------------------------------------------------------


def cmd_db_url(args) -> int:
    from tasks import db

    print(db.database_url(_settings(args)))
    return 0


def cmd_db_upgrade(args) -> int:
    from tasks import db

    version = db.upgrade(db.database_url(_settings(args)))
    print(f"schema textclf at migration {version}")
    return 0


def cmd_import(args) -> int:
    from tasks.importer import CsvOptions, import_csv

    options = CsvOptions(
        id_column=args.id_column,
        text_column=args.text_column,
        label_column=args.label_column,
        timestamp_column=args.timestamp_column,
        encoding=args.encoding,
        delimiter=args.delimiter,
        timestamp_format=args.timestamp_format,
        max_text_length=args.max_text_length,
        weight_column=args.weight_column,
    )
    report = import_csv(_settings(args), args.kind, args.file, options, progress=True)
    print(report.summary())
    if report.quarantined:
        print("quarantined rows: SELECT * FROM textclf.quarantine WHERE source = "
              f"'{report.source}' ORDER BY source_row::bigint;")
    return 0


def cmd_demo_data(args) -> int:
    from tasks.demo_data import load_demo_data

    for report in load_demo_data(_settings(args)):
        print(report.summary())
    return 0


# --- running the pipeline ---------------------------------------------------------------


def cmd_run(args) -> int:
    from tasks import db
    from tasks.airflow_env import check_interval, manual_run_interval, run_dag_for_date
    from tasks.errors import RunInProgress

    settings = _settings(args)
    check_interval(*manual_run_interval(args.date))  # before Airflow starts, in one line
    db.upgrade(db.database_url(settings))  # like `textclf airflow`: this command sets things up
    log_path = settings.home / "logs" / f"run-{args.date}.log" if args.quiet else None
    try:
        code = run_dag_for_date(settings, args.date, conf=args.conf, log_path=log_path)
    except RunInProgress as exc:
        print(exc, file=sys.stderr)
        return 1
    if code != 0:
        print(f"textclf_retrain for {args.date} failed (exit {code})"
              + (f"; log: {log_path}" if log_path else ""), file=sys.stderr)
    return code


def _parse_setting(text: str) -> tuple[str, object]:
    """KEY=VALUE with VALUE read as TOML (numbers, true/false, lists, quoted strings), else text."""
    import tomllib

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    try:
        return key.strip(), tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key.strip(), value


def _run_steps_for_date(settings, day: date, kinds: list[str], options):
    from dataclasses import replace

    from tasks.airflow_env import manual_run_interval
    from tasks.errors import Skip
    from tasks.pipeline import extract_step, train_step, validate_step

    start, end = manual_run_interval(day)
    run_id = f"cli__{day.isoformat()}"
    validation = validate_step(settings, run_id, None, extract_step(settings, run_id, start, end))
    print(f"interval [{start}, {end}): {validation['new_rows']} new rows, "
          f"{validation['snapshot_rows']} in the snapshot, validation {validation['status']}")
    candidates = []
    for kind in kinds:
        try:
            candidates.append(train_step(settings, kind, run_id, None, validation,
                                         replace(options, candidates=tuple(kinds))))
            print(f"{kind}: model version {candidates[-1]['version']}")
        except Skip as reason:
            print(f"{kind}: skipped: {reason}")
    return run_id, validation, candidates


def cmd_train(args) -> int:
    from tasks.pipeline import RunOptions

    options = RunOptions(max_train_rows=args.max_train_rows, progress=sys.stderr.isatty(),
                         overrides={args.kind: dict(args.set or [])})
    _run_steps_for_date(_settings(args), args.date, [args.kind], options)
    return 0


def cmd_evaluate(args) -> int:
    from tasks.pipeline import RunOptions, evaluate_step

    settings = _settings(args)
    options = RunOptions(max_train_rows=args.max_train_rows, progress=sys.stderr.isatty(),
                         learning_curve=args.learning_curve)
    run_id, validation, candidates = _run_steps_for_date(
        settings, args.date, list(settings.candidates), options)
    result = evaluate_step(settings, run_id, validation, candidates, options)
    for row in result["leaderboard"]:
        print(f"  {row['name']:<20} macro-F1 {row['macro_f1']:.4f}")
    print(f"report: {result['report']}")
    return 0


# --- registry --------------------------------------------------------------------------


def cmd_models(args) -> int:
    from tasks import db, registry
    from tasks.console import print_history, print_leaderboard

    with db.transaction(_settings(args)) as cur:
        models = registry.list_models(cur)
        history = registry.champion_history(cur)
    if args.json:
        _print_json({"models": models, "champion_history": history})
        return 0
    print_leaderboard(models)
    print("\nchampion history:")
    print_history(history)
    return 0


def cmd_quarantine_list(args) -> int:
    from tasks import db

    with db.connect(_settings(args)) as conn, conn.cursor() as cur:
        rows = db.quarantined(cur, args.stage, args.source, args.limit, args.all)
    if args.json:
        _print_json(rows)
        return 0
    for r in rows:
        released = f"  released {r['released_at']:%Y-%m-%d} by {r['released_by']}" if r["released_at"] else ""
        print(f"{r['stage']:<10} {r['source']}  row {r['source_row']}: {r['reason']}{released}")
    print(f"({len(rows)} shown; SELECT * FROM textclf.quarantine for everything)")
    return 0


def cmd_quarantine_release(args) -> int:
    from tasks import db
    from tasks.errors import InputError

    settings = _settings(args)
    if not args.all and not args.row:
        raise InputError("name the rows to release (--row ID, repeatable) or --all")
    with db.connect(settings) as conn, conn, conn.cursor() as cur:
        released = db.release_quarantined(cur, settings.labelled_source.qualified_name,
                                          None if args.all else args.row, args.by)
    print(f"released {released} quarantine entr{'y' if released == 1 else 'ies'}: the next run "
          "validates those rows again")
    return 0


def cmd_gc(args) -> int:
    from tasks.retention import collect_garbage

    report = collect_garbage(_settings(args), dry_run=args.dry_run)
    for item in report.freed:
        print(f"  {'would delete' if report.dry_run else 'deleted'} {item.what}: {item.where} "
              f"({item.bytes / 2**20:.1f} MiB)")
    print(report.summary())
    return 0


def _reach_airflow(settings, args):
    """The champion asset of Airflow, reached before anything changes (None with
    --no-airflow): a change Airflow is not told about would not run the DAGs scheduled on it."""
    from tasks.airflow_client import AirflowUnreachable, ChampionAsset

    if args.no_airflow:
        return None
    try:
        return ChampionAsset(settings)
    except AirflowUnreachable as exc:
        raise AirflowUnreachable(f"{exc}; nothing was changed. Use the textclf_promote DAG in "
                                 "Airflow, set [airflow] api_url / TEXTCLF_AIRFLOW_API_URL, or pass "
                                 "--no-airflow to change the champion without telling Airflow") from None


def _tell_airflow(asset, change: str, version: int, reason: str, actor: str) -> None:
    from tasks.airflow_client import AirflowUnreachable

    try:
        event = asset.emit({"version": version, "change": change, "reason": reason, "actor": actor})
    except AirflowUnreachable as exc:
        raise AirflowUnreachable(f"model version {version} is champion, but posting the asset event "
                                 f"failed ({exc}): DAGs scheduled on textclf_champion did not run") from None
    print(f"Airflow told: event {event} on the textclf_champion asset")


def cmd_promote(args) -> int:
    from tasks import db, registry

    settings = _settings(args)
    asset = _reach_airflow(settings, args)
    with db.transaction(settings) as cur:
        changed = registry.set_champion(
            cur, settings, args.version, reason=args.reason, actor=args.actor, decision="manual"
        )
    print(f"model version {args.version} is champion"
          + ("" if changed else " (it already was; decision recorded)"))
    if asset is not None and changed:
        _tell_airflow(asset, "manual promotion", args.version, args.reason, args.actor)
    return 0


def cmd_rollback(args) -> int:
    from tasks import db, registry

    settings = _settings(args)
    asset = _reach_airflow(settings, args)
    with db.transaction(settings) as cur:
        version = registry.rollback(cur, settings, actor=args.actor, reason=args.reason)
    print(f"rolled back: model version {version} is champion again")
    if asset is not None:
        _tell_airflow(asset, "rollback", version, args.reason, args.actor)
    return 0


def cmd_champion(args) -> int:
    from tasks import db, registry
    from tasks.airflow_env import manual_run_interval

    if args.for_date is not None:
        start, end = manual_run_interval(args.for_date)
        with db.transaction(_settings(args)) as cur:
            version = registry.champion_of(cur, end)
        interval = f"the data interval [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}) UTC of {args.for_date}"
        if version is None:
            print(f"no champion decided {interval}")
            return 1
        print(f"model version {version} decided {interval} (what a run or backfill of that date predicts with)")
        return 0
    with db.transaction(_settings(args)) as cur:
        version = registry.current_champion(cur, args.at)
    when = args.at.isoformat() if args.at else "now"
    if version is None:
        print(f"no champion at {when}")
        return 1
    print(f"champion at {when}: model version {version}")
    return 0


def cmd_labels(args) -> int:
    from tasks import db

    settings = _settings(args)
    history: list[dict[str, Any]]
    if settings.labels:
        history = [{"labels": list(settings.labels), "origin": "configured (labels in textclf.toml or TEXTCLF_LABELS)",
                    "run_id": None, "created_at": None}]
    else:
        with db.transaction(settings) as cur:
            history = db.label_set_history(cur)
    if args.json:
        _print_json(history)
        return 0
    if not history:
        print("no label set yet: the first snapshot with two or more labels of at least min_label_rows "
              f"rows each ({settings.min_label_rows}) decides it")
        return 1
    current = history[-1]
    print(f"labels ({len(current['labels'])}): {', '.join(current['labels'])}")
    counts = _source_label_counts(settings)
    if counts is not None:
        print("rows in the source: " + ", ".join(f"{label} {counts.get(label, 0):,}" for label in current["labels"]))
        if absent := [label for label in current["labels"] if not counts.get(label)]:
            print(f"no row carries {', '.join(map(repr, absent))}: macro-F1 leaves it out; to retire it, list the "
                  "real labels as `labels = [...]` in textclf.toml")
    when = f" on {current['created_at']:%Y-%m-%d %H:%M %Z}" if current["created_at"] else ""
    print(f"from: {current['origin']}" + (f", run {current['run_id']}" if current["run_id"] else "") + when)
    print(f"compared after NFKC and trimming{', case folded' if settings.label_case_fold else ''} "
          "(label_case_fold)")
    for earlier in history[:-1]:
        print(f"  earlier: {', '.join(earlier['labels'])} ({earlier['origin']}, {earlier['created_at']:%Y-%m-%d})")
    return 0


def _source_label_counts(settings) -> dict[str, int] | None:
    """Rows per normalised label in the labelled source; None when the source cannot be read."""
    from collections import Counter

    from tasks import db
    from tasks.errors import ConfigError
    from tasks.normalize import normalize_label

    counts: Counter[str] = Counter()
    try:
        with db.transaction(settings) as cur, db.reading_source(settings.labelled_source, "labelled_source"):
            for raw, rows in db.label_counts(cur, settings.labelled_source):
                if (label := normalize_label(raw, settings.label_case_fold)) is not None:
                    counts[label] += rows
    except ConfigError:
        return None
    return dict(counts)


def cmd_predict(args) -> int:
    from tasks.predict import predict_texts

    texts = args.text if args.text is not None else [line.rstrip("\n") for line in sys.stdin]
    version, results = predict_texts(_settings(args), texts, args.version)
    _print_json({"model_version": version, "predictions": results})
    return 0


# --- the demo and the Airflow services ---------------------------------------------------


def cmd_demo(args) -> int:
    from tasks.demo import run_demo

    return run_demo(_settings(args), days=args.days, full=args.full)


def cmd_airflow(args) -> int:
    from tasks.services import serve

    return serve(_settings(args), port=args.port, host=args.host)


def build_parser() -> argparse.ArgumentParser:
    from tasks.candidates import KINDS

    parser = argparse.ArgumentParser(
        prog="textclf", description="Keep text classifiers fresh: PostgreSQL, GX, Airflow."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("db-url", help="print the database URL in use").set_defaults(func=cmd_db_url)
    db_parser = sub.add_parser("db", help="database schema")
    db_sub = db_parser.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply migrations (idempotent)").set_defaults(
        func=cmd_db_upgrade
    )

    imp = sub.add_parser("import", help="load a CSV file into a source table")
    imp.add_argument("kind", choices=["labelled", "documents"])
    imp.add_argument("file", type=Path)
    imp.add_argument("--id-column", default="id")
    imp.add_argument("--text-column", default="text")
    imp.add_argument("--label-column", default="label")
    imp.add_argument("--timestamp-column", default=None,
                     help="default: labelled_at / created_at when present, else now")
    imp.add_argument("--timestamp-format", default=None, help="strptime format (default ISO 8601)")
    imp.add_argument("--encoding", default="utf-8")
    imp.add_argument("--delimiter", default=",")
    imp.add_argument("--max-text-length", type=int, default=None)
    imp.add_argument("--weight-column", default=None,
                     help="labelled: trust in each label (e.g. annotator confidence), >= 0")
    imp.set_defaults(func=cmd_import)

    sub.add_parser("demo-data", help="load the demo tweets (idempotent)").set_defaults(
        func=cmd_demo_data
    )

    run = sub.add_parser("run", help="run the textclf_retrain DAG for one logical date")
    run.add_argument("--date", type=_parse_date, required=True)
    run.add_argument("--conf", help="DAG run conf (JSON), e.g. '{\"candidates\": [\"tfidf\"]}'")
    run.add_argument("--quiet", action="store_true", help="send Airflow's log to a file")
    run.set_defaults(func=cmd_run)

    train = sub.add_parser("train", help="train one candidate for a date, outside Airflow")
    train.add_argument("--kind", choices=list(KINDS), required=True)
    train.add_argument("--date", type=_parse_date, required=True)
    train.add_argument("--max-train-rows", type=int, help="train on the newest N training rows")
    train.add_argument("--set", type=_parse_setting, action="append", metavar="KEY=VALUE",
                       help="override one setting of the kind's config (e.g. epochs=2); repeatable")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="train the configured candidates and evaluate")
    evaluate.add_argument("--date", type=_parse_date, required=True)
    evaluate.add_argument("--max-train-rows", type=int)
    evaluate.add_argument("--learning-curve", action="store_true")
    evaluate.set_defaults(func=cmd_evaluate)

    models = sub.add_parser("models", help="model versions, champion and its history")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=cmd_models)

    promote = sub.add_parser("promote", help="make a model version champion (manual)")
    promote.add_argument("version", type=int)
    promote.add_argument("--reason", required=True)
    promote.add_argument("--actor", default=getpass.getuser())
    promote.add_argument("--no-airflow", action="store_true",
                         help="do not post the champion asset event to Airflow")
    promote.set_defaults(func=cmd_promote)

    rollback = sub.add_parser("rollback", help="back to the previous champion")
    rollback.add_argument("--reason", default="rollback")
    rollback.add_argument("--actor", default=getpass.getuser())
    rollback.add_argument("--no-airflow", action="store_true",
                          help="do not post the champion asset event to Airflow")
    rollback.set_defaults(func=cmd_rollback)

    quarantine = sub.add_parser("quarantine", help="rows set aside by import, validation or scoring")
    quarantine_sub = quarantine.add_subparsers(dest="quarantine_command", required=True)
    listing = quarantine_sub.add_parser("list", help="the latest quarantined rows and why")
    listing.add_argument("--stage", choices=["import", "validation", "prediction"])
    listing.add_argument("--source", help="a file path or schema.table")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--all", action="store_true", help="released entries too")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_quarantine_list)
    release = quarantine_sub.add_parser(
        "release", help="let rows quarantined by validation back (e.g. after fixing the label set)")
    release.add_argument("--row", action="append", help="the row's id in the labelled source (repeatable)")
    release.add_argument("--all", action="store_true", help="every row of the labelled source")
    release.add_argument("--by", default=getpass.getuser(), help="who releases them (recorded)")
    release.set_defaults(func=cmd_quarantine_release)

    gc = sub.add_parser("gc", help="delete old artifacts, run folders and checkpoints ([retention])")
    gc.add_argument("--dry-run", action="store_true", help="list what would go, delete nothing")
    gc.set_defaults(func=cmd_gc)

    champion = sub.add_parser("champion", help="which model version was champion at a time")
    when = champion.add_mutually_exclusive_group()
    when.add_argument("--at", type=_parse_timestamp, help="champion at this moment (ISO timestamp, default now)")
    when.add_argument("--for-date", type=_parse_date,
                      help="the model that decided logical date D's data interval (the one its runs and backfills use)")
    champion.set_defaults(func=cmd_champion)

    labels = sub.add_parser("labels", help="the label set and where it came from")
    labels.add_argument("--json", action="store_true")
    labels.set_defaults(func=cmd_labels)

    predict = sub.add_parser("predict", help="label texts with the champion")
    predict.add_argument("--text", action="append", help="a text (repeatable; default stdin)")
    predict.add_argument("--version", type=int, help="a model version instead of the champion")
    predict.set_defaults(func=cmd_predict)

    demo = sub.add_parser("demo", help="the whole pipeline on the demo corpus, end to end")
    demo.add_argument("--days", type=int, default=3, help="logical dates to run, oldest first")
    demo.add_argument("--full", action="store_true",
                      help="full-size BERT budget (all rows, more epochs; slow on a CPU)")
    demo.set_defaults(func=cmd_demo)

    airflow = sub.add_parser("airflow", help="start the Airflow services with textclf's DAGs")
    airflow.add_argument("--port", type=int, default=8080)
    airflow.add_argument("--host", default="127.0.0.1", help="address the api-server listens on")
    airflow.set_defaults(func=cmd_airflow)
    return parser


def main(argv: list[str] | None = None) -> int:
    from tasks.console import SafeOutput

    args = build_parser().parse_args(argv)
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = SafeOutput(stdout), SafeOutput(stderr)
    try:
        return _main(args)
    finally:
        sys.stdout, sys.stderr = stdout, stderr


def _main(args) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    import psycopg2

    from tasks.errors import AirflowUnreachable, ChampionLocked, FinalError, one_line

    try:
        return args.func(args)
    except (FinalError, FileNotFoundError, ChampionLocked, AirflowUnreachable) as exc:
        print(f"textclf: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except psycopg2.OperationalError as exc:
        return _unreachable(exc)
    except Exception as exc:
        # Migrations (`db upgrade`, `run`) go through SQLAlchemy, which wraps libpq's error.
        if isinstance(getattr(exc, "orig", None), psycopg2.OperationalError):
            return _unreachable(exc.orig)  # type: ignore[attr-defined]
        raise


def _unreachable(exc: BaseException) -> int:
    from tasks.errors import one_line

    # libpq names the host and port, never the password; one line, not a traceback.
    print(f"textclf: error: cannot reach the database: {one_line(exc)} (check TEXTCLF_DATABASE_URL "
          "or the textclf_db connection; --verbose shows more)", file=sys.stderr)
    return 2

if __name__ == "__main__":
    sys.exit(main())
