"""Alembic environment: schema ``textclf``, version table inside it, one upgrader at a time."""

from alembic import context
from sqlalchemy import create_engine, text

MIGRATION_LOCK_KEY = 7_310_001  # any constant; serialises concurrent `textclf db upgrade`

url = context.config.get_main_option("sqlalchemy.url")
assert url, "sqlalchemy.url is not configured"
engine = create_engine(url)
with engine.connect() as connection:
    connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    try:
        connection.execute(text("CREATE SCHEMA IF NOT EXISTS textclf"))
        connection.commit()
        context.configure(
            connection=connection,
            version_table_schema="textclf",
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
        connection.commit()
engine.dispose()
