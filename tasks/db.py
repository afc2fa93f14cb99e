"""The only module that talks SQL.

Every statement is parameterised; identifiers coming from configuration were validated in
``tasks.config`` and are quoted here with ``psycopg2.sql.Identifier``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import psycopg2
import psycopg2.extras
from psycopg2 import sql

from tasks.config import Settings, SourceTable
from tasks.errors import ChampionLocked, ConfigError, SchemaNotCurrent

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
EMBEDDED_DATABASE = "textclf"
_upgraded: set[str] = set()


# --- where the database is -------------------------------------------------------------


CONNECTION_ID = "textclf_db"  # the Airflow connection inside Airflow
# libpq connection parameters an Airflow connection's extras may carry into the URL; other
# extras (cursor, iam, ...) mean something to Airflow's hook only and are left out.
LIBPQ_PARAMETERS = frozenset({
    "application_name", "channel_binding", "client_encoding", "connect_timeout", "gssencmode",
    "hostaddr", "keepalives", "keepalives_count", "keepalives_idle", "keepalives_interval",
    "krbsrvname", "load_balance_hosts", "options", "passfile", "require_auth", "service",
    "ssl_max_protocol_version", "ssl_min_protocol_version", "sslcert", "sslcertmode",
    "sslcompression", "sslcrl", "sslcrldir", "sslkey", "sslmode", "sslnegotiation",
    "sslpassword", "sslrootcert", "sslsni", "target_session_attrs", "tcp_user_timeout",
})


def connection_url(
    host: str | None,
    port: int | str | None,
    login: str | None,
    password: str | None,
    database: str | None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """A libpq URL from an Airflow connection's fields, its libpq extras (sslmode, sslrootcert,
    options, ...) kept as query parameters. Percent-encoded throughout: libpq does not read '+'
    as a space, so Airflow's own ``get_uri()`` breaks ``options = "-c x=1"``."""
    auth = quote(login or "postgres", safe="")
    if password:
        auth += ":" + quote(password, safe="")
    host = host or "127.0.0.1"
    params = {key: value for key, value in (extra or {}).items()
              if key in LIBPQ_PARAMETERS and value is not None}
    if host.startswith("/"):  # a Unix-socket directory (the embedded server) goes in the query
        params["host"], host = host, ""
    netloc = f"{auth}@{host}" + (f":{port}" if port else "")
    url = f"postgresql://{netloc}/{quote(database or 'postgres', safe='')}"
    query = [f"{quote(str(key), safe='')}={quote(str(value), safe='')}" for key, value in sorted(params.items())]
    return url + ("?" + "&".join(query) if query else "")


def connection_url_from_env(raw: str) -> str:
    """``AIRFLOW_CONN_TEXTCLF_DB`` (Airflow's JSON or URI form) as a libpq URL, extras kept."""
    if raw.lstrip().startswith("{"):
        conn = json.loads(raw)
        extra = conn.get("extra") or {}
        return connection_url(conn.get("host"), conn.get("port"), conn.get("login"),
                              conn.get("password"), conn.get("schema"),
                              json.loads(extra) if isinstance(extra, str) else extra)
    parts = urlsplit(raw)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    extra = json.loads(query.pop("__extra__")) if "__extra__" in query else query
    return connection_url(parts.hostname, parts.port, unquote(parts.username or "") or None,
                          unquote(parts.password or "") or None, unquote(parts.path.lstrip("/")) or None,
                          extra)


def inside_airflow() -> bool:
    """Whether this process is an Airflow component or task (they set this variable)."""
    return bool(os.environ.get("_AIRFLOW_PROCESS_CONTEXT") or os.environ.get("AIRFLOW_CTX_DAG_ID"))


def embedded_server(home: Path, directory: str = "pg"):
    """Start (or reuse) the embedded PostgreSQL under ``home/directory``; it outlives this
    process and listens on a Unix socket in that directory."""
    import warnings

    home.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset on servers
        import pgserver

        return pgserver.get_server(home / directory, cleanup_mode=None)


def _embedded_url(home: Path) -> str:
    server = embedded_server(home)
    exists = server.psql(
        f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DATABASE}';"
    )
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {EMBEDDED_DATABASE};")
    return server.get_uri(EMBEDDED_DATABASE)


def database_url(settings: Settings) -> str:
    """Where the project database is; every entry point asks this one function.

    1. ``settings.database_url``: ``TEXTCLF_DATABASE_URL``, or inside Airflow the
       `textclf_db` connection (the DAG and the plugin resolve it through Airflow and pass it
       here);
    2. ``AIRFLOW_CONN_TEXTCLF_DB`` in the environment (the compose stack's workers);
    3. outside Airflow only: the embedded PostgreSQL under ``$TEXTCLF_HOME/pg``. Inside
       Airflow a missing connection is an error, never a private server in a worker.
    """
    if settings.database_url:
        return settings.database_url
    if os.environ.get("AIRFLOW_CONN_TEXTCLF_DB"):
        return connection_url_from_env(os.environ["AIRFLOW_CONN_TEXTCLF_DB"])
    if inside_airflow():
        raise missing_connection()
    return _embedded_url(settings.home)


def missing_connection() -> ConfigError:
    return ConfigError(
        f"the Airflow connection {CONNECTION_ID!r} is not defined: add it (Admin > Connections, "
        "or AIRFLOW_CONN_TEXTCLF_DB) pointing at the textclf PostgreSQL database"
    )


def masked(url: str) -> str:
    """A URL or URI as it may be shown in a log or a page: any password replaced by ***."""
    return re.sub(r"(://[^:/@\s]+:)[^@/\s]*@", r"\1***@", url)


def sqlalchemy_url(url: str, database: str | None = None) -> str:
    """The same server as ``url`` in SQLAlchemy form, optionally another database on it."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    parsed = parsed.set(drivername="postgresql+psycopg2")
    if database:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def ensure_database(url: str, database: str) -> None:
    """Create ``database`` on the server of ``url`` if it does not exist."""
    conn = psycopg2.connect(url)
    conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    except (psycopg2.errors.DuplicateDatabase, psycopg2.errors.UniqueViolation):
        # Created concurrently by another process: two first runs on one home race between the
        # check and CREATE DATABASE, and the loser sees either error depending on the moment.
        pass
    finally:
        conn.close()


# --- connections and migrations ----------------------------------------------------------


def upgrade(url: str) -> str:
    """Bring schema ``textclf`` to the newest migration; idempotent and safe to run concurrently."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    command.upgrade(cfg, "head")
    _upgraded.add(url)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT version_num FROM textclf.alembic_version")
        (version,) = cur.fetchone()
    conn.close()
    return version


