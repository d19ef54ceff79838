"""The points ledger through the till's calls: quote, confirm, refund, cancel, adjust;
idempotency, bad input, lots spent oldest first, exact expiry, tiers and liability."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from patron.customers.repository import CustomerRepository
from patron.kit.errors import Conflict, InvalidInput, NotFound
from patron.loyalty.repository import Burn, LoyaltyRepository, TillContext
from patron.loyalty.schemas import (
    AdjustIn,
    CancelIn,
    ConfirmIn,
    EnrolIn,
    MiniProgramIn,
    ProgramRules,
    QuoteIn,
    RefundIn,
)
from patron.loyalty.service import AccountBlocked, LoyaltyService, luhn_digit
from patron.models import (
    AccountStatus,
    Customer,
    EntryKind,
    Event,
    Identity,
    IdentityKind,
    LedgerEntry,
    LotUse,
    LoyaltyOperation,
    PosTransaction,
    TierChange,
    TransactionStatus,
)
from patron.segments.schemas import SegmentIn, parse_rule
from patron.segments.service import SegmentService
from tests.fixtures.segments import store_base

T0 = datetime(2026, 1, 10, 10, 0, tzinfo=UTC)
CARD = "1234567890"
RULES: dict[str, Any] = {
    "point_value": "1.00",
    "max_burn_share": "0.5",
    "pending_days": 14,
    "expiry_days": 365,
    "earning": {"base_rate": "0.1", "categories": {"electronics": "0.5"}, "welcome_bonus": 100},
    "tiers": [
        {"name": "Basic", "threshold": "0"},
        {"name": "Silver", "threshold": "10000", "earn_multiplier": "1.5",
         "discount_percent": "5"},
        {"name": "Gold", "threshold": "50000", "earn_multiplier": "2", "discount_percent": "10"},
    ],
    "qualification": {"measure": "spend", "window_days": 365, "grace_days": 30},
}  # fmt: skip


def lines(*spec: tuple[str, str, str, str]) -> list[dict[str, str]]:
    return [
        {"sku": sku, "category": category, "quantity": quantity, "unit_price": price}
        for sku, category, quantity, price in spec
    ]


BASKET = lines(("B1", "books", "2", "500"), ("E1", "electronics", "1", "2000"))


@pytest.fixture
def program(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """The small base; the rules above; Anna (customer 1) enrolled at T0 on CARD."""
    with session_factory() as session:
        store_base(session)
        service = LoyaltyService(session)
        service.configure(ProgramRules.model_validate(RULES), actor="admin")
        service.enrol(EnrolIn(customer_id=1, card_number=CARD), actor="admin", now=T0)
        session.commit()
    return session_factory


def confirm(
    factory: sessionmaker[Session], receipt: str, basket: list[dict[str, str]], *,
    redeem: int = 0, at: datetime, key: str | None = None, card: str = CARD,
    coupon: str | None = None,
) -> Any:  # fmt: skip
    with factory() as session:
        body = ConfirmIn(
            card=card, receipt=receipt, lines=basket, redeem_points=redeem, at=at, coupon=coupon
        )
        answer = LoyaltyService(session).confirm(body, key=key or f"k-{receipt}", actor="till-1")
        session.commit()
        return answer


def refund(
    factory: sessionmaker[Session], receipt: str, amount: str, *, key: str, at: datetime
) -> Any:
    with factory() as session:
        body = RefundIn(receipt=receipt, amount=Decimal(amount))
        answer = LoyaltyService(session).refund(body, key=key, actor="till-1", now=at)
        session.commit()
        return answer


def test_enrolment_makes_the_card_an_identity_and_gives_the_welcome_bonus(
    program: sessionmaker[Session],
) -> None:
    with program() as session:
        service = LoyaltyService(session)
        anna = service.describe(service.account(CARD), now=T0)
        assert (anna.customer_id, anna.tier, anna.available_points, anna.pending_points) == (
            1, "Basic", 100, 0,
        )  # fmt: skip
        assert anna.expiring_soon == 0
        # the card is an identity of the customer hub, like an email or a phone
        owners = CustomerRepository(session).owners([(IdentityKind.CARD, "", CARD)])
        assert owners == {(IdentityKind.CARD, "", CARD): 1}
        with pytest.raises(Conflict, match="customer 1 is a member already"):
            service.enrol(EnrolIn(customer_id=1), actor="admin")
        generated = service.enrol(EnrolIn(customer_id=5), actor="admin", now=T0)
        number = generated.card_number
        assert len(number) == 16 and number[-1] == luhn_digit(number[:-1])
        assert luhn_digit("7992739871") == "3"  # the standard's worked example


def test_a_purchase_burns_and_earns_at_once_and_refunds_reverse_in_proportion(
    program: sessionmaker[Session],
) -> None:
    with program() as session:
        quote = LoyaltyService(session).quote(QuoteIn(card=CARD, lines=BASKET, at=T0))
    assert (quote.subtotal, quote.discount, quote.available_points) == (
        Decimal("3000.00"),
        Decimal(0),
        100,
    )
    # 1,000 of books at 0.1 and 2,000 of electronics at 0.1 x 0.5
    assert (quote.max_redeemable, quote.points_to_earn, quote.to_pay) == (100, 200, Decimal(3000))

    first = confirm(program, "R1", BASKET, redeem=100, at=T0 + timedelta(hours=1))
    # the 100 paid by points is shared 33.33 / 66.67, and only money earns:
    # (966.67 + 1,933.33 x 0.5) x 0.1 = 193.33 -> 193
    assert (first.points_burned, first.points_value, first.paid) == (100, 100, Decimal("2900.00"))
    assert (first.points_earned, first.available_points, first.pending_points) == (193, 0, 193)
    assert first.earn_available_at == T0 + timedelta(days=14, hours=1)
    assert (first.tier, first.tier_changed) == ("Basic", False)

    # 3,000 + 8,000 of rolling spend passes Silver's 10,000: the move up is at once
    second = confirm(program, "R2", lines(("E2", "electronics", "1", "8000")),
                     at=T0 + timedelta(hours=2))  # fmt: skip
    assert (second.points_earned, second.tier, second.tier_changed) == (400, "Silver", True)
    with program() as session:
        silver = LoyaltyService(session).quote(
            QuoteIn(
                card=CARD, lines=lines(("B2", "books", "1", "1000")), at=T0 + timedelta(hours=3)
            )
        )
    # Silver: 5% off, and 950 x 0.1 x 1.5 = 142.5 -> 142 points
    assert (silver.discount, silver.to_pay, silver.points_to_earn) == (
        Decimal(50),
        Decimal(950),
        142,
    )

    # a third of R1 comes back: 33 of the 100 burned points return, 64 of the 193 go
    part = refund(program, "R1", "1000", key="rf-1", at=T0 + timedelta(hours=3))
    assert (part.points_returned, part.points_reversed, part.points_short) == (33, 64, 0)
    assert (part.money_back, part.status) == (Decimal("966.67"), TransactionStatus.PARTLY_REFUNDED)
    assert (part.available_points, part.pending_points) == (33, 129 + 400)

    with pytest.raises(InvalidInput, match=r"amount: 2500 is more than the 2000.00 left"):
        refund(program, "R1", "2500", key="rf-2", at=T0 + timedelta(hours=4))
    with program() as session, pytest.raises(Conflict, match="partly refunded"):
        LoyaltyService(session).cancel(CancelIn(receipt="R1"), key="c-1", actor="till-1")

    rest = refund(program, "R1", "2000", key="rf-3", at=T0 + timedelta(hours=4))
    # the cumulative targets make a full refund exact: 100 returned, 193 reversed in all
    assert (rest.points_returned, rest.points_reversed, rest.money_back) == (
        67, 129, Decimal("1933.33"),
    )  # fmt: skip
    assert rest.status is TransactionStatus.REFUNDED
    assert (rest.available_points, rest.pending_points) == (100, 400)
    with pytest.raises(Conflict, match="refunded in full already"):
        refund(program, "R1", "1", key="rf-4", at=T0 + timedelta(hours=5))

    with program() as session:
        service = LoyaltyService(session)
        assert service.verify().mismatches == [] and service.verify().negative == []
        kinds = [(e.kind.value, e.points) for e in reversed(service.ledger(
            service.account(CARD), limit=50, offset=0))]  # fmt: skip
        assert kinds == [
            ("earn", 100), ("burn", -100), ("earn", 193), ("earn", 400),
            ("reverse", 33), ("reverse", -64), ("reverse", 67), ("reverse", -129),
        ]  # fmt: skip
        earned = session.scalars(select(Event).where(Event.type == "loyalty.points_earned"))
        assert sorted(e.properties["points"] for e in earned) == [193, 400]
        changed = session.scalars(select(Event).where(Event.type == "loyalty.tier_changed")).one()
        assert (changed.properties["from"], changed.properties["to"]) == ("Basic", "Silver")


def test_the_points_earned_event_follows_the_earn_not_the_net_move(
    program: sessionmaker[Session],
) -> None:
    """A purchase that earns nothing announces nothing; one that earns exactly what it
    burns moves the cached total by nothing and still announces its points."""
    # 5.00 of books, 2 points paying 2.00 of it: 3.00 paid earns 0.3 -> 0 points
    small = confirm(program, "S1", lines(("B1", "books", "1", "5")), redeem=2,
                    at=T0 + timedelta(hours=1))  # fmt: skip
    assert (small.points_burned, small.points_earned, small.available_points) == (2, 0, 98)
    # 1,080 of books, 98 points paying 98.00: 982 paid earns 98.2 -> 98 points
    even = confirm(program, "S2", lines(("B1", "books", "1", "1080")), redeem=98,
                   at=T0 + timedelta(hours=2))  # fmt: skip
    assert (even.points_burned, even.points_earned) == (98, 98)
    assert (even.available_points, even.pending_points) == (0, 98)
    with program() as session:
        service = LoyaltyService(session)
        assert service.account(CARD).points == 98
        assert service.verify().mismatches == []
        earned = session.scalars(select(Event).where(Event.type == "loyalty.points_earned"))
        assert [(e.properties["receipt"], e.properties["points"]) for e in earned] == [("S2", 98)]
        # on PostgreSQL the event rides in the earn's statement: every column as written
        event = session.scalars(select(Event).where(Event.external_id.like("earned:%"))).one()
        assert (event.customer_id, event.source, event.external_id) == (
            1, "loyalty", f"earned:{even.transaction_id}",
        )  # fmt: skip
        assert event.occurred_at == T0 + timedelta(hours=2)
        assert event.created_at is not None
        assert event.properties == {
            "card": CARD, "points": 98, "receipt": "S2",
            "available_at": (T0 + timedelta(days=14, hours=2)).isoformat(),
        }  # fmt: skip


def test_a_purchase_that_earns_is_written_in_one_statement_on_postgresql(
    program: sessionmaker[Session],
) -> None:
    """On PostgreSQL the till context takes the transaction's id, so a purchase that only
    earns writes its transaction, earn, lot, event, cached total and answer in one statement:
    two statements in all (the lock with the context and the open lots, the writes). SQLite
    reads and writes them one by one. The rows are the same either way, and a move up the
    purchase earns follows its earn. A purchase that also burns points is written in that
    one statement too."""
    bind = program.kw["bind"]
    postgres = bind.dialect.name == "postgresql"
    # the first call of a process may guess the tier check's window wrong: this one settles it
    confirm(program, "W1", lines(("B1", "books", "1", "1000")), at=T0 + timedelta(hours=1))
    sent: list[str] = []
    widths: list[int] = []

    def count(*args: Any) -> None:
        sent.append(args[2])
        widths.append(len(args[3] or ()))

    event.listen(bind, "before_cursor_execute", count)
    try:
        plain = confirm(program, "W2", lines(("B1", "books", "1", "2000")),
                        at=T0 + timedelta(hours=2))  # fmt: skip
    finally:
        event.remove(bind, "before_cursor_execute", count)
    assert len(sent) == (2 if postgres else 9), sent
    assert (plain.points_earned, plain.tier, plain.tier_changed) == (200, "Basic", False)
    assert (plain.available_points, plain.pending_points) == (100, 300)
    # 8,000 more makes 11,000 in the window: Silver, after the purchase's 800 Basic points
    up = confirm(program, "W3", lines(("B1", "books", "1", "8000")), at=T0 + timedelta(hours=3))
    assert (up.points_earned, up.tier, up.tier_changed) == (800, "Silver", True)
    with program() as session:
        stored = session.get(PosTransaction, plain.transaction_id)
        assert stored is not None
        assert (stored.receipt, stored.subtotal, stored.points_earned, stored.status) == (
            "W2", Decimal("2000.00"), 200, TransactionStatus.CONFIRMED,
        )  # fmt: skip
        assert stored.confirmed_at == T0 + timedelta(hours=2)
        assert stored.lines["lines"][0]["unit_price"] == "2000"
        entry = session.scalars(
            select(LedgerEntry).where(LedgerEntry.idempotency_key == "k-W2:earn")
        ).one()
        assert (entry.points, entry.transaction_id) == (200, plain.transaction_id)
        recorded = session.scalars(
            select(LoyaltyOperation).where(LoyaltyOperation.key == "k-W2")
        ).one()
        assert recorded.answer == plain.model_dump(mode="json")
        kinds = [
            e.type for e in session.scalars(
                select(Event).where(Event.type.like("loyalty.%")).order_by(Event.id)
            )
        ]  # fmt: skip
        assert kinds[-2:] == ["loyalty.points_earned", "loyalty.tier_changed"]
        change = session.scalars(select(TierChange).order_by(TierChange.id.desc())).first()
        assert change is not None
        assert (change.from_tier, change.to_tier, change.qualifying) == (
            "Basic", "Silver", Decimal("11000.00"),
        )  # fmt: skip
        service = LoyaltyService(session)
        assert (service.account(CARD).points, service.account(CARD).tier) == (1200, "Silver")
        assert service.verify().mismatches == []
        # the lots the context brings (as JSON on PostgreSQL) are those the lots read gives
        repo = service.repo
        account = repo.lock_card(CARD)
        assert account is not None
        context = repo.till_context(account.id, key="k-none", receipt="none", at=T0)
        lots = repo.lots(account.id)
        assert [lot.remaining for lot in lots] == [100, 100, 200, 800]
        assert context.lots == (lots if postgres else None)
    # the same key again replays the answer written with the earn
    again = confirm(program, "W2", lines(("B1", "books", "1", "2000")),
                    at=T0 + timedelta(hours=2))  # fmt: skip
    assert again == plain
    # and a purchase that also burns is written in that one statement too
    sent.clear()
    widths.clear()
    event.listen(bind, "before_cursor_execute", count)
    try:
        paid = confirm(program, "W4", lines(("B1", "books", "1", "1000")), redeem=40,
                       at=T0 + timedelta(hours=4))  # fmt: skip
    finally:
        event.remove(bind, "before_cursor_execute", count)
    assert len(sent) == (2 if postgres else 11), sent
    if postgres:
        # psycopg keeps a statement's parsed form only up to 50 parameters: the rows share
        # the entry's account, transaction, source, moment and actor to stay within it
        assert max(widths) <= 50, widths
    # Silver: 5% off 1,000, 40 points pay 40 of the 950, 910 x 0.1 x 1.5 = 136 points
    assert (paid.points_burned, paid.points_earned, paid.paid) == (40, 136, Decimal("910.00"))
    assert (paid.available_points, paid.pending_points) == (60, 1236)
    with program() as session:
        service = LoyaltyService(session)
        assert service.account(CARD).points == 1296
        assert service.verify().mismatches == []
        written = session.scalars(
            select(LedgerEntry).where(LedgerEntry.idempotency_key.like("k-W4:%"))
            .order_by(LedgerEntry.id)
        ).all()  # fmt: skip
        assert [(e.kind, e.points) for e in written] == [
            (EntryKind.BURN, -40), (EntryKind.EARN, 136),
        ]  # fmt: skip
        burned, earned = written
        assert (burned.transaction_id, burned.source) == (paid.transaction_id, earned.source)
        # on PostgreSQL the purchase's rows are made at one moment, the earn's
        if postgres:
            assert burned.created_at == earned.created_at
            operation = session.scalars(
                select(LoyaltyOperation).where(LoyaltyOperation.key == "k-W4")
            ).one()
            assert operation.created_at == earned.created_at


def _read_behind_the_lock(
    program: sessionmaker[Session], hold: Callable[[Session], Any],
    meanwhile: Callable[[], None] = lambda: None, *, key: str, receipt: str, at: datetime,
) -> tuple[Any, TillContext]:  # fmt: skip
    """A till's lock and reads (``lock_card_for_till`` on CARD) made while ``hold`` holds
    the card's lock in a transaction left open; once the till's statement waits for the
    lock, ``meanwhile`` runs and commits, then the holder commits."""
    bind = program.kw["bind"]
    if bind.dialect.name != "postgresql":
        pytest.skip("the lock and the reads are one statement on PostgreSQL only")
    read: list[tuple[Any, TillContext] | None] = []

    def till() -> None:
        with program() as session:
            read.append(LoyaltyRepository(session).lock_card_for_till(
                CARD, key=key, receipt=receipt, at=at, spend_since=T0 - timedelta(days=1)
            ))  # fmt: skip

    holder = program()
    hold(holder)
    waiting = threading.Thread(target=till)
    waiting.start()
    try:
        # each poll its own transaction: one transaction sees one list of backends
        with bind.connect().execution_options(isolation_level="AUTOCOMMIT") as probe:
            for _ in range(1000):  # until the till's statement waits for the holder
                blocked = probe.scalar(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND cardinality(pg_blocking_pids(pid)) > 0"
                ))  # fmt: skip
                if blocked:
                    break
                time.sleep(0.01)
            assert blocked == 1
        meanwhile()
        holder.commit()
    finally:
        holder.close()
        waiting.join(timeout=30)
    [found] = read
    assert found is not None
    return found


def test_a_till_that_waited_for_the_lock_reads_what_its_holder_committed(
    program: sessionmaker[Session],
) -> None:
    """On PostgreSQL a confirm takes the card's lock and reads its context in one statement,
    and that statement's reads see the snapshot taken before it waited for the lock. A till
    that waited while another confirmed a purchase on the card must still read that
    purchase: its transaction, its recorded answer, its lot and its spend."""
    at = T0 + timedelta(hours=1)
    held: list[Any] = []

    def purchase(session: Session) -> None:
        body = ConfirmIn(card=CARD, receipt="H1", lines=lines(("B1", "books", "1", "1000")), at=at)
        held.append(LoyaltyService(session).confirm(body, key="k-H1", actor="till-1"))

    locked, context = _read_behind_the_lock(
        program, purchase, key="k-H1", receipt="H1", at=at + timedelta(minutes=1)
    )
    with program() as session:
        account = LoyaltyService(session).account(CARD)
        lots = LoyaltyRepository(session).lots(account.id)
    # the purchase added a lot to the welcome bonus's: the snapshot had one, the lock two
    assert [lot.remaining for lot in lots] == [100, 100]
    # the holder's lock moved the version to 1, the waiting till's to 2 (not committed)
    assert (account.lock_version, locked.lock_version) == (1, 2)
    assert context.receipt_transaction == held[0].transaction_id
    assert context.recorded is not None
    assert context.recorded.answer == held[0].model_dump(mode="json")
    assert context.spend == Decimal("1000.00")
    assert context.lots == lots


def test_a_till_that_waited_behind_a_block_reads_the_rules_saved_meanwhile(
    program: sessionmaker[Session],
) -> None:
    """Blocking or unblocking a card holds its lock too, and moves its version, so a till
    that waited behind it reads again: here the rules saved while it waited."""
    newer = {**RULES, "earning": {**RULES["earning"], "base_rate": "0.2"}}

    def block(session: Session) -> None:
        LoyaltyService(session).block(CARD, blocked=True)

    def configure() -> None:
        with program() as session:
            LoyaltyService(session).configure(ProgramRules.model_validate(newer), actor="admin")
            session.commit()

    locked, context = _read_behind_the_lock(
        program, block, configure, key="k-B1", receipt="B1", at=T0 + timedelta(hours=1)
    )
    assert (locked.status, locked.lock_version) == (AccountStatus.BLOCKED, 2)
    assert context.rules is not None
    assert context.rules["earning"]["base_rate"] == "0.2"


def test_points_already_spent_are_kept_from_the_refund_money(
    program: sessionmaker[Session],
) -> None:
    confirm(program, "R1", lines(("B1", "books", "1", "3000")), at=T0)  # earns 300
    # 15 days on, the 300 are available; they pay for half of a 600 basket
    later = T0 + timedelta(days=15)
    spent = confirm(program, "R2", lines(("B2", "books", "1", "800")), redeem=400, at=later)
    assert (spent.points_burned, spent.available_points) == (400, 0)
    back = refund(program, "R1", "3000", key="rf", at=later + timedelta(hours=1))
    # R2's own 40 points (pending) are all there is to take back of the 300
    assert (back.points_reversed, back.points_short) == (40, 260)
    assert back.money_back == Decimal("2740.00")
    with program() as session:
        verdict = LoyaltyService(session).verify()
        assert (verdict.mismatches, verdict.negative) == ([], [])


def test_every_call_is_idempotent_and_bad_input_changes_nothing(
    program: sessionmaker[Session],
) -> None:
    at = T0 + timedelta(hours=1)
    once = confirm(program, "R1", BASKET, redeem=50, at=at, key="same")
    again = confirm(program, "R1", BASKET, redeem=50, at=at, key="same")
    assert again == once
    with pytest.raises(Conflict, match="'same' was used for a different request"):
        confirm(program, "R9", BASKET, at=at, key="same")
    with pytest.raises(Conflict, match="receipt 'R1' is confirmed already"):
        confirm(program, "R1", BASKET, at=at, key="other")
    with pytest.raises(InvalidInput, match="redeem_points: 60 is more than the 50 points"):
        confirm(program, "R2", BASKET, redeem=60, at=at)
    with pytest.raises(InvalidInput, match=r"at most 40 points may pay for this basket \(50%"):
        confirm(program, "R3", lines(("B", "books", "1", "80")), redeem=45, at=at)
    with pytest.raises(NotFound, match="card '999' is not known"):
        confirm(program, "R4", BASKET, at=at, card="999")
    with pytest.raises(ValueError, match=r"lines\.0\.unit_price\n  Input should be greater than 0"):
        ConfirmIn(card=CARD, receipt="R5", lines=lines(("B", "books", "1", "-5")))
    with pytest.raises(ValueError, match=r"lines\.0\.quantity\n  Input should be a valid decimal"):
        ConfirmIn(card=CARD, receipt="R5", lines=lines(("B", "books", "two", "5")))
    with program() as session:
        LoyaltyService(session).block(CARD, blocked=True)
        session.commit()
    with pytest.raises(AccountBlocked, match=f"card {CARD} is blocked"):
        confirm(program, "R6", BASKET, at=at)
    with program() as session:
        assert session.scalar(select(func.count()).select_from(PosTransaction)) == 1
        service = LoyaltyService(session)
        assert service.balance(service.account(CARD), now=at).available == 50
        assert service.verify().mismatches == []


def test_the_account_of_a_customer_and_a_done_operation_are_found(
    program: sessionmaker[Session],
) -> None:
    # given Anna enrolled and one confirmed purchase under key "k-R1"
    confirm(program, "R1", BASKET, at=T0 + timedelta(hours=1))
    with program() as session:
        service = LoyaltyService(session)
        # then her account is found by customer, and only the used key counts as done
        account = service.account_of(1)
        assert account is not None and account.card_number == CARD
        assert service.account_of(5) is None
        assert (service.operation_done("k-R1"), service.operation_done("k-R2")) == (True, False)


def test_lots_are_spent_soonest_expiring_first_and_expire_exactly(
    session_factory: sessionmaker[Session],
) -> None:
    rules = {**RULES, "pending_days": 0, "expiry_days": 30, "expiry_notice_days": 30,
             "earning": {"base_rate": "0.1"}}  # fmt: skip
    with session_factory() as session:
        store_base(session)
        service = LoyaltyService(session)
        service.configure(ProgramRules.model_validate(rules), actor="admin")
        service.enrol(EnrolIn(customer_id=1, card_number=CARD), actor="admin", now=T0)
        service.adjust(CARD, AdjustIn(points=100, reason="goodwill"), key="a", actor="op", now=T0)
        service.adjust(CARD, AdjustIn(points=50, reason="goodwill"), key="b", actor="op",
                       now=T0 + timedelta(days=10))  # fmt: skip
        with pytest.raises(InvalidInput, match="cannot take 500 points, card 1234567890 has 150"):
            service.adjust(CARD, AdjustIn(points=-500, reason="error"), key="c", actor="op",
                           now=T0 + timedelta(days=10))  # fmt: skip
        # both lots expire within the notice period: announced once each
        assert service.announce_expiring(now=T0 + timedelta(days=12)) == 2
        assert service.announce_expiring(now=T0 + timedelta(days=13)) == 0
        session.commit()
    # 120 burned on day 20: the whole first lot (expires day 30) and 20 of the second
    confirm(session_factory, "R1", lines(("B", "books", "1", "240")), redeem=120,
            at=T0 + timedelta(days=20))  # fmt: skip
    with session_factory() as session:
        service = LoyaltyService(session)
        assert service.expire(now=T0 + timedelta(days=35)) == 0  # the first lot is used up
        # day 41: what is left of the second lot (30) goes; the purchase's 12 (money paid
        # 120 x 0.1) expire on day 50
        assert service.expire(now=T0 + timedelta(days=41)) == 30
        assert service.expire(now=T0 + timedelta(days=41)) == 0
        account = service.account(CARD)
        assert service.balance(account, now=T0 + timedelta(days=41)).available == 12
        assert service.expire(now=T0 + timedelta(days=51)) == 12
        session.commit()
        expired = session.scalars(
            select(LedgerEntry.points).where(LedgerEntry.kind == "expire").order_by(LedgerEntry.id)
        ).all()
        assert list(expired) == [-30, -12]
        liability = service.liability(now=T0 + timedelta(days=51))
        # history: 42 expired against 120 burned
        assert (liability.outstanding_points, liability.breakage_rate) == (0, Decimal("0.2593"))
        assert service.verify().mismatches == []


def test_a_burn_written_with_an_earn_is_checked_and_comes_first(
    program: sessionmaker[Session],
) -> None:
    """A burn riding with an earn (on PostgreSQL in the earn's statement) is refused when a
    lot moved since it was read, like any use of lots; written right, its entry comes
    before the earn's, with its use of the lot, and the cached total moves once."""

    def entries(account_id: int, taken: int, left: int) -> tuple[LedgerEntry, Burn]:
        earn = LedgerEntry(
            account_id=account_id, kind="earn", points=50, reason="test", source="order",
            idempotency_key="e-1", effective_at=T0, created_by="till",
        )  # fmt: skip
        burn = LedgerEntry(
            account_id=account_id, kind="burn", points=-taken, reason="test", source="order",
            idempotency_key="b-1", effective_at=T0, created_by="till",
        )  # fmt: skip
        return earn, Burn(burn, [(welcome.id, taken, left)])

    with program() as session:
        repo = LoyaltyService(session).repo
        account_id = LoyaltyService(session).account(CARD).id
        [welcome] = repo.lots(account_id)
        earn, burn = entries(account_id, 30, 60)  # read as 90, holds 100
        with pytest.raises(Conflict, match=rf"the lots \[{welcome.id}\] no longer hold"):
            repo.add_lot(earn, move=20, burn=burn)
        session.rollback()
    with program() as session:
        service = LoyaltyService(session)
        earn, burn = entries(account_id, 30, 70)
        lot = service.repo.add_lot(earn, move=20, burn=burn)
        session.commit()
        assert [(x.id, x.remaining) for x in service.repo.lots(account_id)] == [
            (welcome.id, 70), (lot, 50),
        ]  # fmt: skip
        written = session.scalars(
            select(LedgerEntry).where(LedgerEntry.source == "order").order_by(LedgerEntry.id)
        ).all()
        assert [(e.kind.value, e.points) for e in written] == [("burn", -30), ("earn", 50)]
        assert written[1].id == lot
        uses = session.execute(select(LotUse.entry_id, LotUse.lot_id, LotUse.points)).all()
        assert [tuple(u) for u in uses] == [(written[0].id, welcome.id, 30)]
        assert service.account(CARD).points == 120
        assert service.verify().mismatches == []


def test_a_use_of_lots_that_moved_since_they_were_read_is_refused(
    program: sessionmaker[Session],
) -> None:
    """A use names what each lot held when read under the account's lock: a lot that
    holds anything else (it moved without the lock) makes the use a Conflict."""
    with program() as session:
        service = LoyaltyService(session)
        account = service.account(CARD)
        [welcome] = service.repo.lots(account.id)
        assert welcome.remaining == 100
        entry = service.repo.insert(
            LedgerEntry(
                account_id=account.id, kind="adjust", points=-30, reason="test",
                source="operator", idempotency_key="use-1", effective_at=T0, created_by="op",
            )
        )  # fmt: skip
        with pytest.raises(Conflict, match=rf"the lots \[{welcome.id}\] no longer hold"):
            service.repo.use_lots(entry, [(welcome.id, 30, 60)])  # read as 90, holds 100
        with pytest.raises(Conflict, match="moved them without it"):
            service.repo.use_lots(entry, [(welcome.id, 90, 0)])  # "used up", holds 100
        session.rollback()
    with program() as session:
        repo = LoyaltyService(session).repo
        account = LoyaltyService(session).account(CARD)
        for key, taken, left in (("use-2", 30, 70), ("use-3", 70, 0)):
            entry = repo.insert(
                LedgerEntry(
                    account_id=account.id, kind="adjust", points=-taken, reason="test",
                    source="operator", idempotency_key=key, effective_at=T0, created_by="op",
                )
            )  # fmt: skip
            repo.use_lots(entry, [(welcome.id, taken, left)])
            assert [lot.remaining for lot in repo.lots(account.id)] == ([left] if left else [])
        session.commit()


def test_tiers_go_up_at_once_and_down_only_at_a_review_after_the_grace(
    program: sessionmaker[Session],
) -> None:
    confirm(program, "R1", lines(("B", "books", "1", "12000")), at=T0)
    with program() as session:
        service = LoyaltyService(session)
        assert service.account(CARD).tier == "Silver"
        # the balance never counts: spending all points changes no tier
        assert service.review_tiers(now=T0 + timedelta(days=20)) == {"up": 0, "down": 0}
        # a year on, the rolling spend is 0, and the grace has long passed
        assert service.review_tiers(now=T0 + timedelta(days=366)) == {"up": 0, "down": 1}
        history = [(c.from_tier, c.to_tier, c.reason) for c in service.tiers_of(
            service.account(CARD))]  # fmt: skip
        assert history == [
            (None, "Basic", "enrolled"), ("Basic", "Silver", "qualified"),
            ("Silver", "Basic", "review: below threshold"),
        ]  # fmt: skip
        session.commit()
    # a refund that takes the spend below the threshold does not move the tier down at once
    confirm(program, "R2", lines(("B", "books", "1", "11000")), at=T0 + timedelta(days=400))
    refund(program, "R2", "5000", key="rf", at=T0 + timedelta(days=401))
    with program() as session:
        service = LoyaltyService(session)
        assert service.account(CARD).tier == "Silver"
        # within the grace of 30 days from the move up, the review keeps the tier
        assert service.review_tiers(now=T0 + timedelta(days=420)) == {"up": 0, "down": 0}
        assert service.review_tiers(now=T0 + timedelta(days=431)) == {"up": 0, "down": 1}


def test_a_move_up_measures_the_window_of_the_rules_in_force(
    program: sessionmaker[Session],
) -> None:
    """The till reads the spend with its context over the window of the rules it saw
    last; rules that changed the window since are measured over their own."""

    def set_window(days: int) -> None:
        with program() as session:
            rules = {**RULES, "qualification": {**RULES["qualification"], "window_days": days}}
            LoyaltyService(session).configure(ProgramRules.model_validate(rules), actor="admin")
            session.commit()

    def tier_after(receipt: str, price: str, day: int) -> tuple[str, bool]:
        out = confirm(program, receipt, lines(("E", "electronics", "1", price)),
                      at=T0 + timedelta(days=day))  # fmt: skip
        return out.tier, out.tier_changed

    assert tier_after("R1", "8000", 0) == ("Basic", False)
    set_window(30)
    # 3,000 in the last 30 days; over the 365 days the till saw last it would be 11,000
    assert tier_after("R2", "3000", 40) == ("Basic", False)
    set_window(365)
    assert tier_after("R3", "100", 41) == ("Silver", True)  # 11,100 over 365 days
    # the rules are those seen last: 51,000 over the same window (Silver's 5% off 42,000)
    assert tier_after("R4", "42000", 42) == ("Gold", True)
    with program() as session:
        service = LoyaltyService(session)
        moves = [(c.to_tier, c.qualifying) for c in service.tiers_of(service.account(CARD))]
        assert moves == [
            ("Basic", Decimal(0)), ("Silver", Decimal("11100.00")), ("Gold", Decimal("51000.00"))
        ]  # fmt: skip


def test_promotions_minimum_basket_and_birthday_bonus(
    session_factory: sessionmaker[Session],
) -> None:
    """Double points on weekends for the "moscow" segment; nothing under a 200 basket;
    a birthday bonus once a year."""
    rules = {
        **RULES,
        "pending_days": 0,
        "earning": {
            "base_rate": "0.1", "min_basket": "200", "birthday_bonus": 300,
            "promotions": [{"name": "weekend x2", "multiplier": "2", "weekdays": [6, 7],
                            "segment": "moscow"}],
        },
    }  # fmt: skip
    with session_factory() as session:
        store_base(session)
        SegmentService(session).create(
            SegmentIn(name="moscow", rule=parse_rule({"kind": "profile", "field": "city",
                                                      "value": "Moscow"})),
            actor="t",
        )  # fmt: skip
        service = LoyaltyService(session)
        service.configure(ProgramRules.model_validate(rules), actor="admin")
        service.enrol(EnrolIn(customer_id=1, card_number=CARD), actor="admin", now=T0)
        service.enrol(EnrolIn(customer_id=5, card_number="5555"), actor="admin", now=T0)
        session.commit()
    saturday, monday = datetime(2026, 1, 10, 12, tzinfo=UTC), datetime(2026, 1, 12, 12, tzinfo=UTC)
    basket = lines(("B", "books", "1", "1000"))
    with session_factory() as session:
        service = LoyaltyService(session)
        weekend = service.quote(QuoteIn(card=CARD, lines=basket, at=saturday))
        assert (weekend.points_to_earn, weekend.promotions) == (200, ["weekend x2"])
        assert service.quote(QuoteIn(card=CARD, lines=basket, at=monday)).points_to_earn == 100
        # Dina lives in Kazan: not in the segment
        assert service.quote(QuoteIn(card="5555", lines=basket, at=saturday)).points_to_earn == 100
        small = lines(("B", "books", "1", "199"))
        assert service.quote(QuoteIn(card=CARD, lines=small, at=monday)).points_to_earn == 0
        # Anna was born on 10 March
        birthday = datetime(2026, 3, 10, 8, tzinfo=UTC)
        assert service.birthday_bonuses(now=birthday) == 1
        assert service.birthday_bonuses(now=birthday + timedelta(hours=5)) == 0
        assert service.balance(service.account(CARD), now=birthday).available == 300


def test_a_friend_brought_rewards_both_once_and_self_referral_is_refused(
    session_factory: sessionmaker[Session],
) -> None:
    rules = {
        **RULES,
        "pending_days": 0,
        "referrals": {"referrer_points": 500, "friend_points": 200, "min_purchase": "500"},
    }
    with session_factory() as session:
        store_base(session)
        # Anna again, with a plus-addressed email, as a new profile
        session.add(Customer(id=9, first_name="Anya", merged_into_id=None, attributes={}))
        session.flush()
        session.add(
            Identity(customer_id=9, kind=IdentityKind.EMAIL, value="anna+promo@example.ru",
                     raw_value="anna+promo@example.ru", source="test")
        )  # fmt: skip
        service = LoyaltyService(session)
        service.configure(ProgramRules.model_validate(rules), actor="admin")
        anna = service.enrol(EnrolIn(customer_id=1, card_number=CARD), actor="a", now=T0)
        code = anna.referral_code
        assert re.fullmatch(r"[A-HJ-NP-Z2-9]{8}", code)
        with pytest.raises(InvalidInput, match="referral_code: 'NOPE' is not known"):
            service.enrol(EnrolIn(customer_id=5, referral_code="NOPE"), actor="a", now=T0)
        service.enrol(EnrolIn(customer_id=5, card_number="5555", referral_code=code.lower()),
                      actor="a", now=T0)  # fmt: skip
        service.enrol(EnrolIn(customer_id=9, card_number="9999", referral_code=code),
                      actor="a", now=T0)  # fmt: skip
        session.commit()
    # a purchase below the minimum does not complete the referral; the next one does
    confirm(session_factory, "D1", lines(("B", "books", "1", "300")), at=T0, card="5555")
    confirm(session_factory, "D2", lines(("B", "books", "1", "600")), at=T0, card="5555")
    confirm(session_factory, "D3", lines(("B", "books", "1", "600")), at=T0, card="5555")
    confirm(session_factory, "A1", lines(("B", "books", "1", "600")), at=T0, card="9999")
    with session_factory() as session:
        service = LoyaltyService(session)
        found = [(r.friend_id, r.status.value, r.reason) for r in service.referrals(
            service.account(CARD))]  # fmt: skip
        assert found == [
            (2, "completed", None),
            (3, "refused", "self-referral: email anna@example.ru"),
        ]
        balance = {card: service.balance(service.account(card), now=T0).available
                   for card in (CARD, "5555", "9999")}  # fmt: skip
        # each has the welcome 100; Anna 500 for Dina; Dina 30 + 60 + 60 earned and 200 for
        # coming; Anya 60 earned, and nothing for her own referral
        assert balance == {CARD: 600, "5555": 450, "9999": 160}
        events = session.scalars(select(Event).where(Event.type == "loyalty.referral_completed"))
        assert sorted(e.properties["side"] for e in events) == ["friend", "referrer"]


def test_a_mini_program_rewards_its_segment_once_when_the_goal_is_reached(
    session_factory: sessionmaker[Session],
) -> None:
    """Moscow members (Anna, Vera) have January to spend 2,000 for 1,000 points; Dina
    (Kazan) is a member but not in the segment."""
    with session_factory() as session:
        store_base(session)
        SegmentService(session).create(
            SegmentIn(name="moscow", rule=parse_rule({"kind": "profile", "field": "city",
                                                      "value": "Moscow"})),
            actor="t",
        )  # fmt: skip
        service = LoyaltyService(session)
        service.configure(ProgramRules.model_validate({**RULES, "pending_days": 0}), actor="a")
        for customer, card in ((1, CARD), (3, "3333"), (5, "5555")):
            service.enrol(EnrolIn(customer_id=customer, card_number=card), actor="a", now=T0)
        minis = service.minis
        program = minis.create(
            MiniProgramIn(
                name="January push", segment="moscow", goal=Decimal("2000"), reward_points=1000,
                starts_at=T0, ends_at=T0 + timedelta(days=21),
            ),
            actor="maria",
        )  # fmt: skip
        assert minis.start(program, now=T0) == 2
        with pytest.raises(Conflict, match="started already"):
            minis.start(program, now=T0)
        session.commit()
    book = lines(("B", "books", "1", "1500"))
    first = confirm(session_factory, "A1", book, at=T0 + timedelta(days=1))
    assert first.available_points == 100 + 150
    second = confirm(session_factory, "A2", book, at=T0 + timedelta(days=2))
    # 3,000 spent: the goal is reached at this purchase, and rewarded with it
    assert second.available_points == 100 + 150 + 150 + 1000
    refund(session_factory, "A2", "1500", key="rf", at=T0 + timedelta(days=3))
    confirm(session_factory, "A3", book, at=T0 + timedelta(days=4))
    confirm(session_factory, "D1", book, at=T0 + timedelta(days=1), card="5555")
    # after the period, nothing counts
    confirm(session_factory, "V1", lines(("B", "books", "1", "5000")), at=T0 + timedelta(days=22),
            card="3333")  # fmt: skip
    with session_factory() as session:
        service = LoyaltyService(session)
        out = service.minis.standing(service.minis.find("January push"))
        # Anna: 3,000 kept by day 4 (1,500 refunded); Vera: nothing in the period
        assert (out.members, out.reached, out.mean_progress) == (2, 1, Decimal("1500.00"))
        rewards = session.scalars(
            select(LedgerEntry.points).where(LedgerEntry.reason.like("mini-program%"))
        ).all()
        assert list(rewards) == [1000]
        assert service.balance(service.account("5555"), now=T0 + timedelta(days=5)).available == 250
