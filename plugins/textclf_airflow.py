"""textclf inside Airflow: the project settings with the database of the `textclf_db`
connection. The DAG and the registry plugin both call ``textclf_settings()``; the plugins folder
is on ``sys.path`` in every Airflow process, so both can import this module."""

from __future__ import annotations


def textclf_settings():
    """``tasks.config.load_settings()`` with the `textclf_db` connection's database (extras such
    as sslmode, sslrootcert and options kept). A missing connection is an error naming it."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    from tasks.config import load_settings
    from tasks.db import CONNECTION_ID, connection_url, missing_connection

    try:
        conn = Connection.get(CONNECTION_ID)
    except AirflowNotFoundException:
        raise missing_connection() from None
    return load_settings(database_url=connection_url(
        conn.host, conn.port, conn.login, conn.password, conn.schema, conn.extra_dejson
    ))