def head_revision() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head, "no migrations"
    return head


def check_schema(conn, url: str) -> None:
    """Refuse to work on a schema other than the newest migration (once per process and URL).
    Migrations run only through `textclf db upgrade` (the compose init service, `textclf demo`,
    `textclf airflow`), never as a side effect of some process's first connection."""
    if url in _upgraded:
        return
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('textclf.alembic_version')")
        current = None
        if cur.fetchone()[0]:
            cur.execute("SELECT version_num FROM textclf.alembic_version")
            row = cur.fetchone()
            current = row[0] if row else None
    conn.rollback()
    head = head_revision()
    if current != head:
        raise SchemaNotCurrent(
            f"the textclf schema of this database is at migration {current or 'none'}, this code needs "
            f"{head}: run `textclf db upgrade` (with the same database settings) first"
        )
    _upgraded.add(url)


@contextmanager
def connect(settings: Settings, *, check: bool = True) -> Iterator[psycopg2.extensions.connection]:
    """A connection to the configured database, whose schema must be current (see check_schema)."""
    url = database_url(settings)
    conn = psycopg2.connect(url, application_name="textclf")
    try:
        if check:
            check_schema(conn, url)
        # Naive `timestamp without time zone` source columns are read in source_timezone: the
        # session's zone is what PostgreSQL uses to compare and convert them (timestamptz
        # columns are absolute and unaffected).
        with conn.cursor() as cur:
            cur.execute("SELECT set_config('TimeZone', %s, false)", (settings.source_timezone,))
        conn.commit()
        yield conn
    finally:
        conn.close()


@contextmanager
def transaction(settings: Settings) -> Iterator[psycopg2.extensions.cursor]:
    """One connection, one transaction: a cursor whose work commits together on exit, or rolls
    back on an exception. What a pipeline step or a registry decision runs in."""
    with connect(settings) as conn, conn, conn.cursor() as cur:
        yield cur


@contextmanager
def reading_source(source: SourceTable, setting: str) -> Iterator[None]:
    """A source table or view that is missing, lacks a configured column or may not be read is
    a configuration problem: say which, instead of a database traceback."""
    try:
        yield
    except (psycopg2.errors.UndefinedTable, psycopg2.errors.UndefinedColumn,
            psycopg2.errors.InsufficientPrivilege, psycopg2.errors.UndefinedFunction) as exc:
        detail = (exc.pgerror or str(exc)).strip().splitlines()[0]
        raise ConfigError(f"[{setting}] {source.qualified_name}: {detail} (check the table, its columns "
                          f"and the grants against [{setting}] in textclf.toml)") from None


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def _table(source: SourceTable) -> sql.Composed:
    return sql.SQL("{}.{}").format(_ident(source.schema), _ident(source.table))


# --- import ----------------------------------------------------------------------------

STAGING_COLUMNS = ("line_no", "id", "text", "label", "ts", "ts_defaulted", "weight")


def create_import_staging(cur) -> None:
    cur.execute(
        """
        CREATE TEMP TABLE import_staging (
            line_no bigint NOT NULL,
            id text NOT NULL,
            text text NOT NULL,
            label text,
            ts timestamptz NOT NULL,
            ts_defaulted boolean NOT NULL,
            weight double precision
        ) ON COMMIT DROP
        """
    )


