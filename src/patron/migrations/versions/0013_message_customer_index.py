"""Messages are found by customer and time, for the frequency cap on journey sends

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 22:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_messages_customer_created", "messages", ["customer_id", "created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_messages_customer_created", table_name="messages")
