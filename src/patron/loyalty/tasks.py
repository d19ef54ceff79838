"""Background work of the loyalty program: enrolling the hub's card holders, and replaying
members' stored purchases through the program.

A replay is what a retailer runs when its program starts on a base that already has a
history of card purchases that never went through the program's till calls (and what the
demo runs to play a year of membership): each stored purchase of a member, placed after
the member enrolled, is confirmed as the till would have confirmed it, at the time it was
placed; each return is refunded on the purchase the hub linked it to. Every call carries
an idempotency key made from the stored order, and orders replayed before are passed
over, so a replay that stopped half-way, or runs again, counts nothing twice.

The tasks commit, a unit of work per batch of cards or orders; the service never does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from patron.customers.repository import CustomerRepository, chunks
from patron.events.repository import OrderRepository, StoredLine, StoredOrder
from patron.kit.db import unit_of_work
from patron.kit.money import round_money
from patron.loyalty.repository import LoyaltyRepository
from patron.loyalty.schemas import BasketLine, ConfirmIn, EnrolIn, QuoteIn, RefundIn
from patron.loyalty.service import LoyaltyService
from patron.models import IdentityKind, OrderKind, TransactionStatus

RECEIPT_PREFIX = "order:"
"""A replayed order's receipt is this and the order's id in the store."""
KEY_PREFIX = "replay:order:"
"""A replayed order's idempotency key is this and the order's id in the store."""


@dataclass(frozen=True)
class RedemptionPolicy:
    """When a replayed member pays with points, which stored orders do not say: on every
    ``every``-th purchase of the member in the replay, as many points as the basket may
    take, if at least ``min_available`` points are available then."""

    every: int = 3
    min_available: int = 500


@dataclass(frozen=True)
class Member:
    """An account as the replay needs it."""

    card: str
    enrolled_at: datetime


@dataclass(frozen=True)
class Enrolment:
    """What enrolling the card holders did."""

    card_holders: int
    """Active profiles with a card identity."""
    enrolled: int
    """Accounts opened now."""
    members_before: int
    """Card holders who were members already, left as they are."""
    refused: int
    """Cards a till could not take (not 4 to 32 digits), or on another profile's account."""


@dataclass(frozen=True)
class Replay:
    """What one replay did, and what it passed over."""

    purchases: int
    """Purchases confirmed now."""
    redemptions: int
    """Of those, purchases paid partly with points."""
    points_redeemed: int
    refunds: int
    """Returns refunded now, on the purchase they return."""
    unmatched_returns: int
    """Returns with no replayed purchase to refund, or with nothing left on it."""
    replayed_before: int
    """Orders an earlier replay did already."""
    unusable: int
    """Purchases a till would refuse: no line with a SKU, a quantity and a price."""
    seconds: float


def members(factory: sessionmaker[Session]) -> dict[int, Member]:
    """Every account, by customer id."""
    found: dict[int, Member] = {}
    with unit_of_work(factory) as session:
        repo = LoyaltyRepository(session)
        page = 5_000
        offset = 0
        while accounts := repo.accounts(limit=page, offset=offset):
            for account in accounts:
                found[account.customer_id] = Member(account.card_number, account.enrolled_at)
            offset += page
    return found


def enrol_card_holders(
    factory: sessionmaker[Session],
    *,
    at: datetime,
    actor: str,
    chosen: Callable[[int, str], bool] | None = None,
    batch: int = 1_000,
) -> Enrolment:
    """Enrol every active customer who holds a card identity, with that card, as of
    ``at``; with ``chosen``, only those it picks by customer id and card (a pilot on
    some card numbers, say). Members stay as they are. A customer with several cards is
    enrolled with the first one added."""
    with unit_of_work(factory) as session:
        first: dict[int, str] = {}
        for customer_id, card in CustomerRepository(session).identity_values(IdentityKind.CARD):
            first.setdefault(customer_id, card)
    cards = {c: card for c, card in first.items() if chosen is None or chosen(c, card)}
    accounts = members(factory)
    taken = {member.card for member in accounts.values()}
    wanted = [(c, card) for c, card in sorted(cards.items()) if c not in accounts]
    enrolled = refused = 0
    for part in chunks(wanted, batch):
        with unit_of_work(factory) as session:
            service = LoyaltyService(session)
            for customer_id, card in part:
                if card in taken:
                    # a profile merged away kept its account, and its card came along
                    refused += 1
                    continue
                try:
                    data = EnrolIn(customer_id=customer_id, card_number=card)
                except ValidationError:
                    refused += 1
                    continue
                service.enrol(data, actor=actor, now=at)
                enrolled += 1
    return Enrolment(
        card_holders=len(cards),
        enrolled=enrolled,
        members_before=len(cards) - len(wanted),
        refused=refused,
    )