def copy_rows(cur, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """COPY rows into ``table`` in CSV form, serialised by the C csv writer.

    None and '' both arrive as NULL (FORCE_NULL): textclf never stores empty strings, empty
    texts and labels are rejected before they get here. jsonb values must be JSON text.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    count = 0
    for row in rows:
        writer.writerow(row)
        count += 1
    buffer.seek(0)
    cur.copy_expert(
        sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, FORCE_NULL ({}))").format(
            sql.SQL(table),
            sql.SQL(", ").join(map(_ident, columns)),
            sql.SQL(", ").join(map(_ident, columns)),
        ),
        buffer,
    )
    return count


NO_ID = "(no id)"  # quarantine.source_row of a source row whose id is NULL


def quarantine_rows(cur, rows: Sequence[dict[str, Any]]) -> int:
    """Insert rejected rows; the same rejection recorded twice stays one row."""
    if not rows:
        return 0
    psycopg2.extras.execute_values(
        cur,
        """
        INSERT INTO textclf.quarantine
            (stage, source, source_row, field, reason, expectation, raw, run_id, row_hash)
        VALUES %s
        ON CONFLICT (stage, source, source_row, reason, (coalesce(row_hash, ''))) DO NOTHING
        """,
        [
            (
                r["stage"],
                r["source"],
                str(r["source_row"]),
                r.get("field"),
                r["reason"],
                r.get("expectation"),
                psycopg2.extras.Json(r.get("raw")),
                r.get("run_id"),
                r.get("row_hash"),
            )
            for r in rows
        ],
    )
    return len(rows)


def quarantined(cur, stage: str | None = None, source: str | None = None, limit: int = 50,
                include_released: bool = False) -> list[dict[str, Any]]:
    cur.execute(
        """
        SELECT id, stage, source, source_row, field, reason, expectation, run_id, quarantined_at,
               released_at, released_by
        FROM textclf.quarantine
        WHERE (%(stage)s IS NULL OR stage = %(stage)s) AND (%(source)s IS NULL OR source = %(source)s)
          AND (%(released)s OR released_at IS NULL)
        ORDER BY quarantined_at DESC, id DESC LIMIT %(limit)s
        """,
        {"stage": stage, "source": source, "released": include_released, "limit": limit},
    )
    return all_dicts(cur)


def release_quarantined(cur, source: str, rows: Sequence[str] | None, by: str) -> int:
    """Let validation-quarantined rows of ``source`` back into snapshots (``rows`` None: all)."""
    cur.execute(
        """
        UPDATE textclf.quarantine SET released_at = now(), released_by = %(by)s
        WHERE stage = 'validation' AND source = %(source)s AND released_at IS NULL
          AND (%(all)s OR source_row = ANY(%(rows)s))
        """,
        {"by": by, "source": source, "all": rows is None, "rows": list(rows or [])},
    )
    return cur.rowcount


def quarantine_duplicate_staged_ids(cur, source_file: str) -> int:
    """Keep the first line of each id in the staging table; quarantine the later ones."""
    cur.execute(
        """
        WITH ranked AS (
            SELECT line_no, id, text, label, ts,
                   min(line_no) OVER (PARTITION BY id) AS first_line,
                   row_number() OVER (PARTITION BY id ORDER BY line_no) AS n
            FROM import_staging
        ), moved AS (
            INSERT INTO textclf.quarantine (stage, source, source_row, field, reason, raw)
            SELECT 'import', %(source)s, line_no::text, 'id',
                   format('duplicate id %%s in the file (first seen on line %%s)', id, first_line),
                   jsonb_build_object('id', id, 'text', text, 'label', label, 'timestamp', ts)
            FROM ranked WHERE n > 1
            ON CONFLICT (stage, source, source_row, reason, (coalesce(row_hash, ''))) DO NOTHING
        )
        DELETE FROM import_staging s USING ranked r
        WHERE s.line_no = r.line_no AND r.n > 1
        """,
        {"source": source_file},
    )
    return cur.rowcount


def merge_staged_rows(cur, target: SourceTable) -> dict[str, int]:
    """Upsert the staging table into ``target``; identical rows are left untouched."""
    # format_type() output is a type name from the catalog, safe to splice into the cast.
    id_type = sql.SQL(_column_type(cur, target, target.id_column))
    # A row without a timestamp in the file is stamped "now" when first loaded only: a
    # re-import must not move it into a later data interval.
    cur.execute(
        sql.SQL(
            """
            UPDATE import_staging s SET ts = t.{ts}
            FROM {table} t
            WHERE s.ts_defaulted AND t.{id} = s.id::{id_type}
            """
        ).format(ts=_ident(target.timestamp_column), table=_table(target),
                 id=_ident(target.id_column), id_type=id_type)
    )
    columns = [target.id_column, target.text_column, target.timestamp_column]
    staged = [sql.SQL("id::{}").format(id_type), sql.SQL("text"), sql.SQL("ts")]
    if target.label_column:
        columns.insert(2, target.label_column)
        staged.insert(2, sql.SQL("label"))
    if target.weight_column:
        columns.append(target.weight_column)
        staged.append(sql.SQL("weight"))
    updates = [c for c in columns if c != target.id_column]
    query = sql.SQL(
        """
        WITH upserted AS (
            INSERT INTO {table} AS t ({columns})
            SELECT {staged} FROM import_staging
            ON CONFLICT ({id}) DO UPDATE SET {assignments}
            WHERE ({old}) IS DISTINCT FROM ({new})
            RETURNING (xmax = 0) AS inserted
        )
        SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted)
        FROM upserted
        """
    ).format(
        table=_table(target),
        columns=sql.SQL(", ").join(map(_ident, columns)),
        staged=sql.SQL(", ").join(staged),
        id=_ident(target.id_column),
        assignments=sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=_ident(c)) for c in updates
        ),
        old=sql.SQL(", ").join(sql.SQL("t.{}").format(_ident(c)) for c in updates),
        new=sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(_ident(c)) for c in updates),
    )
    cur.execute(query)
    inserted, updated = cur.fetchone()
    cur.execute("SELECT count(*) FROM import_staging")
    (staged_rows,) = cur.fetchone()
    return {"inserted": inserted, "updated": updated, "unchanged": staged_rows - inserted - updated}


TIMESTAMP_TYPES = ("timestamp with time zone", "timestamp without time zone", "date")


def check_timestamp_column(cur, source: SourceTable, setting: str) -> str:
    """The type of the source's timestamp column, which must be a timestamp (with or without
    time zone: naive ones are read in source_timezone) or a date; anything else is a
    configuration error naming the column, raised before the night reads a row."""
    try:
        column_type = _column_type(cur, source, source.timestamp_column)
    except ConfigError:
        raise ConfigError(f"[{setting}] {source.qualified_name}: column {source.timestamp_column!r} does not "
                          "exist (or the table does not exist): check the source settings in textclf.toml") from None
    if not column_type.startswith(TIMESTAMP_TYPES):
        raise ConfigError(
            f"[{setting}] {source.qualified_name}.{source.timestamp_column} is {column_type}, not a "
            "timestamp: point timestamp_column at a timestamp, timestamptz or date column (or a view "
            "that casts it)")
    return column_type


INTEGER_TYPES = ("smallint", "integer", "bigint")


def check_document_id_column(cur, source: SourceTable, setting: str) -> str:
    """The documents' id column holds integers: textclf.predictions keys rows by a bigint
    document id. Anything else (uuid, text) is a configuration error naming the column, raised at
    the night's first task instead of at every night's predict."""
    column_type = _column_type(cur, source, source.id_column, base=True)
    # numeric with no fraction (or unconstrained, as many views cast) holds whole numbers too.
    if not (column_type in INTEGER_TYPES or re.fullmatch(r"numeric(\(\d+,0\))?", column_type)):
        raise ConfigError(
            f"[{setting}] {source.qualified_name}.{source.id_column} is {column_type}, but document ids "
            "must be whole numbers (smallint, integer, bigint, numeric without a fraction): "
            "textclf.predictions.document_id is a bigint. "
            "Point id_column at an integer key, or at a view that numbers the documents")
    return column_type


def label_counts(cur, source: SourceTable) -> list[tuple[Any, int]]:
    """(raw label, rows) of the labelled source, every row whatever its timestamp."""
    cur.execute(sql.SQL("SELECT {label}, count(*) FROM {table} GROUP BY 1").format(
        label=_ident(source.label_column or "label"), table=_table(source)))
    return cur.fetchall()


def _column_type(cur, source: SourceTable, column: str, base: bool = False) -> str:
    """The column's type as PostgreSQL names it; ``base``: a domain's underlying type."""
    cur.execute(
        """
        SELECT CASE WHEN %s AND t.typbasetype <> 0 THEN format_type(t.typbasetype, t.typtypmod)
                    ELSE format_type(a.atttypid, a.atttypmod) END
        FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
        WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped
        """,
        (base, f'"{source.schema}"."{source.table}"', column),
    )
    row = cur.fetchone()
    if row is None:
        raise ConfigError(f"{source.qualified_name} has no column {column!r} (or the table does not "
                          "exist): check the source settings in textclf.toml")
    return row[0]


# --- extraction ------------------------------------------------------------------------


def iter_labelled_rows(
    conn,
    source: SourceTable,
    end: datetime,
    window_start: datetime | None = None,
    chunk_rows: int = 10_000,
) -> Iterator[list[tuple]]:
    """Rows with timestamp < end (and >= window_start), in id order, chunk by chunk.

    A named (server-side) cursor keeps memory flat whatever the table size. Rows already
    quarantined by validation are skipped: they stay in the source table but never train.
    """
    # Rows without a timestamp are extracted too (validation quarantines them): a source table's
    # NULLs must not vanish silently.
    ts = _ident(source.timestamp_column)
    conditions = [sql.SQL("({ts} < %(end)s OR {ts} IS NULL)").format(ts=ts)]
    if window_start is not None:
        conditions.append(sql.SQL("({ts} >= %(start)s OR {ts} IS NULL)").format(ts=ts))
    # A JSON array keeps NULL apart from '' and needs no separator the text cannot contain; the
    # timestamp as epoch microseconds does not depend on the session's TimeZone or DateStyle.
    row_hash = sql.SQL(
        "md5(json_build_array(s.{id}::text, s.{text}, s.{label}::text, "
        "(extract(epoch FROM s.{ts}) * 1000000)::bigint, {weight})::text)"
    )
    query = sql.SQL(
        """
        SELECT s.{id}::text, s.{text}, s.{label}::text, s.{ts}::timestamptz, {weight}, {row_hash}
        FROM {table} s
        WHERE {where}
          AND NOT EXISTS (
              -- Rows quarantined by validation stay out while they are unchanged (same row
              -- version) and not released; a corrected row is judged again.
              SELECT 1 FROM textclf.quarantine q
              WHERE q.stage = 'validation' AND q.source = %(source)s AND q.source_row = s.{id}::text
                AND q.released_at IS NULL AND (q.row_hash IS NULL OR q.row_hash = {row_hash})
          )
        ORDER BY s.{id}
        """
    ).format(
        row_hash=row_hash.format(
            id=_ident(source.id_column), text=_ident(source.text_column),
            label=_ident(source.label_column or "label"),
            ts=ts,
            weight=(sql.SQL("s.{}").format(_ident(source.weight_column)) if source.weight_column
                    else sql.SQL("NULL")),
        ),
        id=_ident(source.id_column),
        text=_ident(source.text_column),
        label=_ident(source.label_column or "label"),
        ts=ts,
        weight=(
            sql.SQL("s.{}::float8").format(_ident(source.weight_column))
            if source.weight_column else sql.SQL("NULL::float8")
        ),
        table=_table(source),
        where=sql.SQL(" AND ").join(conditions),
    )
    with conn.cursor(name="textclf_snapshot") as cur:
        cur.itersize = chunk_rows
        cur.execute(query, {"end": end, "start": window_start, "source": source.qualified_name})
        while True:
            rows = cur.fetchmany(chunk_rows)
            if not rows:
                break
            yield rows


# --- validation --------------------------------------------------------------------------


def stored_label_set(cur) -> list[str] | None:
    cur.execute("SELECT labels FROM textclf.label_sets ORDER BY id DESC LIMIT 1")
    row = cur.fetchone()
    return list(row[0]) if row else None


def label_set_history(cur) -> list[dict[str, Any]]:
    cur.execute("SELECT labels, origin, run_id, created_at FROM textclf.label_sets ORDER BY id")
    return all_dicts(cur)


def store_label_set(cur, labels: Sequence[str], origin: str, run_id: str | None) -> None:
    cur.execute(
        "INSERT INTO textclf.label_sets (labels, origin, run_id) VALUES (%s, %s, %s)",
        (psycopg2.extras.Json(list(labels)), origin, run_id),
    )


def record_validation_run(cur, record: dict[str, Any]) -> int:
    """Insert or replace the validation result of one Airflow run (re-runs overwrite)."""
    cur.execute(
        """
        INSERT INTO textclf.validation_runs
            (run_id, logical_date, interval_start, interval_end, status, new_rows, snapshot_rows,
             quarantined_rows, failures, results, fingerprint, data_docs_path, snapshot_path)
        VALUES (%(run_id)s, %(logical_date)s, %(interval_start)s, %(interval_end)s, %(status)s,
                %(new_rows)s, %(snapshot_rows)s, %(quarantined_rows)s, %(failures)s, %(results)s,
                %(fingerprint)s, %(data_docs_path)s, %(snapshot_path)s)
        ON CONFLICT (run_id) DO UPDATE SET
            logical_date = EXCLUDED.logical_date, interval_start = EXCLUDED.interval_start,
            interval_end = EXCLUDED.interval_end, status = EXCLUDED.status,
            new_rows = EXCLUDED.new_rows, snapshot_rows = EXCLUDED.snapshot_rows,
            quarantined_rows = EXCLUDED.quarantined_rows, failures = EXCLUDED.failures,
            results = EXCLUDED.results, fingerprint = EXCLUDED.fingerprint,
            data_docs_path = EXCLUDED.data_docs_path, snapshot_path = EXCLUDED.snapshot_path,
            validated_at = now()
        RETURNING id
        """,
        {
            **record,
            "failures": psycopg2.extras.Json(record["failures"]),
            "results": psycopg2.extras.Json(record["results"]),
            "fingerprint": psycopg2.extras.Json(record["fingerprint"]),
        },
    )
    return cur.fetchone()[0]


def validation_run(cur, run_id: str) -> dict[str, Any] | None:
    cur.execute(
        "SELECT * FROM textclf.validation_runs WHERE run_id = %s",
        (run_id,),
    )
    return _one_dict(cur)


def _one_dict(cur) -> dict[str, Any] | None:
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d.name for d in cur.description], row, strict=True))


def all_dicts(cur) -> list[dict[str, Any]]:
    names = [d.name for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


# --- registry ------------------------------------------------------------------------------


def model_version_by_training_key(cur, training_key: str) -> dict[str, Any] | None:
    cur.execute("SELECT * FROM textclf.model_versions WHERE training_key = %s", (training_key,))
    return _one_dict(cur)


def upsert_model_version(cur, record: dict[str, Any]) -> int:
    """One version per training key: the same training registered twice keeps its version."""
    cur.execute(
        """
        INSERT INTO textclf.model_versions
            (kind, labels, params, metrics, artifact_uri, artifact_sha256, size_bytes,
             data_fingerprint, code_version, code_identity, run_id, logical_date,
             train_seconds, peak_memory_bytes, training_key)
        VALUES (%(kind)s, %(labels)s, %(params)s, %(metrics)s, %(artifact_uri)s,
                %(artifact_sha256)s, %(size_bytes)s, %(data_fingerprint)s, %(code_version)s,
                %(code_identity)s, %(run_id)s, %(logical_date)s, %(train_seconds)s,
                %(peak_memory_bytes)s, %(training_key)s)
        ON CONFLICT (training_key) DO UPDATE SET
            labels = EXCLUDED.labels, params = EXCLUDED.params, metrics = EXCLUDED.metrics,
            artifact_uri = EXCLUDED.artifact_uri, artifact_sha256 = EXCLUDED.artifact_sha256,
            size_bytes = EXCLUDED.size_bytes, data_fingerprint = EXCLUDED.data_fingerprint,
            code_version = EXCLUDED.code_version, code_identity = EXCLUDED.code_identity,
            logical_date = EXCLUDED.logical_date,
            train_seconds = EXCLUDED.train_seconds, peak_memory_bytes = EXCLUDED.peak_memory_bytes
        RETURNING version
        """,
        {
            **record,
            "labels": psycopg2.extras.Json(record["labels"]),
            "params": psycopg2.extras.Json(record["params"]),
            "metrics": psycopg2.extras.Json(record.get("metrics", {})),
            "data_fingerprint": psycopg2.extras.Json(record.get("data_fingerprint")),
            "code_identity": (psycopg2.extras.Json(record["code_identity"])
                              if record.get("code_identity") is not None else None),
        },
    )
    return cur.fetchone()[0]


def set_model_artifact(cur, version: int, uri: str, sha256: str, size_bytes: int) -> None:
    cur.execute(
        """
        UPDATE textclf.model_versions
        SET artifact_uri = %s, artifact_sha256 = %s, size_bytes = %s, artifact_deleted_at = NULL,
            last_used_at = now()
        WHERE version = %s
        """,
        (uri, sha256, size_bytes, version),
    )


def mark_used(cur, version: int) -> None:
    """A night picked ``version`` (reused it): retention's grace starts again."""
    cur.execute("UPDATE textclf.model_versions SET last_used_at = now() WHERE version = %s", (version,))


