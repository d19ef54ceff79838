"""The program's rules as data, and what the till and the operators send and get back.

Rules are validated once, when a version is saved; the engine then only reads them. Money
is ``Decimal`` and must be positive where a till sends it, so a zero, negative or
non-numeric amount is refused with the field that held it, before any points move.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from patron.models import AccountStatus, ReferralStatus, TransactionStatus


class _Rules(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Tier(_Rules):
    """A level of the program: reached by qualifying ``threshold``; it multiplies points
    earned and takes a discount off the basket."""

    name: str = Field(min_length=1, max_length=32)
    threshold: Decimal = Field(ge=0)
    earn_multiplier: Decimal = Field(default=Decimal("1"), gt=0, le=10)
    discount_percent: Decimal = Field(default=Decimal("0"), ge=0, le=50)


class Qualification(_Rules):
    """How tiers are earned: rolling spend (net of refunds) or points earned over the
    last ``window_days``, never the balance. Moves up are at once; moves down only at a
    review, and not before ``grace_days`` after the tier was reached."""

    measure: Literal["spend", "points_earned"] = "spend"
    window_days: int = Field(default=365, ge=1, le=3 * 365)
    grace_days: int = Field(default=30, ge=0, le=365)


class Promotion(_Rules):
    """Extra points for a while: ``multiplier`` on lines of ``categories`` (all when
    empty), on ``weekdays`` (1 Monday … 7 Sunday; all when empty), for members of
    ``segment`` (everyone when not set)."""

    name: str = Field(min_length=1, max_length=80)
    multiplier: Decimal = Field(gt=0, le=20)
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    weekdays: list[int] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)
    segment: str | None = None

    @field_validator("weekdays")
    @classmethod
    def _days(cls, value: list[int]) -> list[int]:
        wrong = [d for d in value if not 1 <= d <= 7]
        if wrong:
            raise ValueError(f"weekdays are 1 (Monday) to 7 (Sunday), not {wrong}")
        return value


class Earning(_Rules):
    """Points per unit of money paid, with multipliers per category or product; nothing
    below ``min_basket``."""

    base_rate: Decimal = Field(default=Decimal("0.05"), ge=0, le=10)
    categories: dict[str, Decimal] = Field(default_factory=dict)
    products: dict[str, Decimal] = Field(default_factory=dict)
    min_basket: Decimal = Field(default=Decimal("0"), ge=0)
    promotions: list[Promotion] = Field(default_factory=list)
    welcome_bonus: int = Field(default=0, ge=0)
    birthday_bonus: int = Field(default=0, ge=0)

    @field_validator("categories", "products")
    @classmethod
    def _positive(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        wrong = sorted(k for k, v in value.items() if v < 0)
        if wrong:
            raise ValueError(f"multipliers must not be negative: {', '.join(wrong)}")
        return value


class Referrals(_Rules):
    """Bring a friend: both sides get points when the friend's first purchase of at least
    ``min_purchase`` (after discounts) is confirmed."""

    referrer_points: int = Field(default=0, ge=0)
    friend_points: int = Field(default=0, ge=0)
    min_purchase: Decimal = Field(default=Decimal("0"), ge=0)


class ProgramRules(_Rules):
    """The whole program. Saved as a new version each time; the newest is in force."""

    name: str = Field(default="Patron rewards", min_length=1, max_length=80)
    currency: str = Field(default="RUB", pattern=r"^[A-Z]{3}$")
    point_value: Decimal = Field(default=Decimal("1.00"), gt=0)
    """Money one point pays for."""
    max_burn_share: Decimal = Field(default=Decimal("0.5"), gt=0, le=1)
    """The largest share of a basket (after discounts) that points may pay."""
    pending_days: int = Field(default=14, ge=0, le=365)
    """Earned points are pending, not spendable, until the return window closes."""
    expiry_days: int | None = Field(default=365, ge=1)
    expiry_notice_days: int = Field(default=30, ge=0)
    breakage_rate: Decimal | None = Field(default=None, ge=0, le=1)
    """The share of points expected never to be redeemed; None: learn it from history."""
    earning: Earning = Field(default_factory=Earning)
    tiers: list[Tier] = Field(
        default_factory=lambda: [Tier(name="Basic", threshold=Decimal("0"))], min_length=1
    )
    qualification: Qualification = Field(default_factory=Qualification)
    referrals: Referrals = Field(default_factory=Referrals)

    @model_validator(mode="after")
    def _tiers(self) -> Self:
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tier names must differ: {names}")
        thresholds = [t.threshold for t in self.tiers]
        if (
            thresholds[0] != 0
            or thresholds != sorted(thresholds)
            or len(set(thresholds)) != len(thresholds)
        ):
            raise ValueError("tiers go from threshold 0 upwards, each higher than the last")
        return self

    def tier(self, name: str) -> Tier:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        # an account's tier may be one a newer version of the rules dropped
        return self.tiers[0]

    def rank(self, name: str) -> int:
        names = [t.name for t in self.tiers]
        return names.index(name) if name in names else 0

    def qualifying_tier(self, measure: Decimal) -> Tier:
        return [t for t in self.tiers if t.threshold <= measure][-1]


# -- the till --------------------------------------------------------------------------


class BasketLine(BaseModel):
    """One line of a basket: quantity and unit price must be positive numbers."""

    model_config = ConfigDict(extra="forbid")

    sku: str = Field(min_length=1, max_length=64)
    category: str | None = Field(default=None, max_length=64)
    quantity: Decimal = Field(gt=0, le=100_000)
    unit_price: Decimal = Field(gt=0, le=Decimal("100000000"))


class QuoteIn(BaseModel):
    """A basket and a card: what would the purchase cost and earn?"""

    model_config = ConfigDict(extra="forbid")

    card: str = Field(min_length=1, max_length=32)
    lines: list[BasketLine] = Field(min_length=1, max_length=500)
    redeem_points: int = Field(default=0, ge=0)
    coupon: str | None = Field(default=None, min_length=1, max_length=40)
    at: AwareDatetime | None = None


class ConfirmIn(QuoteIn):
    """The purchase made: burn and earn at once. ``receipt`` is the till's own id."""

    receipt: str = Field(min_length=1, max_length=120)


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    receipt: str = Field(min_length=1, max_length=120)


