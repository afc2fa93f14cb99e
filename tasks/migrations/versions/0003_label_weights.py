"""Optional per-row weight of labelled texts (e.g. annotator confidence).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE textclf.labelled_texts
            ADD COLUMN weight double precision CHECK (weight IS NULL OR weight >= 0);
        COMMENT ON COLUMN textclf.labelled_texts.weight IS
            'How much the label can be trusted (e.g. annotator agreement); NULL counts as 1';
        """
    )


def downgrade() -> None:
    op.execute("ALTER TABLE textclf.labelled_texts DROP COLUMN weight")
