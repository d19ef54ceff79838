"""Coupons at the till: limits per code and per customer, validity, a cancelled purchase
giving its use back, and a campaign's personal codes credited to the campaign."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from patron.campaigns.service import CampaignService
from patron.kit.errors import InvalidInput
from patron.loyalty.coupons import CouponService
from patron.loyalty.schemas import CancelIn, CouponPoolIn, EnrolIn, ProgramRules, QuoteIn
from patron.loyalty.service import LoyaltyService
from patron.measure.service import MeasureService
from patron.models import Coupon, Message
from patron.segments.schemas import SegmentIn, parse_rule
from patron.segments.service import SegmentService
from tests.campaigns.test_plan import plan
from tests.fixtures.segments import store_base
from tests.loyalty.test_ledger import CARD, RULES, T0, confirm, lines

DINA = "5555000011"
LAUNCH = datetime(2026, 4, 10, 9, 0, tzinfo=UTC)


@pytest.fixture
def program(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """Anna (CARD) and Dina enrolled; a shared 10% code for baskets of 500 or more, once
    per customer, valid for January."""
    with session_factory() as session:
        store_base(session)
        service = LoyaltyService(session)
        service.configure(ProgramRules.model_validate(RULES), actor="admin")
        service.enrol(EnrolIn(customer_id=1, card_number=CARD), actor="admin", now=T0)
        service.enrol(EnrolIn(customer_id=5, card_number=DINA), actor="admin", now=T0)
        coupons = CouponService(session)
        pool = coupons.create_pool(
            CouponPoolIn(
                name="january", discount_percent=Decimal("10"), bonus_points=50,
                min_basket=Decimal("500"), uses_per_code=None, uses_per_customer=1,
                valid_from=T0 - timedelta(days=9), valid_until=T0 + timedelta(days=21),
            )
        )  # fmt: skip
        coupons.generate(pool, count=1, prefix="JAN")
        session.commit()
    return session_factory


def shared_code(factory: sessionmaker[Session]) -> str:
    with factory() as session:
        return session.scalars(select(Coupon.code)).one()


def test_a_shared_code_once_per_customer_with_validity_and_minimum(
    program: sessionmaker[Session],
) -> None:
    code = shared_code(program)
    assert re.fullmatch(r"JAN-[A-HJ-NP-Z2-9]{10}", code)
    basket = lines(("B1", "books", "2", "500"))
    with program() as session:
        quote = LoyaltyService(session).quote(QuoteIn(card=CARD, lines=basket, coupon=code, at=T0))
    # 10% of 1,000 off, and the money paid (900) earns 90 plus the coupon's 50
    assert (quote.discount, quote.to_pay, quote.points_to_earn) == (
        Decimal("100.00"), Decimal("900.00"), 140,
    )  # fmt: skip
    assert quote.discounts == [f"coupon {code}: 100.00"]

    anna = confirm(program, "R1", basket, at=T0, coupon=code)
    assert (anna.discount, anna.paid, anna.points_earned) == (Decimal("100.00"), 900, 140)
    with pytest.raises(InvalidInput, match="this customer has used the pool's 1 allowed"):
        confirm(program, "R2", basket, at=T0, coupon=code)
    # another customer may use the shared code; a small basket may not
    with pytest.raises(InvalidInput, match=r"needs a basket of 500\.00 or more"):
        confirm(program, "R3", lines(("B1", "books", "1", "100")), at=T0, card=DINA, coupon=code)
    confirm(program, "R4", basket, at=T0, card=DINA, coupon=code)
    with pytest.raises(InvalidInput, match=r"expired on 2026-01-31"):
        confirm(program, "R5", basket, at=T0 + timedelta(days=22), card=CARD, coupon=code)
    with pytest.raises(InvalidInput, match="'NOPE' is not a valid code"):
        confirm(program, "R6", basket, at=T0, coupon="NOPE")

    # a cancelled purchase gives the use back
    with program() as session:
        LoyaltyService(session).cancel(CancelIn(receipt="R1"), key="c1", actor="till", now=T0)
        session.commit()
    confirm(program, "R7", basket, at=T0, coupon=code)
    with program() as session:
        coupons = CouponService(session)
        stats = coupons.stats(coupons.pool("january"))
        # R1 (cancelled), R4, R7: two net redemptions by two customers, 200 given
        assert (stats.codes, stats.redeemed, stats.customers, stats.discount_given) == (
            1, 2, 2, Decimal("200.00"),
        )  # fmt: skip
        assert LoyaltyService(session).verify().mismatches == []


def test_a_campaigns_personal_codes_are_bound_and_credited_to_it(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as session:
        store_base(session)
        loyalty = LoyaltyService(session)
        loyalty.configure(ProgramRules.model_validate(RULES), actor="admin")
        loyalty.enrol(EnrolIn(customer_id=1, card_number=CARD), actor="admin", now=T0)
        loyalty.enrol(EnrolIn(customer_id=5, card_number=DINA), actor="admin", now=T0)
        SegmentService(session).create(
            SegmentIn(name="subscribers", rule=parse_rule({"kind": "consent", "channel": "email"})),
            actor="t",
        )
        campaigns = CampaignService(session)
        campaign = campaigns.create(
            plan(segment="subscribers", control_share=0.0,
                 offer={"kind": "coupon", "coupon_prefix": "KEEP", "discount_percent": "15",
                        "cost": "100.00", "valid_days": 14}),
            actor="maria",
        )  # fmt: skip
        # in April Anna and Dina are subscribed (Boris withdrew on 04-01)
        campaigns.launch(campaign.id, actor="maria", at=LAUNCH)
        session.commit()
        codes = {m.customer_id: m.coupon for m in session.scalars(select(Message))}
    assert sorted(codes) == [1, 5]
    anna_code, dina_code = codes[1], codes[5]
    assert anna_code is not None and dina_code is not None
    basket = lines(("B1", "books", "1", "1000"))
    with pytest.raises(InvalidInput, match="was issued to another customer"):
        confirm(session_factory, "R1", basket, at=LAUNCH, coupon=dina_code)
    done = confirm(session_factory, "R2", basket, at=LAUNCH + timedelta(days=1), coupon=anna_code)
    assert done.discount == Decimal("150.00")
    with pytest.raises(InvalidInput, match="is used up"):
        confirm(session_factory, "R3", basket, at=LAUNCH + timedelta(days=1), coupon=anna_code)
    with session_factory() as session:
        coupons = CouponService(session)
        assert coupons.campaign_redemptions(campaign.id) == {1: Decimal("150.00")}
        pool = coupons.pool(f"campaign {campaign.id}: keep moscow")
        assert (pool.valid_until, pool.uses_per_code) == (LAUNCH + timedelta(days=14), 1)
        # the campaign's report counts the discount the till gave, not an estimate
        cost = MeasureService(session).report(CampaignService(session).get(campaign.id)).cost
        assert (cost.incentives, cost.incentive_basis) == (
            Decimal("150.00"), "coupon redemptions at the tills (1 customers)",
        )  # fmt: skip
