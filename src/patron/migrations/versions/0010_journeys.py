"""Triggered campaigns and journeys: the trigger and steps on the campaign, entries, the
step log, the trigger cursors, and journey messages keyed by entry and step

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 19:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import patron.kit.db

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("trigger", patron.kit.db.JSONDict(), nullable=True))
        batch.add_column(sa.Column("journey", patron.kit.db.JSONDict(), nullable=True))
        batch.add_column(
            sa.Column(
                "trigger_state", patron.kit.db.JSONDict(), nullable=False, server_default="{}"
            )
        )
    with op.batch_alter_table("campaigns") as batch:
        batch.alter_column("trigger_state", server_default=None)
    op.create_table(
        "journey_entries",
        sa.Column("id", _ID, nullable=False),
        sa.Column("campaign_id", _ID, nullable=False),
        sa.Column("customer_id", _ID, nullable=False),
        sa.Column("source_ref", sa.String(length=80), nullable=False),
        sa.Column("fired_at", patron.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("entered_at", patron.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "active",
                "completed",
                "converted",
                "exited",
                "control",
                name="entrystatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("step", sa.String(length=40), nullable=True),
        sa.Column("wake_at", patron.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("waiting_for", sa.String(length=64), nullable=True),
        sa.Column("context", patron.kit.db.JSONDict(), nullable=False),
        sa.Column("ended_at", patron.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_journey_entries_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_journey_entries_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journey_entries")),
        sa.UniqueConstraint("campaign_id", "source_ref", name="uq_journey_entries_source"),
    )
    op.create_index("ix_journey_entries_due", "journey_entries", ["status", "wake_at"])
    op.create_index("ix_journey_entries_customer", "journey_entries", ["customer_id", "status"])
    op.create_index(
        "ix_journey_entries_campaign", "journey_entries",
        ["campaign_id", "customer_id", "entered_at"],
    )  # fmt: skip
    op.create_table(
        "journey_steps",
        sa.Column("id", _ID, nullable=False),
        sa.Column("entry_id", _ID, nullable=False),
        sa.Column("campaign_id", _ID, nullable=False),
        sa.Column("step", sa.String(length=48), nullable=False),
        sa.Column("at", patron.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=200), nullable=False),
        sa.Column("message_id", _ID, nullable=True),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["journey_entries.id"],
            name=op.f("fk_journey_steps_entry_id_journey_entries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journey_steps")),
        sa.UniqueConstraint("entry_id", "step", name="uq_journey_steps_entry_step"),
    )
    op.create_index("ix_journey_steps_campaign", "journey_steps", ["campaign_id", "step"])
    op.create_table(
        "trigger_cursors",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("gaps", patron.kit.db.JSONDict(), nullable=False),
        sa.Column("updated_at", patron.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_trigger_cursors")),
    )
    with op.batch_alter_table("messages") as batch:
        batch.add_column(
            sa.Column("step_key", sa.String(length=64), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("entry_id", _ID, nullable=True))
        batch.drop_constraint("uq_messages_campaign_customer", type_="unique")
        batch.create_unique_constraint(
            "uq_messages_campaign_customer_step", ["campaign_id", "customer_id", "step_key"]
        )
    with op.batch_alter_table("messages") as batch:
        batch.alter_column("step_key", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint("uq_messages_campaign_customer_step", type_="unique")
        batch.create_unique_constraint(
            "uq_messages_campaign_customer", ["campaign_id", "customer_id"]
        )
        batch.drop_column("entry_id")
        batch.drop_column("step_key")
    op.drop_table("trigger_cursors")
    op.drop_index("ix_journey_steps_campaign", table_name="journey_steps")
    op.drop_table("journey_steps")
    op.drop_index("ix_journey_entries_campaign", table_name="journey_entries")
    op.drop_index("ix_journey_entries_customer", table_name="journey_entries")
    op.drop_index("ix_journey_entries_due", table_name="journey_entries")
    op.drop_table("journey_entries")
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("trigger_state")
        batch.drop_column("journey")
        batch.drop_column("trigger")