class RefundIn(CancelIn):
    """Goods worth ``amount`` (at the basket's prices after discount) came back."""

    amount: Decimal = Field(gt=0)


class LineQuote(BaseModel):
    sku: str
    amount: Decimal
    discount: Decimal
    points: int
    multiplier: Decimal


class QuoteOut(BaseModel):
    """What the purchase costs and earns; nothing is written by a quote."""

    card: str
    tier: str
    currency: str
    subtotal: Decimal
    discount: Decimal
    discounts: list[str]
    available_points: int
    pending_points: int
    max_redeemable: int
    redeem_points: int
    points_value: Decimal
    to_pay: Decimal
    points_to_earn: int
    promotions: list[str]
    coupon: str | None = None
    coupon_discount: Decimal = Decimal("0.00")
    lines: list[LineQuote]


class ConfirmOut(BaseModel):
    """A confirmed purchase and the account after it."""

    transaction_id: int
    receipt: str
    status: TransactionStatus
    subtotal: Decimal
    discount: Decimal
    points_burned: int
    points_value: Decimal
    paid: Decimal
    points_earned: int
    earn_available_at: datetime
    available_points: int
    pending_points: int
    tier: str
    tier_changed: bool


class RefundOut(BaseModel):
    """A refund or cancellation: points given back and taken back, and money due."""

    transaction_id: int
    receipt: str
    status: TransactionStatus
    refunded: Decimal
    points_returned: int
    points_reversed: int
    points_short: int
    """Earned points already spent, so not taken back; their value is kept from the money."""
    money_back: Decimal
    available_points: int
    pending_points: int


class AdjustIn(BaseModel):
    """An operator's correction: a reason is mandatory."""

    model_config = ConfigDict(extra="forbid")

    points: int = Field(description="Positive adds a lot; negative takes points, oldest first")
    reason: str = Field(min_length=3, max_length=200)

    @field_validator("points")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("an adjustment of 0 points changes nothing")
        return value


class EnrolIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: int
    card_number: str | None = Field(default=None, min_length=4, max_length=32, pattern=r"^\d+$")
    referral_code: str | None = Field(default=None, min_length=4, max_length=16)


