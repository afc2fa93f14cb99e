"""When a model version was last stored or picked by a night: retention's grace counts from it.

A version retrained under the same key (after retention deleted its artifact) or reused by a
re-run keeps its old created_at; without this, gc could delete it in the minutes between the
night picking it and judging it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE textclf.model_versions ADD COLUMN last_used_at timestamptz;
        UPDATE textclf.model_versions SET last_used_at = created_at;
        ALTER TABLE textclf.model_versions ALTER COLUMN last_used_at SET DEFAULT now();
        COMMENT ON COLUMN textclf.model_versions.last_used_at IS
            'When the artifact was last stored, or the version last reused by a night: retention''s grace counts from it';
        """
    )


def downgrade() -> None:
    op.execute("ALTER TABLE textclf.model_versions DROP COLUMN last_used_at;")
