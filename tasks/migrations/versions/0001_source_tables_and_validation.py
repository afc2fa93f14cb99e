"""Source tables, quarantine, validation runs and label sets.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE textclf.labelled_texts (
            id bigint PRIMARY KEY,
            text text NOT NULL,
            label text NOT NULL,
            labelled_at timestamptz NOT NULL,
            imported_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX labelled_texts_labelled_at ON textclf.labelled_texts (labelled_at);

        CREATE TABLE textclf.documents (
            id bigint PRIMARY KEY,
            text text NOT NULL,
            created_at timestamptz NOT NULL,
            imported_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX documents_created_at ON textclf.documents (created_at);

        -- Every row the system refused, with where it came from and why: nothing is dropped.
        CREATE TABLE textclf.quarantine (
            id bigserial PRIMARY KEY,
            stage text NOT NULL CHECK (stage IN ('import', 'validation')),
            source text NOT NULL,        -- file path, or schema.table
            source_row text NOT NULL,    -- line number in the file, or the row's id
            field text,
            reason text NOT NULL,
            expectation text,
            raw jsonb,
            run_id text,
            quarantined_at timestamptz NOT NULL DEFAULT now(),
            UNIQUE (stage, source, source_row, reason)
        );
        CREATE INDEX quarantine_source_row ON textclf.quarantine (source, source_row);

        CREATE TABLE textclf.validation_runs (
            id bigserial PRIMARY KEY,
            run_id text NOT NULL UNIQUE,
            logical_date timestamptz,
            interval_start timestamptz NOT NULL,
            interval_end timestamptz NOT NULL,
            status text NOT NULL CHECK (status IN ('passed', 'failed', 'no_new_data')),
            new_rows integer NOT NULL,
            snapshot_rows integer NOT NULL,
            quarantined_rows integer NOT NULL,
            failures jsonb NOT NULL,
            results jsonb NOT NULL,
            fingerprint jsonb NOT NULL,
            data_docs_path text,
            snapshot_path text,
            validated_at timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE textclf.label_sets (
            id bigserial PRIMARY KEY,
            labels jsonb NOT NULL,
            origin text NOT NULL,
            run_id text,
            created_at timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE textclf.pipeline_events (
            id bigserial PRIMARY KEY,
            run_id text,
            task_id text,
            event text NOT NULL,
            message text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE textclf.pipeline_events, textclf.label_sets, textclf.validation_runs,
                   textclf.quarantine, textclf.documents, textclf.labelled_texts;
        """
    )