def retention_candidates(cur, keep_candidates: int, grace_hours: float = 0.0) -> list[dict[str, Any]]:
    """Versions whose artifact may go: never champion (champion_history keeps every version a
    rollback can return to), not among the newest ``keep_candidates`` versions, older than
    ``grace_hours`` and not judged within it by a run still undecided (a night in flight may
    still promote it), still stored."""
    cur.execute(
        """
        SELECT version, kind, artifact_uri, size_bytes FROM textclf.model_versions mv
        WHERE artifact_deleted_at IS NULL AND artifact_uri <> ''
          AND NOT EXISTS (SELECT 1 FROM textclf.champion_history h WHERE h.model_version = mv.version)
          AND version NOT IN (SELECT version FROM textclf.model_versions ORDER BY version DESC LIMIT %s)
          AND coalesce(last_used_at, created_at) < now() - make_interval(secs => %s)
          -- judged by a run that has not decided yet (an old version reused by a re-run tonight)
          AND NOT EXISTS (SELECT 1 FROM textclf.evaluations e
                          WHERE e.model_version = mv.version
                            AND e.evaluated_at > now() - make_interval(secs => %s)
                            AND NOT EXISTS (SELECT 1 FROM textclf.promotion_decisions d
                                            WHERE d.run_id = e.run_id))
        ORDER BY version
        """,
        (keep_candidates, grace_hours * 3600, grace_hours * 3600),
    )
    return all_dicts(cur)


