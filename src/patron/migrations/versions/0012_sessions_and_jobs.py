"""Session generations of web accounts, and the web interface's background jobs

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import patron.kit.db

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch mode: SQLite cannot add a NOT NULL column with ALTER TABLE alone everywhere
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("session_generation", sa.Integer(), server_default="0", nullable=False)
        )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("label", sa.String(length=300), nullable=False),
        sa.Column("actor", sa.String(length=120), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "running", "finished", "failed", name="jobstatus", native_enum=False, length=16
            ),
            nullable=False,
        ),
        sa.Column("done", sa.Float(), nullable=False),
        sa.Column("step", sa.String(length=300), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("started_at", patron.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", patron.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", patron.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_index("ix_jobs_started_at", "jobs", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_started_at", table_name="jobs")
    op.drop_table("jobs")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("session_generation")
