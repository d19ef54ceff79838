"""HTTP for the loyalty program: the till (role ``pos``) and the program's operators.

Till calls that move points need an ``Idempotency-Key`` header. The key is kept by the
engine under the account's lock, with the answer, so a retried call (the till did not hear
back) gets the first answer and never moves points twice; the key is scoped to the API key
that sent it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header

from patron.api.deps import PagingDep, Permission, SessionDep, in_one_trip, require
from patron.api.idempotency import MissingIdempotencyKey
from patron.loyalty.schemas import (
    AccountOut,
    AdjustIn,
    CancelIn,
    ConfirmIn,
    ConfirmOut,
    CouponCodesIn,
    CouponPoolIn,
    CouponPoolOut,
    CouponStats,
    EnrolIn,
    EntryOut,
    Liability,
    MiniProgramIn,
    MiniProgramOut,
    ProgramRules,
    QuoteIn,
    QuoteOut,
    ReferralOut,
    RefundIn,
    RefundOut,
    VerifyOut,
)
from patron.loyalty.service import LoyaltyService
from patron.models import ApiKey

router = APIRouter(tags=["loyalty"])

Till = Annotated[ApiKey, Depends(require(Permission.LOYALTY_POS))]
Reader = Annotated[ApiKey, Depends(require(Permission.READ_LOYALTY))]
Operator = Annotated[ApiKey, Depends(require(Permission.WRITE_LOYALTY))]


async def loyalty_service(session: SessionDep) -> LoyaltyService:
    """The loyalty service on the request's session (async: it only builds an object, so it
    need not go through the thread pool)."""
    return LoyaltyService(session)


ServiceDep = Annotated[LoyaltyService, Depends(loyalty_service)]
KeyHeader = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=160,
           description="Required: a retry with the same key gets the first answer."),
]  # fmt: skip


def _key(api_key: ApiKey, header: str | None) -> str:
    if header is None:
        raise MissingIdempotencyKey("this request needs an Idempotency-Key header")
    return f"{api_key.id}:{header}"


# The till calls are the hot path: async, so that each makes one trip to the thread pool
# (the work and the commit together) instead of the four of a plain endpoint.


@router.post("/loyalty/pos/quote", response_model=QuoteOut)
async def quote(*, body: QuoteIn, service: ServiceDep, _key: Till) -> QuoteOut:
    """Discounts, the most points the basket may take, and the points it would earn."""
    return await in_one_trip(service.session, lambda: service.quote(body))


@router.post("/loyalty/pos/confirm", response_model=ConfirmOut)
async def confirm(
    *, body: ConfirmIn, service: ServiceDep, key: Till, idempotency_key: KeyHeader = None
) -> ConfirmOut:
    """The purchase made: points burned and earned at once."""
    scoped = _key(key, idempotency_key)
    return await in_one_trip(
        service.session, lambda: service.confirm(body, key=scoped, actor=key.name)
    )


@router.post("/loyalty/pos/cancel", response_model=RefundOut)
async def cancel(
    *, body: CancelIn, service: ServiceDep, key: Till, idempotency_key: KeyHeader = None
) -> RefundOut:
    """Undo a whole purchase."""
    scoped = _key(key, idempotency_key)
    return await in_one_trip(
        service.session, lambda: service.cancel(body, key=scoped, actor=key.name)
    )


@router.post("/loyalty/pos/refund", response_model=RefundOut)
async def refund(
    *, body: RefundIn, service: ServiceDep, key: Till, idempotency_key: KeyHeader = None
) -> RefundOut:
    """Goods came back: earn and burn reversed in proportion."""
    scoped = _key(key, idempotency_key)
    return await in_one_trip(
        service.session, lambda: service.refund(body, key=scoped, actor=key.name)
    )


@router.post("/loyalty/accounts", status_code=201, response_model=AccountOut)
def enrol(*, body: EnrolIn, service: ServiceDep, key: Till) -> AccountOut:
    """Enrol a customer: a card (given or new) and the welcome bonus."""
    return service.describe(service.enrol(body, actor=key.name))


@router.get("/loyalty/accounts/{card}", response_model=AccountOut)
def account(*, card: str, service: ServiceDep, _key: Till) -> AccountOut:
    """An account by card: points available and pending, tier, qualifying measure."""
    return service.describe(service.account(card))


@router.get("/loyalty/accounts/{card}/ledger", response_model=list[EntryOut])
def ledger(*, card: str, service: ServiceDep, paging: PagingDep, _key: Reader) -> list[EntryOut]:
    """The account's ledger, newest first."""
    found = service.ledger(service.account(card), limit=paging.limit, offset=paging.offset)
    return [EntryOut.model_validate(e) for e in found]


