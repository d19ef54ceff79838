"""Messages say whether they count toward the frequency cap, and are found by customer and
time to count them

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 22:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(
            sa.Column("capped", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
    op.create_index(
        "ix_messages_customer_created", "messages", ["customer_id", "created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_messages_customer_created", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("capped")