def mark_artifact_deleted(cur, version: int, grace_hours: float = 0.0) -> bool:
    """Record the deletion, unless the version became champion meanwhile or is younger than
    ``grace_hours`` (a retraining may have stored it again since it was listed): then False."""
    cur.execute(
        """
        UPDATE textclf.model_versions mv SET artifact_deleted_at = now()
        WHERE version = %s AND artifact_deleted_at IS NULL
          AND coalesce(last_used_at, created_at) < now() - make_interval(secs => %s)
          AND NOT EXISTS (SELECT 1 FROM textclf.champion_history h WHERE h.model_version = mv.version)
        """,
        (version, grace_hours * 3600),
    )
    return cur.rowcount == 1


def validated_run_ids(cur) -> set[str]:
    cur.execute("SELECT run_id FROM textclf.validation_runs")
    return {row[0] for row in cur.fetchall()}


def version_numbers(cur) -> set[int]:
    cur.execute("SELECT version FROM textclf.model_versions")
    return {row[0] for row in cur.fetchall()}


def runs_validated_before(cur, cutoff: datetime) -> list[str]:
    cur.execute("SELECT run_id FROM textclf.validation_runs WHERE validated_at < %s ORDER BY run_id",
                (cutoff,))
    return [row[0] for row in cur.fetchall()]


def model_version(cur, version: int) -> dict[str, Any] | None:
    cur.execute("SELECT * FROM textclf.model_versions WHERE version = %s", (version,))
    return _one_dict(cur)


def model_versions(cur) -> list[dict[str, Any]]:
    cur.execute(
        """
        SELECT mv.*, (c.model_version IS NOT NULL) AS is_champion
        FROM textclf.model_versions mv
        LEFT JOIN textclf.champion_history c
               ON c.model_version = mv.version AND c.valid_to IS NULL
        ORDER BY mv.version
        """
    )
    return all_dicts(cur)


def champion_at(cur, at: datetime | None = None) -> int | None:
    """The champion version at wall-clock time ``at`` (default: now)."""
    cur.execute(
        """
        SELECT model_version FROM textclf.champion_history
        WHERE tstzrange(valid_from, valid_to) @> coalesce(%s, now())
        """,
        (at,),
    )
    row = cur.fetchone()
    return row[0] if row else None


# A reign that a rollback ended was revoked: the operator said that champion should not have
# been. (The row right after it in time came from a rollback decision.)
_REVOKED = """EXISTS (SELECT 1 FROM textclf.champion_history n
                      JOIN textclf.promotion_decisions d ON d.id = n.decision_id
                      WHERE n.valid_from = h.valid_to AND d.decision = 'rollback')"""


def champion_of(cur, data_time: datetime) -> int | None:
    """The champion for data up to ``data_time``: the decision that took effect last at or
    before it (``effective_from``), skipping reigns a rollback revoked, so re-runs of those dates
    follow the rollback."""
    cur.execute(
        f"""
        SELECT h.model_version FROM textclf.champion_history h
        WHERE h.effective_from <= %s AND NOT {_REVOKED}
        ORDER BY h.effective_from DESC, h.valid_from DESC
        LIMIT 1
        """,
        (data_time,),
    )
    row = cur.fetchone()
    return row[0] if row else None