def replay_purchases(
    factory: sessionmaker[Session],
    *,
    since: datetime,
    until: datetime,
    actor: str,
    policy: RedemptionPolicy | None = None,
    batch: int = 500,
    progress: Callable[[datetime], None] | None = None,
) -> Replay:
    """Replay the stored orders of members placed in ``[since, until)``, and after each
    member's enrolment, through the program in the order they were placed: purchases are
    confirmed (paying with points as ``policy`` says), returns refunded.

    Orders are read and committed ``batch`` at a time; ``progress`` is told the time of
    the last order of each batch done.
    """
    started = time.perf_counter()
    accounts = members(factory)
    tally = _Tally()
    after: tuple[datetime, int] | None = None
    while True:
        with unit_of_work(factory) as session:
            page = OrderRepository(session).customer_orders_page(
                since=since, until=until, after=after, limit=batch
            )
            service = LoyaltyService(session)
            for order in page:
                member = accounts.get(order.customer_id)
                if member is None or order.placed_at < member.enrolled_at:
                    continue
                if order.kind is OrderKind.RETURN:
                    _refund(service, order, tally, actor=actor)
                else:
                    _confirm(service, order, member, tally, actor=actor, policy=policy)
        if not page:
            break
        after = (page[-1].placed_at, page[-1].id)
        if progress is not None:
            progress(page[-1].placed_at)
    return Replay(
        purchases=tally.purchases,
        redemptions=tally.redemptions,
        points_redeemed=tally.points_redeemed,
        refunds=tally.refunds,
        unmatched_returns=tally.unmatched,
        replayed_before=tally.before,
        unusable=tally.unusable,
        seconds=time.perf_counter() - started,
    )


class _Tally:
    """Running counts of a replay, and each member's purchases so far."""

    def __init__(self) -> None:
        self.purchases = self.redemptions = self.points_redeemed = 0
        self.refunds = self.unmatched = self.before = self.unusable = 0
        self.bought: dict[int, int] = {}


def _confirm(
    service: LoyaltyService, order: StoredOrder, member: Member, tally: _Tally, *,
    actor: str, policy: RedemptionPolicy | None,
) -> None:  # fmt: skip
    # counted whatever happens below, so the policy picks the same purchases however
    # many runs the replay took
    number = tally.bought[order.customer_id] = tally.bought.get(order.customer_id, 0) + 1
    key = f"{KEY_PREFIX}{order.id}"
    if service.repo.operation(key) is not None:
        tally.before += 1
        return
    lines = _basket(order.lines)
    if not lines:
        tally.unusable += 1
        return
    redeem = 0
    if policy is not None and number % policy.every == 0:
        quote = service.quote(QuoteIn(card=member.card, lines=lines, at=order.placed_at))
        if quote.available_points >= policy.min_available:
            redeem = quote.max_redeemable
    out = service.confirm(
        ConfirmIn(
            card=member.card, receipt=f"{RECEIPT_PREFIX}{order.id}", lines=lines,
            redeem_points=redeem, at=order.placed_at,
        ),
        key=key, actor=actor,
    )  # fmt: skip
    tally.purchases += 1
    if out.points_burned:
        tally.redemptions += 1
        tally.points_redeemed += out.points_burned


def _refund(service: LoyaltyService, order: StoredOrder, tally: _Tally, *, actor: str) -> None:
    key = f"{KEY_PREFIX}{order.id}"
    if service.repo.operation(key) is not None:
        tally.before += 1
        return
    original = None
    if order.original_order_id is not None:
        original = service.repo.transaction(f"{RECEIPT_PREFIX}{order.original_order_id}")
    if original is None or original.status is TransactionStatus.CANCELLED:
        tally.unmatched += 1
        return
    value = original.subtotal - original.discount
    left = value - original.refunded
    # the return is at list prices; the purchase may have had its tier's discount
    amount = min(round_money(-order.total * value / original.subtotal), left)
    if amount <= 0:
        tally.unmatched += 1
        return
    service.refund(
        RefundIn(receipt=original.receipt, amount=amount), key=key, actor=actor,
        now=order.placed_at,
    )  # fmt: skip
    tally.refunds += 1


def _basket(lines: list[StoredLine]) -> list[BasketLine]:
    """The lines a till takes; a free line earns and costs nothing, so it is left out."""
    basket: list[BasketLine] = []
    for line in lines:
        if line.unit_price == 0 or not line.sku:
            continue
        try:
            basket.append(
                BasketLine(
                    sku=line.sku, category=line.category, quantity=line.quantity,
                    unit_price=line.unit_price,
                )
            )  # fmt: skip
        except ValidationError:
            return []
    return basket
