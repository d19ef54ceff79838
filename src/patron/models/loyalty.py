"""The loyalty program: its versioned rules, accounts and cards, the append-only points
ledger with its lots, till transactions, operations (for idempotency) and tier history.

Points are whole numbers. The ledger is the truth: an account's points are the sum of its
entries, and the ``points`` column of the account is a cache written in the same
transaction as each entry (``patron loyalty verify`` checks it). No entry is ever updated
or deleted; a correction is a new entry.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from patron.kit.clock import utcnow
from patron.kit.db import Base, BigId, str_enum


class AccountStatus(StrEnum):
    ACTIVE = "active"
    BLOCKED = "blocked"


class EntryKind(StrEnum):
    """What a ledger entry does. ``earn`` and a positive ``adjust`` or ``reverse`` open a
    lot; ``burn``, ``expire`` and a negative ``adjust`` or ``reverse`` use lots up."""

    EARN = "earn"
    BURN = "burn"
    EXPIRE = "expire"
    ADJUST = "adjust"
    REVERSE = "reverse"


class TransactionStatus(StrEnum):
    CONFIRMED = "confirmed"
    PARTLY_REFUNDED = "partly_refunded"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"


class LoyaltyProgram(Base):
    """One version of the program's rules (``patron.loyalty.schemas.ProgramRules``); the
    newest is in force, the older ones stay for the record."""

    __tablename__ = "loyalty_programs"

    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    rules: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(120))
    note: Mapped[str] = mapped_column(Text, default="")


class LoyaltyAccount(Base):
    """A customer's membership: the card, its state, its tier and the cached points."""

    __tablename__ = "loyalty_accounts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("customers.id", ondelete="RESTRICT"), unique=True
    )
    card_number: Mapped[str] = mapped_column(String(32), unique=True)
    status: Mapped[AccountStatus] = mapped_column(
        str_enum(AccountStatus), default=AccountStatus.ACTIVE
    )
    tier: Mapped[str] = mapped_column(String(32))
    tier_since: Mapped[datetime] = mapped_column(default=utcnow)
    points: Mapped[int] = mapped_column(BigInteger, default=0)
    """The sum of every entry, pending ones included: a cache of the ledger."""
    lock_version: Mapped[int] = mapped_column(BigInteger, default=0)
    """Bumped by every change: the write that takes the account's lock on any backend."""
    enrolled_at: Mapped[datetime] = mapped_column(default=utcnow)
    referral_code: Mapped[str] = mapped_column(String(16), unique=True)
    """What the member gives friends ("bring a friend"); made with ``secrets``."""


class LedgerEntry(Base):
    """One movement of points. Positive entries are lots: usable from ``effective_at``
    (pending until the return window closes) until ``expires_at``."""

    __tablename__ = "loyalty_entries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("loyalty_accounts.id", ondelete="RESTRICT")
    )
    kind: Mapped[EntryKind] = mapped_column(str_enum(EntryKind))
    points: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(16))
    """order, campaign, operator or program."""
    source_ref: Mapped[str | None] = mapped_column(String(120))
    idempotency_key: Mapped[str] = mapped_column(String(240), unique=True)
    effective_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    transaction_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("loyalty_transactions.id", ondelete="RESTRICT")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(120))

    __table_args__ = (
        Index("ix_loyalty_entries_account", "account_id", "effective_at"),
        Index("ix_loyalty_entries_expiry", "expires_at"),
    )


class LotUse(Base):
    """Points of a lot taken by a negative entry, oldest lot first, so that what remains
    of each lot, and so what expires, is exact."""

    __tablename__ = "loyalty_lot_uses"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    entry_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("loyalty_entries.id", ondelete="RESTRICT")
    )
    lot_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("loyalty_entries.id", ondelete="RESTRICT")
    )
    points: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_loyalty_lot_uses_lot", "lot_id"),)


class OpenLot(Base):
    """What is left of each lot that still has points: a cache of the ledger, written in
    the same transaction as the uses, so a till reads only live lots however long the
    account's history. ``patron loyalty verify`` checks it against the ledger."""

    __tablename__ = "loyalty_open_lots"

    lot_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("loyalty_entries.id", ondelete="RESTRICT"), primary_key=True
    )
    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("loyalty_accounts.id", ondelete="RESTRICT")
    )
    remaining: Mapped[int] = mapped_column(BigInteger)
    effective_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_loyalty_open_lots_account", "account_id"),
        Index("ix_loyalty_open_lots_expiry", "expires_at"),
    )


class PosTransaction(Base):
    """A purchase confirmed at a till, with what it burned and earned, and its refunds."""

    __tablename__ = "loyalty_transactions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("loyalty_accounts.id", ondelete="RESTRICT")
    )
    receipt: Mapped[str] = mapped_column(String(120), unique=True)
    status: Mapped[TransactionStatus] = mapped_column(str_enum(TransactionStatus))
    currency: Mapped[str] = mapped_column(String(3))
    subtotal: Mapped[Decimal]
    discount: Mapped[Decimal]
    """Tier and coupon discounts together."""
    coupon_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("loyalty_coupons.id", ondelete="RESTRICT")
    )
    points_burned: Mapped[int] = mapped_column(BigInteger)
    points_value: Mapped[Decimal]
    paid: Mapped[Decimal]
    points_earned: Mapped[int] = mapped_column(BigInteger)
    refunded: Mapped[Decimal] = mapped_column(default=Decimal("0.00"))
    """Goods value returned so far, at most ``subtotal - discount``."""
    lines: Mapped[dict[str, Any]] = mapped_column(default=dict)
    confirmed_at: Mapped[datetime]

    __table_args__ = (Index("ix_loyalty_transactions_account", "account_id", "confirmed_at"),)