def reign_revoked(cur, version: int, data_time: datetime) -> bool:
    """Whether ``version``'s reign that decided ``data_time`` was ended by a rollback."""
    cur.execute(
        f"""
        SELECT {_REVOKED} FROM textclf.champion_history h
        WHERE h.model_version = %s AND h.effective_from <= %s
        ORDER BY h.effective_from DESC, h.valid_from DESC
        LIMIT 1
        """,
        (version, data_time),
    )
    row = cur.fetchone()
    return bool(row and row[0])


def current_champion_row(cur) -> dict[str, Any] | None:
    cur.execute("SELECT * FROM textclf.champion_history WHERE valid_to IS NULL")
    return _one_dict(cur)


RUN_DECISIONS = ("promoted", "kept", "historical")


def manual_decision(cur, run_id: str) -> dict[str, Any] | None:
    """The champion change by hand (promote or rollback) a run already made, if any."""
    cur.execute(
        """
        SELECT * FROM textclf.promotion_decisions
        WHERE run_id = %s AND decision IN ('manual', 'rollback') ORDER BY id DESC LIMIT 1
        """,
        (run_id,),
    )
    return _one_dict(cur)


def run_decision(cur, run_id: str) -> dict[str, Any] | None:
    """The promotion decision a run already took, if any."""
    cur.execute(
        """
        SELECT * FROM textclf.promotion_decisions
        WHERE run_id = %s AND decision = ANY(%s)
        ORDER BY id DESC LIMIT 1
        """,
        (run_id, list(RUN_DECISIONS)),
    )
    return _one_dict(cur)


def reign_tested_nights(cur, champion: int, since: datetime) -> list[dict[str, Any]]:
    """The nights (data interval ends) already judged against ``champion`` in its reign that
    began at ``since``, whose test spent lifetime budget: night number and level, as recorded
    in each decision's reasons; the first decision of a date counts."""
    cur.execute(
        """
        SELECT DISTINCT ON (interval_end) interval_end,
               (reasons->'budget'->>'night')::int AS night,
               (reasons->'budget'->>'level')::float8 AS level
        FROM textclf.promotion_decisions
        WHERE decision = 'kept' AND champion_before = %s AND interval_end >= %s
          AND (reasons->'budget'->>'spent')::boolean
        ORDER BY interval_end, id
        """,
        (champion, since),
    )
    return all_dicts(cur)


def champion_history(cur) -> list[dict[str, Any]]:
    cur.execute(
        """
        SELECT h.id, h.model_version, mv.kind, h.valid_from, h.valid_to, h.effective_from,
               h.reason, h.actor, h.decision_id
        FROM textclf.champion_history h
        JOIN textclf.model_versions mv ON mv.version = h.model_version
        ORDER BY h.valid_from
        """
    )
    return all_dicts(cur)


CHAMPION_LOCK_WAIT_SECONDS = 30.0  # a champion change holds the lock for milliseconds


@contextmanager
def run_date_lock(url: str, day: str) -> Iterator[bool]:
    """Hold a session advisory lock for ``textclf run`` of ``day`` while the block runs: True
    when this process got it, False when another run of that date holds it. Never waits; it
    goes with the connection, so a killed holder releases it."""
    with closing(psycopg2.connect(url, application_name="textclf run")) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(hashtext('textclf run'), hashtext(%s))", (day,))
            yield bool(cur.fetchone()[0])


def lock_champion(cur, wait_seconds: float | None = None) -> None:
    """Serialise champion changes: lock the one row of textclf.champion_lock for this
    transaction. A row lock needs UPDATE on the row, which the reader role lacks (any role could
    take an advisory lock and hang every promotion); lock_timeout turns a stuck holder into an
    error naming the wait instead of a hang."""
    wait_seconds = CHAMPION_LOCK_WAIT_SECONDS if wait_seconds is None else wait_seconds
    cur.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(wait_seconds * 1000)}ms",))
    try:
        cur.execute("SELECT 1 FROM textclf.champion_lock WHERE id = 1 FOR UPDATE")
    except psycopg2.errors.LockNotAvailable:
        raise ChampionLocked(
            f"another champion change has held the lock for over {wait_seconds:.0f} s; try again "
            "(SELECT * FROM pg_locks WHERE relation = 'textclf.champion_lock'::regclass shows who)"
        ) from None
    cur.execute("SELECT set_config('lock_timeout', '0', true)")


def record_decision(cur, decision: dict[str, Any]) -> int:
    cur.execute(
        """
        INSERT INTO textclf.promotion_decisions
            (run_id, decision, champion_before, champion_after, reasons, actor, interval_end)
        VALUES (%(run_id)s, %(decision)s, %(champion_before)s, %(champion_after)s, %(reasons)s,
                %(actor)s, %(interval_end)s)
        RETURNING id
        """,
        {"interval_end": None, **decision, "reasons": psycopg2.extras.Json(decision["reasons"])},
    )
    return cur.fetchone()[0]


def switch_champion(
    cur, version: int, reason: str, actor: str, decision_id: int | None,
    effective_from: datetime | None = None,
) -> None:
    """Close the open history row and open one for ``version`` at the same instant; it decides
    for data from ``effective_from`` on (default: now)."""
    cur.execute(
        """
        UPDATE textclf.champion_history SET valid_to = clock_timestamp()
        WHERE valid_to IS NULL
        RETURNING valid_to
        """
    )
    closed = cur.fetchone()
    cur.execute(
        """
        INSERT INTO textclf.champion_history
            (model_version, valid_from, reason, actor, decision_id, effective_from)
        VALUES (%(version)s, coalesce(%(closed)s, clock_timestamp()), %(reason)s, %(actor)s,
                %(decision_id)s,
                -- never later than the promotion itself: a backfill of a future-dated interval
                -- must not make every real night before it "historical"
                least(coalesce(%(effective_from)s, %(closed)s, clock_timestamp()), clock_timestamp()))
        """,
        {"version": version, "closed": closed[0] if closed else None, "reason": reason,
         "actor": actor, "decision_id": decision_id, "effective_from": effective_from},
    )


