"""Backfill semantics: the data time from which each champion decides, and the data interval of
every run decision.

A run for logical date D predicts with the champion of D: the one whose decision took effect at
or before D's data interval end. A run promotes with effect from its interval end; a manual
promotion or a rollback takes effect when it is made. A run whose interval ends before the
current champion took effect is historical: its decision is recorded, never applied.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE textclf.champion_history ADD COLUMN effective_from timestamptz;
        UPDATE textclf.champion_history SET effective_from = valid_from;
        ALTER TABLE textclf.champion_history ALTER COLUMN effective_from SET NOT NULL;
        COMMENT ON COLUMN textclf.champion_history.effective_from IS
            'Data time from which this champion decides: the data interval end of the run that '
            'promoted it, or valid_from for manual promotions and rollbacks';
        CREATE INDEX champion_history_effective_from
            ON textclf.champion_history (effective_from, valid_from);

        ALTER TABLE textclf.promotion_decisions ADD COLUMN interval_end timestamptz;
        COMMENT ON COLUMN textclf.promotion_decisions.interval_end IS
            'End of the data interval of the run that took the decision (NULL: manual)';
        CREATE INDEX promotion_decisions_run_id ON textclf.promotion_decisions (run_id);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX textclf.promotion_decisions_run_id;
        ALTER TABLE textclf.promotion_decisions DROP COLUMN interval_end;
        DROP INDEX textclf.champion_history_effective_from;
        ALTER TABLE textclf.champion_history DROP COLUMN effective_from;
        """
    )
