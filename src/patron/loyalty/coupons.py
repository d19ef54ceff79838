"""Coupons: pools of codes made with ``secrets``, checked at the till, redeemed under the
coupon's lock, and credited to the campaign that issued them. It never commits."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.orm import Session

from patron.kit.errors import Conflict, InvalidInput, NotFound
from patron.kit.money import round_money
from patron.loyalty.repository import CouponRepository
from patron.loyalty.schemas import CouponPoolIn, CouponPoolOut, CouponStats
from patron.models import Coupon, CouponPool, CouponUse, LoyaltyAccount, PosTransaction

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""No 0/O or 1/I: codes are read aloud and typed at tills. 32 symbols: 5 bits each."""
CODE_LENGTH = 10
"""50 random bits: guessing one live code among a million takes ~10^9 tries."""


def new_code(prefix: str) -> str:
    body = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    return f"{prefix}-{body}" if prefix else body


@dataclass(frozen=True)
class Applicable:
    """A code that applies to this basket, and what it gives."""

    coupon: Coupon
    pool: CouponPool
    discount: Decimal
    bonus_points: int


class CouponService:
    """Coupon pools and codes on one session."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.repo = CouponRepository(session)

    def create_pool(self, data: CouponPoolIn) -> CouponPool:
        if self.repo.pool_by_name(data.name) is not None:
            raise Conflict(f"a coupon pool named {data.name!r} exists already")
        if data.campaign_id is not None and self.repo.pool_of_campaign(data.campaign_id):
            raise Conflict(f"campaign {data.campaign_id} has a coupon pool already")
        return self.repo.add(CouponPool(**data.model_dump()))

    def pool(self, name_or_id: str) -> CouponPool:
        found = self.repo.pool_by_name(name_or_id)
        if found is None and name_or_id.isdigit():
            found = self.repo.pool(int(name_or_id))
        if found is None:
            raise NotFound(f"coupon pool {name_or_id!r} not found")
        return found

    def pools(self) -> Sequence[CouponPool]:
        return self.repo.pools()

    def generate(
        self, pool: CouponPool, *, count: int, prefix: str = "",
        owners: Sequence[int | None] | None = None,
    ) -> list[str]:  # fmt: skip
        """``count`` new codes (bound to ``owners`` when given), unique across pools."""
        codes: set[str] = set()
        while len(codes) < count:
            code = new_code(prefix)
            if code not in codes and self.repo.coupon(code) is None:
                codes.add(code)
        made = sorted(codes)
        self.repo.add_codes(pool.id, made, list(owners) if owners else [None] * count)
        return made

    def issue_for_campaign(
        self, campaign_id: int, name: str, *, discount_percent: Decimal | None,
        valid_days: int, pairs: Sequence[tuple[int, str]], at: datetime,
    ) -> CouponPool:  # fmt: skip
        """Register the personal codes a campaign sends, single-use and bound to their
        recipients, so that each redemption is credited to the campaign."""
        pool = self.repo.pool_of_campaign(campaign_id)
        if pool is None:
            pool = self.repo.add(
                CouponPool(
                    name=f"campaign {campaign_id}: {name}"[:120], campaign_id=campaign_id,
                    discount_percent=discount_percent, discount_amount=None, bonus_points=0,
                    min_basket=Decimal("0.00"), uses_per_code=1, uses_per_customer=1,
                    valid_from=at, valid_until=at + timedelta(days=valid_days),
                )
            )  # fmt: skip
        if pairs:
            self.repo.add_codes(pool.id, [code for _, code in pairs], [c for c, _ in pairs])
        return pool

    def check(
        self, code: str, *, account: LoyaltyAccount, value: Decimal, now: datetime
    ) -> Applicable:
        """The code's discount on a basket worth ``value``, or a clear refusal."""
        coupon = self.repo.coupon(code.strip().upper())
        if coupon is None:
            raise InvalidInput(f"coupon: {code!r} is not a valid code")
        pool = self.repo.pool(coupon.pool_id)
        assert pool is not None
        if now < pool.valid_from:
            raise InvalidInput(f"coupon: {code!r} is valid from {pool.valid_from:%Y-%m-%d}")
        if pool.valid_until is not None and now >= pool.valid_until:
            raise InvalidInput(f"coupon: {code!r} expired on {pool.valid_until:%Y-%m-%d}")
        if coupon.customer_id is not None and coupon.customer_id != account.customer_id:
            raise InvalidInput(f"coupon: {code!r} was issued to another customer")
        if pool.uses_per_code is not None and self.repo.uses(coupon.id) >= pool.uses_per_code:
            raise InvalidInput(f"coupon: {code!r} is used up")
        if self.repo.uses_by(pool.id, account.customer_id) >= pool.uses_per_customer:
            raise InvalidInput(
                f"coupon: {code!r}: this customer has used the pool's {pool.uses_per_customer} "
                "allowed"
            )
        if value < pool.min_basket:
            raise InvalidInput(f"coupon: {code!r} needs a basket of {pool.min_basket} or more")
        if pool.discount_percent is not None:
            discount = round_money(value * pool.discount_percent / 100)
        else:
            discount = min(pool.discount_amount or Decimal("0.00"), value)
        return Applicable(coupon, pool, discount, pool.bonus_points)

    def redeem(
        self, code: str, *, account: LoyaltyAccount, transaction: PosTransaction,
        value: Decimal, now: datetime,
    ) -> CouponUse:  # fmt: skip
        found = self.check(code, account=account, value=value, now=now)
        self.repo.lock(found.coupon.id)
        # checked again under the lock: another till may have taken the last use
        again = self.check(code, account=account, value=value, now=now)
        transaction.coupon_id = again.coupon.id
        return self.repo.add(
            CouponUse(
                coupon_id=again.coupon.id, customer_id=account.customer_id,
                transaction_id=transaction.id, uses=1, discount=again.discount, at=now,
            )
        )  # fmt: skip

    def give_back(self, transaction: PosTransaction, *, now: datetime) -> None:
        """A cancelled purchase gives its coupon use back."""
        used = self.repo.use_of(transaction.id)
        if used is None:
            return
        self.repo.lock(used.coupon_id)
        self.repo.add(
            CouponUse(
                coupon_id=used.coupon_id, customer_id=used.customer_id,
                transaction_id=transaction.id, uses=-1, discount=used.discount, at=now,
            )
        )  # fmt: skip

    def stats(self, pool: CouponPool) -> CouponStats:
        codes, redeemed, customers, given = self.repo.stats(pool.id)
        return CouponStats(
            pool=CouponPoolOut.model_validate(pool), codes=codes, redeemed=redeemed,
            customers=customers, discount_given=given,
        )  # fmt: skip

    def campaign_redemptions(self, campaign_id: int) -> dict[int, Decimal]:
        return self.repo.redemptions(campaign_id)