class AccountOut(BaseModel):
    """An account with its points derived from the ledger now."""

    id: int
    customer_id: int
    card_number: str
    referral_code: str
    status: AccountStatus
    tier: str
    tier_since: datetime
    available_points: int
    pending_points: int
    expiring_soon: int
    qualifying: Decimal
    enrolled_at: datetime


class EntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    points: int
    reason: str
    source: str
    source_ref: str | None
    effective_at: datetime
    expires_at: datetime | None
    created_at: datetime
    created_by: str


class Liability(BaseModel):
    """Points outstanding and what they may cost."""

    currency: str
    accounts: int
    available_points: int
    pending_points: int
    outstanding_points: int
    breakage_rate: Decimal
    breakage_source: str
    expected_redeemed_points: int
    liability: Decimal
    """Expected redemptions at the point value: the money the program owes."""
    expiring_next_30_days: int


class VerifyOut(BaseModel):
    """Accounts whose cached points differ from their ledger (``account``), lots whose
    open remainder differs from their uses (``lot``), and anything negative (accounts,
    and lots as negative ids)."""

    accounts: int
    mismatches: list[dict[str, int]]
    negative: list[int]


class CouponPoolIn(BaseModel):
    """A pool of coupons: a percentage or an amount off, and/or bonus points."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=120)
    discount_percent: Decimal | None = Field(default=None, gt=0, le=100)
    discount_amount: Decimal | None = Field(default=None, gt=0)
    bonus_points: int = Field(default=0, ge=0)
    min_basket: Decimal = Field(default=Decimal("0"), ge=0)
    uses_per_code: int | None = Field(default=1, ge=1)
    uses_per_customer: int = Field(default=1, ge=1)
    valid_from: AwareDatetime
    valid_until: AwareDatetime | None = None
    campaign_id: int | None = None

    @model_validator(mode="after")
    def _offer(self) -> Self:
        if not (self.discount_percent or self.discount_amount or self.bonus_points):
            raise ValueError("a coupon gives a discount_percent, a discount_amount or bonus_points")
        if self.discount_percent and self.discount_amount:
            raise ValueError("give discount_percent or discount_amount, not both")
        if self.valid_until and self.valid_until <= self.valid_from:
            raise ValueError("'valid_until' must be after 'valid_from'")
        return self


class CouponPoolOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    campaign_id: int | None
    discount_percent: Decimal | None
    discount_amount: Decimal | None
    bonus_points: int
    min_basket: Decimal
    uses_per_code: int | None
    uses_per_customer: int
    valid_from: datetime
    valid_until: datetime | None


class CouponCodesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1, le=1_000_000)
    prefix: str = Field(default="", pattern=r"^[A-Z0-9]{0,12}$")


class CouponStats(BaseModel):
    """A pool's codes and their redemptions."""

    pool: CouponPoolOut
    codes: int
    redeemed: int
    customers: int
    discount_given: Decimal


class ReferralOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    referrer_id: int
    friend_id: int
    status: ReferralStatus
    reason: str | None
    created_at: datetime
    completed_at: datetime | None


class MiniProgramIn(BaseModel):
    """A mini-program: for ``segment``, reach ``goal`` of ``measure`` between ``starts_at``
    and ``ends_at`` to get ``reward_points``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=120)
    segment: str = Field(min_length=1)
    measure: Literal["spend", "purchases"] = "spend"
    goal: Decimal = Field(gt=0)
    reward_points: int = Field(gt=0)
    starts_at: AwareDatetime
    ends_at: AwareDatetime

    @model_validator(mode="after")
    def _period(self) -> Self:
        if self.ends_at <= self.starts_at:
            raise ValueError("'ends_at' must be after 'starts_at'")
        if self.ends_at - self.starts_at > timedelta(days=366):
            raise ValueError("a mini-program runs for a year at most; use the tiers beyond")
        return self


class MiniProgramOut(BaseModel):
    """A mini-program and how its members stand."""

    id: int
    name: str
    segment_id: int
    measure: str
    goal: Decimal
    reward_points: int
    starts_at: datetime
    ends_at: datetime
    started_at: datetime | None
    members: int
    reached: int
    mean_progress: Decimal