class LoyaltyOperation(Base):
    """A till or operator call that changed points, kept with its answer: the same key
    again replays the answer, and cannot take effect twice."""

    __tablename__ = "loyalty_operations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    request_hash: Mapped[str] = mapped_column(String(64))
    answer: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("key", name="uq_loyalty_operations_key"),)


class TierChange(Base):
    """Tier history: every move up (at once) or down (at a review)."""

    __tablename__ = "loyalty_tier_changes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("loyalty_accounts.id", ondelete="RESTRICT")
    )
    from_tier: Mapped[str | None] = mapped_column(String(32))
    to_tier: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(String(200))
    qualifying: Mapped[Decimal]
    """The qualifying measure then (rolling spend or points earned in the window)."""

    __table_args__ = (Index("ix_loyalty_tier_changes_account", "account_id", "at"),)


class ReferralStatus(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    REFUSED = "refused"


class Referral(Base):
    """A friend brought by a member's referral code: rewarded on both sides when the
    friend's first qualifying purchase is confirmed."""

    __tablename__ = "loyalty_referrals"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    referrer_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("loyalty_accounts.id", ondelete="RESTRICT")
    )
    friend_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("loyalty_accounts.id", ondelete="RESTRICT"), unique=True
    )
    """A member can be brought once."""
    status: Mapped[ReferralStatus] = mapped_column(str_enum(ReferralStatus))
    reason: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]
    transaction_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("loyalty_transactions.id", ondelete="RESTRICT")
    )

    __table_args__ = (Index("ix_loyalty_referrals_referrer", "referrer_id"),)


class MiniProgram(Base):
    """A short program on top of the permanent one (3 or 6 months, say) for a segment,
    such as the top spend group: reach ``goal`` in the period and get ``reward_points``."""

    __tablename__ = "loyalty_mini_programs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    segment_id: Mapped[int] = mapped_column(BigId, ForeignKey("segments.id", ondelete="RESTRICT"))
    measure: Mapped[str] = mapped_column(String(16))
    """``spend`` (net of refunds) or ``purchases`` in the period."""
    goal: Mapped[Decimal]
    reward_points: Mapped[int] = mapped_column(BigInteger)
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    """When its participants were taken from the segment."""
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MiniProgramMember(Base):
    """A member taking part, with their progress (a cache of their purchases in the
    period) and when they reached the goal."""

    __tablename__ = "loyalty_mini_program_members"

    program_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("loyalty_mini_programs.id", ondelete="CASCADE"), primary_key=True
    )
    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("loyalty_accounts.id", ondelete="RESTRICT"), primary_key=True
    )
    joined_at: Mapped[datetime]
    progress: Mapped[Decimal] = mapped_column(default=Decimal("0.00"))
    reached_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_loyalty_mini_program_members_account", "account_id"),)


class CouponPool(Base):
    """A batch of coupons with one offer: unique single-use codes (one per recipient of a
    campaign, say) or one shared code used many times, with limits and validity."""

    __tablename__ = "loyalty_coupon_pools"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    campaign_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("campaigns.id", ondelete="SET NULL"), unique=True
    )
    """Redemptions of the pool's codes are credited to this campaign."""
    discount_percent: Mapped[Decimal | None]
    discount_amount: Mapped[Decimal | None]
    bonus_points: Mapped[int] = mapped_column(BigInteger, default=0)
    min_basket: Mapped[Decimal] = mapped_column(default=Decimal("0.00"))
    uses_per_code: Mapped[int | None]
    """1 for single-use codes; None for no limit."""
    uses_per_customer: Mapped[int] = mapped_column(default=1)
    valid_from: Mapped[datetime]
    valid_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Coupon(Base):
    """One code of a pool, bound to a customer when it was issued to one."""

    __tablename__ = "loyalty_coupons"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    pool_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("loyalty_coupon_pools.id", ondelete="RESTRICT")
    )
    code: Mapped[str] = mapped_column(String(40), unique=True)
    customer_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("customers.id", ondelete="SET NULL")
    )
    lock_version: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_loyalty_coupons_pool", "pool_id"),)


class CouponUse(Base):
    """A redemption (``uses`` 1) at a till, or its undoing (-1) when the purchase is
    cancelled: append-only, so that what a code has left is a sum."""

    __tablename__ = "loyalty_coupon_uses"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    coupon_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("loyalty_coupons.id", ondelete="RESTRICT")
    )
    customer_id: Mapped[int] = mapped_column(BigId, ForeignKey("customers.id", ondelete="RESTRICT"))
    transaction_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("loyalty_transactions.id", ondelete="RESTRICT")
    )
    uses: Mapped[int]
    discount: Mapped[Decimal]
    at: Mapped[datetime]

    __table_args__ = (
        Index("ix_loyalty_coupon_uses_coupon", "coupon_id", "customer_id"),
        Index("ix_loyalty_coupon_uses_transaction", "transaction_id"),
    )


__all__ = [
    "AccountStatus",
    "Coupon",
    "CouponPool",
    "CouponUse",
    "EntryKind",
    "LedgerEntry",
    "LotUse",
    "LoyaltyAccount",
    "LoyaltyOperation",
    "LoyaltyProgram",
    "MiniProgram",
    "MiniProgramMember",
    "OpenLot",
    "PosTransaction",
    "Referral",
    "ReferralStatus",
    "TierChange",
    "TransactionStatus",
]
