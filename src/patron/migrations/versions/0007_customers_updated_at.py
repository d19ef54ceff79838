"""Index on customers.updated_at: the segment replica's freshness check reads its maximum

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 08:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_customers_updated_at", "customers", ["updated_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_customers_updated_at", table_name="customers")
