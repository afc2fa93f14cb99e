"""Hardening: quarantine per row version and reversible, documents that cannot be scored are
quarantined too, a champion lock the reader role cannot take, views for analysts.

- quarantine.row_hash: the version of the row that failed (a hash of its content); a corrected
  row is judged again. released_at/released_by: `textclf quarantine release` lets a row back.
- stage 'prediction': documents with no text, or too long, are recorded instead of scored.
- champion_lock: one row locked FOR UPDATE around every champion change. Locking a row needs
  UPDATE on it, which textclf_reader lacks; an advisory lock could be taken by any role.
- textclf.champion_periods: who was champion when, and why, for analysts (textclf_reader).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE textclf.quarantine ADD COLUMN row_hash text;
        ALTER TABLE textclf.quarantine ADD COLUMN released_at timestamptz;
        ALTER TABLE textclf.quarantine ADD COLUMN released_by text;
        ALTER TABLE textclf.quarantine DROP CONSTRAINT quarantine_stage_source_source_row_reason_key;
        CREATE UNIQUE INDEX quarantine_one_per_row_version
            ON textclf.quarantine (stage, source, source_row, reason, coalesce(row_hash, ''));
        ALTER TABLE textclf.quarantine DROP CONSTRAINT quarantine_stage_check;
        ALTER TABLE textclf.quarantine ADD CONSTRAINT quarantine_stage_check
            CHECK (stage IN ('import', 'validation', 'prediction'));
        COMMENT ON COLUMN textclf.quarantine.row_hash IS
            'Content hash of the row version that failed; NULL (older entries): any version';

        CREATE TABLE textclf.champion_lock (id integer PRIMARY KEY CHECK (id = 1));
        INSERT INTO textclf.champion_lock VALUES (1);

        CREATE VIEW textclf.champion_periods AS
        SELECT h.model_version, mv.kind, h.valid_from, h.valid_to, h.effective_from, h.reason, h.actor
        FROM textclf.champion_history h JOIN textclf.model_versions mv ON mv.version = h.model_version;

        DO $$
        BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'textclf_reader') THEN
                GRANT SELECT ON textclf.champion_periods TO textclf_reader;
            END IF;
        END $$;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP VIEW textclf.champion_periods;
        DROP TABLE textclf.champion_lock;
        DELETE FROM textclf.quarantine WHERE stage = 'prediction';
        ALTER TABLE textclf.quarantine DROP CONSTRAINT quarantine_stage_check;
        ALTER TABLE textclf.quarantine ADD CONSTRAINT quarantine_stage_check
            CHECK (stage IN ('import', 'validation'));
        DROP INDEX textclf.quarantine_one_per_row_version;
        ALTER TABLE textclf.quarantine ADD CONSTRAINT quarantine_stage_source_source_row_reason_key
            UNIQUE (stage, source, source_row, reason);
        ALTER TABLE textclf.quarantine DROP COLUMN released_by, DROP COLUMN released_at,
            DROP COLUMN row_hash;
        """
    )
