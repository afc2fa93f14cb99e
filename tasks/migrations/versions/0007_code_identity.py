"""Code identity: what code trained each model version.

- code_version: from now on ``src-`` and 16 hex digits of a sha256 over the source (tasks/,
  dags/, plugins/, expectations/), the code part of the training key: a code change trains again
  on a re-run or backfill, the same source reuses its model whatever commit or image it ran from.
- code_identity: the rest, for the audit trail: {"source", "git_commit", "git_dirty", "image",
  "package"}; "image" is TEXTCLF_CODE_VERSION, a build argument of the image.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE textclf.model_versions ADD COLUMN code_identity jsonb;
        COMMENT ON COLUMN textclf.model_versions.code_version IS
            'Content hash of the source that trained it (src-...), part of the training key; '
            'before migration 0007 a short git commit or textclf-<package version>';
        COMMENT ON COLUMN textclf.model_versions.code_identity IS
            'The code that trained it: source hash, git commit and dirty flag (a checkout), '
            'image (TEXTCLF_CODE_VERSION), package version; NULL before migration 0007';
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE textclf.model_versions DROP COLUMN code_identity;
        COMMENT ON COLUMN textclf.model_versions.code_version IS NULL;
        """
    )