@router.post("/loyalty/accounts/{card}/adjust", response_model=AccountOut)
def adjust(
    *, card: str, body: AdjustIn, service: ServiceDep, key: Operator,
    idempotency_key: KeyHeader = None,
) -> AccountOut:  # fmt: skip
    """A manual correction with its mandatory reason."""
    return service.adjust(card, body, key=_key(key, idempotency_key), actor=key.name)


@router.get("/loyalty/rules", response_model=ProgramRules)
def rules(*, service: ServiceDep, _key: Reader) -> ProgramRules:
    """The rules in force."""
    return service.rules


@router.put("/loyalty/rules", response_model=ProgramRules)
def set_rules(*, body: ProgramRules, service: ServiceDep, key: Operator) -> ProgramRules:
    """Save new rules as the next version."""
    service.configure(body, actor=key.name)
    return service.rules


@router.get("/loyalty/liability", response_model=Liability)
def liability(*, service: ServiceDep, _key: Reader) -> Liability:
    """Points outstanding, expected breakage and the liability in money."""
    return service.liability()


@router.get("/loyalty/verify", response_model=VerifyOut)
def verify(*, service: ServiceDep, _key: Reader) -> VerifyOut:
    """Every cached balance against its ledger."""
    return service.verify()


@router.post("/loyalty/coupon-pools", status_code=201, response_model=CouponPoolOut)
def create_pool(*, body: CouponPoolIn, service: ServiceDep, _key: Operator) -> CouponPoolOut:
    """A pool of coupons: its offer, limits and validity."""
    return CouponPoolOut.model_validate(service.coupons.create_pool(body))


@router.get("/loyalty/coupon-pools", response_model=list[CouponStats])
def list_pools(*, service: ServiceDep, _key: Reader) -> list[CouponStats]:
    """Every pool with its codes and redemptions."""
    return [service.coupons.stats(pool) for pool in service.coupons.pools()]


@router.post("/loyalty/coupon-pools/{pool_id}/codes", status_code=201, response_model=list[str])
def generate_codes(
    *, pool_id: int, body: CouponCodesIn, service: ServiceDep, _key: Operator
) -> list[str]:
    """New random codes for a pool (not bound to any customer)."""
    pool = service.coupons.pool(str(pool_id))
    return service.coupons.generate(pool, count=body.count, prefix=body.prefix)


@router.get("/loyalty/accounts/{card}/referrals", response_model=list[ReferralOut])
def referrals(*, card: str, service: ServiceDep, _key: Reader) -> list[ReferralOut]:
    """Friends the member brought, and how each referral went."""
    return [ReferralOut.model_validate(r) for r in service.referrals(service.account(card))]


@router.post("/loyalty/mini-programs", status_code=201, response_model=MiniProgramOut)
def create_mini(*, body: MiniProgramIn, service: ServiceDep, key: Operator) -> MiniProgramOut:
    """A mini-program for a segment, with its goal, reward and period."""
    return service.minis.standing(service.minis.create(body, actor=key.name))


@router.post("/loyalty/mini-programs/{program_id}/start", response_model=MiniProgramOut)
def start_mini(*, program_id: int, service: ServiceDep, _key: Operator) -> MiniProgramOut:
    """Take the segment's members as participants."""
    program = service.minis.find(str(program_id))
    service.minis.start(program)
    return service.minis.standing(program)


@router.get("/loyalty/mini-programs", response_model=list[MiniProgramOut])
def list_minis(*, service: ServiceDep, _key: Reader) -> list[MiniProgramOut]:
    """Every mini-program with its members and how many reached the goal."""
    return [service.minis.standing(p) for p in service.minis.listing()]