def upsert_evaluation(cur, record: dict[str, Any]) -> None:
    cur.execute(
        """
        INSERT INTO textclf.evaluations
            (run_id, model_version, role, test_rows, test_fingerprint, metrics, comparison)
        VALUES (%(run_id)s, %(model_version)s, %(role)s, %(test_rows)s, %(test_fingerprint)s,
                %(metrics)s, %(comparison)s)
        ON CONFLICT (run_id, model_version) DO UPDATE SET
            role = EXCLUDED.role, test_rows = EXCLUDED.test_rows,
            test_fingerprint = EXCLUDED.test_fingerprint, metrics = EXCLUDED.metrics,
            comparison = EXCLUDED.comparison, evaluated_at = now()
        """,
        {
            **record,
            "metrics": psycopg2.extras.Json(record["metrics"]),
            "comparison": psycopg2.extras.Json(record.get("comparison")),
        },
    )


def run_was_evaluated(cur, run_id: str) -> bool:
    cur.execute("SELECT EXISTS (SELECT 1 FROM textclf.evaluations WHERE run_id = %s)", (run_id,))
    return bool(cur.fetchone()[0])


def evaluations_for_run(cur, run_id: str) -> list[dict[str, Any]]:
    cur.execute(
        """
        SELECT e.*, mv.kind FROM textclf.evaluations e
        JOIN textclf.model_versions mv ON mv.version = e.model_version
        WHERE e.run_id = %s ORDER BY e.model_version
        """,
        (run_id,),
    )
    return all_dicts(cur)


def record_event(cur, run_id: str | None, task_id: str | None, event: str, message: str) -> None:
    cur.execute(
        """
        INSERT INTO textclf.pipeline_events (run_id, task_id, event, message)
        VALUES (%s, %s, %s, %s)
        """,
        (run_id, task_id, event, message),
    )


def record_event_at(url: str, run_id: str | None, task_id: str | None, event: str, message: str) -> None:
    """record_event on its own connection to ``url``: needs the database and nothing of the
    project's settings (a failure callback records configuration errors too)."""
    with closing(psycopg2.connect(url, application_name="textclf", connect_timeout=10)) as conn, conn, \
            conn.cursor() as cur:
        record_event(cur, run_id, task_id, event, message)


def run_events_at(url: str, run_id: str | None, since: datetime | None = None) -> list[dict[str, Any]]:
    """The run's pipeline events since ``since`` (this attempt of a cleared run), oldest first:
    what the night's one alert summarises."""
    with closing(psycopg2.connect(url, application_name="textclf", connect_timeout=10)) as conn, conn, \
            conn.cursor() as cur:
        cur.execute("SELECT task_id, event, message FROM textclf.pipeline_events WHERE run_id = %s "
                    "AND (%s::timestamptz IS NULL OR created_at >= %s) ORDER BY id", (run_id, since, since))
        return all_dicts(cur)


def documents_unaccounted(cur, source: SourceTable, start: datetime, end: datetime,
                          model_version: int | None) -> tuple[int, int]:
    """(documents created in [start, end), those of them with neither a prediction by
    ``model_version`` nor a quarantine row of the prediction stage): what a night owed and
    what it left undone, counted from the tables themselves, not from the tasks' own totals."""
    cur.execute(
        sql.SQL(
            """
            SELECT count(*), count(*) FILTER (WHERE NOT EXISTS (
                       SELECT 1 FROM textclf.predictions p
                       WHERE p.document_id = d.{id} AND p.model_version = %(version)s)
                   AND NOT EXISTS (
                       SELECT 1 FROM textclf.quarantine q
                       WHERE q.stage = 'prediction' AND q.source = %(source)s
                         AND q.source_row = coalesce(d.{id}::text, %(no_id)s)))
            FROM {table} d WHERE {where}
            """
        ).format(id=_ident(source.id_column), table=_table(source),
                 where=_document_scope(source, start, end)),
        {"start": start, "end": end, "version": model_version, "source": source.qualified_name, "no_id": NO_ID},
    )
    due, missing = cur.fetchone()
    return due, missing


# --- predictions -----------------------------------------------------------------------------

PREDICTION_COLUMNS = (
    "document_id", "model_version", "label", "confidence", "probabilities", "run_id",
    "logical_date",
)


def _document_scope(
    source: SourceTable, start: datetime | None, end: datetime | None,
    id_from: int | None = None, id_to: int | None = None,
) -> sql.Composed:
    """WHERE clause: created in [start, end) and id in [id_from, id_to) (None: unbounded)."""
    conditions = [sql.SQL("TRUE")]
    ts, id_ = _ident(source.timestamp_column), _ident(source.id_column)
    if start is not None:
        conditions.append(sql.SQL("{} >= %(start)s").format(ts))
    if end is not None:
        conditions.append(sql.SQL("{} < %(end)s").format(ts))
    if id_from is not None:
        conditions.append(sql.SQL("{} >= %(id_from)s").format(id_))
    if id_to is not None:
        # The first range also takes documents without an id, so that they are quarantined once
        # instead of skipped by every range.
        template = "({id} < %(id_to)s OR {id} IS NULL)" if id_from is None else "{id} < %(id_to)s"
        conditions.append(sql.SQL(template).format(id=id_))
    return sql.SQL(" AND ").join(conditions)


def document_id_bounds(
    cur, source: SourceTable, start: datetime | None, end: datetime | None, parts: int
) -> tuple[int, list[int]]:
    """(documents in scope, ids cutting them into ``parts`` ranges of about equal size)."""
    cur.execute(
        sql.SQL(
            """
            SELECT count(*), percentile_disc(%(cuts)s::float8[]) WITHIN GROUP (ORDER BY {id})
            FROM {table} WHERE {where}
            """
        ).format(id=_ident(source.id_column), table=_table(source),
                 where=_document_scope(source, start, end)),
        {"start": start, "end": end, "cuts": [i / parts for i in range(1, parts)] or [0.5]},
    )
    count, cuts = cur.fetchone()
    return count, sorted(set(cuts or [])) if parts > 1 else []


def iter_documents(
    conn,
    source: SourceTable,
    start: datetime | None,
    end: datetime | None,
    chunk_rows: int,
    id_from: int | None = None,
    id_to: int | None = None,
) -> Iterator[list[tuple]]:
    """(id, text) of documents created in [start, end) with id in [id_from, id_to) (None:
    unbounded), in id order."""
    query = sql.SQL("SELECT {id}, {text} FROM {table} WHERE {where} ORDER BY {id}").format(
        id=_ident(source.id_column),
        text=_ident(source.text_column),
        table=_table(source),
        where=_document_scope(source, start, end, id_from, id_to),
    )
    with conn.cursor(name="textclf_documents") as cur:
        cur.itersize = chunk_rows
        cur.execute(query, {"start": start, "end": end, "id_from": id_from, "id_to": id_to})
        while True:
            rows = cur.fetchmany(chunk_rows)
            if not rows:
                break
            yield rows


