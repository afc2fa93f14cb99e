"""Model registry, champion history, evaluations, predictions and the reader role.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE textclf.model_versions (
            version bigserial PRIMARY KEY,
            kind text NOT NULL,
            labels jsonb NOT NULL,
            params jsonb NOT NULL,
            metrics jsonb NOT NULL DEFAULT '{}'::jsonb,
            artifact_uri text NOT NULL,
            artifact_sha256 text NOT NULL,
            size_bytes bigint,
            data_fingerprint jsonb,
            code_version text,
            run_id text,
            logical_date timestamptz,
            train_seconds double precision,
            peak_memory_bytes bigint,
            -- sha256 of (kind, effective params, labels, data fingerprint, code version):
            -- the same training asked for twice reuses the first version.
            training_key text NOT NULL UNIQUE,
            created_at timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE textclf.evaluations (
            id bigserial PRIMARY KEY,
            run_id text NOT NULL,
            model_version bigint NOT NULL REFERENCES textclf.model_versions,
            role text NOT NULL CHECK (role IN ('candidate', 'champion')),
            test_rows integer NOT NULL,
            test_fingerprint text NOT NULL,
            metrics jsonb NOT NULL,
            comparison jsonb,
            evaluated_at timestamptz NOT NULL DEFAULT now(),
            UNIQUE (run_id, model_version)
        );

        CREATE TABLE textclf.promotion_decisions (
            id bigserial PRIMARY KEY,
            run_id text,
            decision text NOT NULL,
            champion_before bigint REFERENCES textclf.model_versions,
            champion_after bigint REFERENCES textclf.model_versions,
            reasons jsonb NOT NULL,
            actor text NOT NULL,
            decided_at timestamptz NOT NULL DEFAULT now()
        );

        -- Who was champion from when to when. The exclusion constraint makes overlapping
        -- periods impossible, the partial unique index allows one open period at most.
        CREATE TABLE textclf.champion_history (
            id bigserial PRIMARY KEY,
            model_version bigint NOT NULL REFERENCES textclf.model_versions,
            valid_from timestamptz NOT NULL,
            valid_to timestamptz,
            reason text NOT NULL,
            actor text NOT NULL,
            decision_id bigint REFERENCES textclf.promotion_decisions,
            CHECK (valid_to IS NULL OR valid_to > valid_from),
            EXCLUDE USING gist (tstzrange(valid_from, valid_to) WITH &&)
        );
        CREATE UNIQUE INDEX champion_history_one_open
            ON textclf.champion_history ((true)) WHERE valid_to IS NULL;

        -- No foreign key on model_version: its per-row check halved COPY throughput
        -- (58k -> 120k rows/s measured with bench/writeback.py); the writer loads the model
        -- version from the registry before it writes a single chunk.
        CREATE TABLE textclf.predictions (
            document_id bigint NOT NULL,
            model_version bigint NOT NULL,
            label text NOT NULL,
            confidence double precision NOT NULL,
            probabilities jsonb NOT NULL,
            run_id text,
            logical_date timestamptz,
            predicted_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (document_id, model_version)
        );
        CREATE INDEX predictions_label_logical_date ON textclf.predictions (label, logical_date);
        CREATE INDEX predictions_model_version ON textclf.predictions (model_version);

        -- One row per document: the current champion's prediction, else the newest one.
        CREATE VIEW textclf.latest_predictions AS
        SELECT DISTINCT ON (p.document_id)
               p.document_id, p.label, p.confidence, p.probabilities, p.model_version,
               mv.kind AS model_kind, (p.model_version = c.model_version) AS from_champion,
               p.run_id, p.logical_date, p.predicted_at
        FROM textclf.predictions p
        JOIN textclf.model_versions mv ON mv.version = p.model_version
        LEFT JOIN textclf.champion_history c ON c.valid_to IS NULL
        ORDER BY p.document_id, (p.model_version = c.model_version) DESC NULLS LAST,
                 p.predicted_at DESC, p.model_version DESC;

        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'textclf_reader') THEN
                CREATE ROLE textclf_reader NOLOGIN;
            END IF;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'cannot create role textclf_reader; ask a database administrator';
        END $$;
        DO $$
        BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'textclf_reader') THEN
                GRANT USAGE ON SCHEMA textclf TO textclf_reader;
                GRANT SELECT ON textclf.predictions, textclf.latest_predictions TO textclf_reader;
            END IF;
        END $$;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP VIEW textclf.latest_predictions;
        DROP TABLE textclf.predictions, textclf.champion_history, textclf.promotion_decisions,
                   textclf.evaluations, textclf.model_versions;
        """
    )
