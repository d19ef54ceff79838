"""Messages keep the provider's id and the delivery and read times its callbacks report

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import patron.kit.db

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("provider_ref", sa.String(length=120), nullable=True))
        batch.add_column(
            sa.Column("delivered_at", patron.kit.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch.add_column(
            sa.Column("read_at", patron.kit.db.UTCDateTime(timezone=True), nullable=True)
        )
    op.create_index("ix_messages_provider_ref", "messages", ["provider_ref"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_messages_provider_ref", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("read_at")
        batch.drop_column("delivered_at")
        batch.drop_column("provider_ref")