def write_predictions(cur, rows: Sequence[Sequence[Any]]) -> int:
    """Write one chunk; returns the rows inserted or changed.

    New rows (the nightly case) go straight in with COPY. If any row of the chunk exists
    already (a retry, a re-run, a backfill), the COPY is rolled back to a savepoint and the
    chunk goes through a staging table and an UPSERT that leaves identical rows untouched.
    """
    cur.execute("SAVEPOINT textclf_predictions_copy")
    try:
        copy_rows(cur, "textclf.predictions", PREDICTION_COLUMNS, rows)
    except psycopg2.errors.UniqueViolation:
        cur.execute("ROLLBACK TO SAVEPOINT textclf_predictions_copy")
    else:
        cur.execute("RELEASE SAVEPOINT textclf_predictions_copy")
        return len(rows)
    cur.execute(
        """
        CREATE TEMP TABLE IF NOT EXISTS prediction_staging
            (LIKE textclf.predictions INCLUDING DEFAULTS) ON COMMIT DELETE ROWS
        """
    )
    copy_rows(cur, "prediction_staging", PREDICTION_COLUMNS, rows)
    cur.execute(
        """
        INSERT INTO textclf.predictions AS p
            (document_id, model_version, label, confidence, probabilities, run_id, logical_date)
        SELECT document_id, model_version, label, confidence, probabilities, run_id, logical_date
        FROM prediction_staging
        ON CONFLICT (document_id, model_version) DO UPDATE SET
            label = EXCLUDED.label, confidence = EXCLUDED.confidence,
            probabilities = EXCLUDED.probabilities, run_id = EXCLUDED.run_id,
            logical_date = EXCLUDED.logical_date, predicted_at = now()
        WHERE (p.label, p.confidence, p.probabilities)
              IS DISTINCT FROM (EXCLUDED.label, EXCLUDED.confidence, EXCLUDED.probabilities)
        """
    )
    return cur.rowcount


def prediction_count(cur, model_version: int | None = None) -> int:
    cur.execute(
        "SELECT count(*) FROM textclf.predictions WHERE %(v)s IS NULL OR model_version = %(v)s",
        {"v": model_version},
    )
    return cur.fetchone()[0]


# --- reporting -------------------------------------------------------------------------------


def leaderboard(cur) -> list[dict[str, Any]]:
    """Every model version with its latest test evaluation (macro-F1, interval vs the champion)."""
    cur.execute(
        """
        SELECT mv.version, mv.kind, mv.created_at, mv.run_id, mv.artifact_uri, mv.size_bytes,
               mv.metrics->>'val_macro_f1' AS val_macro_f1,
               (c.model_version IS NOT NULL) AS is_champion,
               e.run_id AS evaluated_in, e.evaluated_at, e.role AS evaluated_as,
               (e.metrics->>'macro_f1')::float8 AS test_macro_f1,
               (e.comparison->>'macro_f1_diff')::float8 AS diff_vs_champion,
               (e.comparison->>'ci_low')::float8 AS ci_low,
               (e.comparison->>'ci_high')::float8 AS ci_high
        FROM textclf.model_versions mv
        LEFT JOIN textclf.champion_history c ON c.model_version = mv.version AND c.valid_to IS NULL
        LEFT JOIN LATERAL (
            SELECT * FROM textclf.evaluations ev WHERE ev.model_version = mv.version
            ORDER BY ev.evaluated_at DESC LIMIT 1
        ) e ON TRUE
        ORDER BY mv.version DESC
        """
    )
    rows = all_dicts(cur)
    for row in rows:
        row["val_macro_f1"] = float(row["val_macro_f1"]) if row["val_macro_f1"] is not None else None
    return rows


def nightly_scores(cur, limit_runs: int = 60) -> list[dict[str, Any]]:
    """Test macro-F1 of every model evaluated in the last ``limit_runs`` runs, with the run's
    data interval end, whether the model was judged as the champion or a candidate, and the
    champion the run's promotion decision left (NULL: no decision)."""
    cur.execute(
        """
        WITH runs AS (
            SELECT run_id, interval_end FROM textclf.validation_runs
            ORDER BY interval_end DESC, validated_at DESC LIMIT %s
        )
        SELECT r.run_id, r.interval_end, e.model_version, mv.kind, e.role,
               (e.metrics->>'macro_f1')::float8 AS macro_f1, d.champion_after
        FROM runs r
        JOIN textclf.evaluations e USING (run_id)
        JOIN textclf.model_versions mv ON mv.version = e.model_version
        LEFT JOIN LATERAL (
            SELECT champion_after FROM textclf.promotion_decisions pd
            WHERE pd.run_id = r.run_id ORDER BY pd.id DESC LIMIT 1
        ) d ON TRUE
        ORDER BY r.interval_end, e.model_version
        """,
        (limit_runs,),
    )
    return all_dicts(cur)


def run_summaries(cur, limit: int = 30) -> list[dict[str, Any]]:
    """The latest runs: validation outcome, quarantined rows, promotion decision and reasons."""
    cur.execute(
        """
        SELECT v.run_id, v.logical_date, v.interval_start, v.interval_end, v.status, v.new_rows,
               v.snapshot_rows, v.quarantined_rows, v.failures, v.data_docs_path,
               d.decision, d.champion_before, d.champion_after, d.reasons, d.decided_at,
               (SELECT count(*) FROM textclf.evaluations e WHERE e.run_id = v.run_id) AS evaluated
        FROM textclf.validation_runs v
        LEFT JOIN LATERAL (
            SELECT * FROM textclf.promotion_decisions pd WHERE pd.run_id = v.run_id
            ORDER BY pd.id DESC LIMIT 1
        ) d ON TRUE
        ORDER BY v.interval_end DESC, v.validated_at DESC
        LIMIT %s
        """,
        (limit,),
    )
    return all_dicts(cur)



def latest_evaluated_run(cur) -> str | None:
    cur.execute("SELECT run_id FROM textclf.evaluations ORDER BY evaluated_at DESC LIMIT 1")
    row = cur.fetchone()
    return row[0] if row else None


def query(cur, statement: str) -> tuple[list[str], list[tuple]]:
    """Run a fixed, read-only statement from the code base (never user input)."""
    cur.execute(statement)
    return [d.name for d in cur.description], cur.fetchall()
