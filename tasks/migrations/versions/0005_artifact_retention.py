"""Retention: when an artifact was deleted (the version row stays, for the audit trail).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE textclf.model_versions ADD COLUMN artifact_deleted_at timestamptz;
        COMMENT ON COLUMN textclf.model_versions.artifact_deleted_at IS
            'Set when retention deleted the artifact; never set for a version that was champion';
        """
    )


def downgrade() -> None:
    op.execute("ALTER TABLE textclf.model_versions DROP COLUMN artifact_deleted_at")
