"""The loyalty engine: enrolment, the till's quote, confirm, cancel and refund, operator
adjustments, tiers, expiry, liability and the ledger check. It never commits.

Every call that moves points first takes the account's lock (``LoyaltyRepository.lock``),
then looks up its idempotency key, then reads the lots: under the lock the key and the
balance are both current, so a retry replays the first answer and two tills cannot spend
the same points. Points are whole: earned points are rounded down, so the program never
gives more than its rules say.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy.orm import Session

from patron.customers.schemas import IdentityIn
from patron.customers.service import CustomerService
from patron.kit.clock import utcnow
from patron.kit.db import Base
from patron.kit.errors import Conflict, InvalidInput, NotFound
from patron.kit.money import round_money
from patron.loyalty.coupons import ALPHABET, CouponService
from patron.loyalty.mini import MiniProgramService
from patron.loyalty.repository import Burn, Lot, LoyaltyRepository, Recorded, TillContext
from patron.loyalty.schemas import (
    AccountOut,
    AdjustIn,
    BasketLine,
    CancelIn,
    ConfirmIn,
    ConfirmOut,
    EnrolIn,
    Liability,
    LineQuote,
    ProgramRules,
    QuoteIn,
    QuoteOut,
    RefundIn,
    RefundOut,
    VerifyOut,
)
from patron.models import (
    AccountStatus,
    EntryKind,
    Event,
    IdentityKind,
    LedgerEntry,
    LoyaltyAccount,
    LoyaltyOperation,
    LoyaltyProgram,
    PosTransaction,
    Referral,
    ReferralStatus,
    TierChange,
    TransactionStatus,
)
from patron.segments.service import SegmentService

Answer = TypeVar("Answer", bound=BaseModel)

EVENT_SOURCE = "loyalty"


class AccountBlocked(Conflict):
    """The card is blocked: it may not earn or spend."""


class _ParsedRules:
    """The rules of a saved version (``None``: the defaults), validated once per process
    while that version is in force: a till call would otherwise spend more CPU validating
    them than pricing the basket. Keyed by the saved document itself, so a new version, or
    another database, is never answered from the cache."""

    last: tuple[dict[str, Any] | None, ProgramRules] | None = None

    @classmethod
    def of(cls, saved: dict[str, Any] | None) -> ProgramRules:
        last = cls.last
        if last is not None and last[0] == saved:
            return last[1]
        rules = ProgramRules.model_validate(saved) if saved is not None else ProgramRules()
        cls.last = (saved, rules)
        return rules

    @classmethod
    def spend_since(cls, now: datetime) -> datetime | None:
        """Where the spend window of the last rules seen ends at ``now``, if they measure
        spend: a guess at the rules in force, which change seldom."""
        last = cls.last  # read once: another thread of the worker may replace it
        if last is None or last[1].qualification.measure != "spend":
            return None
        return now - timedelta(days=last[1].qualification.window_days)


@dataclass(frozen=True)
class Balance:
    available: int
    pending: int


def luhn_digit(digits: str) -> str:
    """The Luhn check digit of ``digits`` (ISO/IEC 7812), so a mistyped card is caught."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 0:
            value *= 2
            value -= 9 if value > 9 else 0
        total += value
    return str((10 - total % 10) % 10)


class LoyaltyService:
    """The loyalty program on one session."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.repo = LoyaltyRepository(session)
        self.coupons = CouponService(session)
        self.minis = MiniProgramService(session)
        self._rules: ProgramRules | None = None

    # -- the rules -------------------------------------------------------------------------

    @property
    def rules(self) -> ProgramRules:
        """The rules in force: the newest saved version, or the defaults."""
        if self._rules is None:
            latest = self.repo.latest_program()
            self._rules = _ParsedRules.of(latest.rules if latest else None)
        return self._rules

    def configure(self, rules: ProgramRules, *, actor: str, note: str = "") -> LoyaltyProgram:
        """Save the rules as the next version; earlier versions stay."""
        latest = self.repo.latest_program()
        version = (latest.version if latest else 0) + 1
        program = self.repo.add(
            LoyaltyProgram(
                version=version, rules=rules.model_dump(mode="json"), created_by=actor, note=note
            )
        )
        self._rules = rules
        return program

    # -- accounts --------------------------------------------------------------------------

    def enrol(self, data: EnrolIn, *, actor: str, now: datetime | None = None) -> LoyaltyAccount:
        """Open an account with a card (given, or a new Luhn-checked number), make the card
        an identity of the customer, and give the welcome bonus."""
        moment = now or utcnow()
        customers = CustomerService(self.session)
        customer = customers.get_active(data.customer_id)
        if self.repo.by_customer(customer.id) is not None:
            raise Conflict(f"customer {customer.id} is a member already")
        card = data.card_number or self._new_card()
        if self.repo.by_card(card) is not None:
            raise Conflict(f"card {card} belongs to another account")
        customers.add_identity(
            customer.id, IdentityIn(kind=IdentityKind.CARD, value=card, verified=True),
            source="loyalty",
        )  # fmt: skip
        referrer = None
        if data.referral_code is not None:
            referrer = self.repo.by_referral_code(data.referral_code.strip().upper())
            if referrer is None:
                raise InvalidInput(f"referral_code: {data.referral_code!r} is not known")
        rules = self.rules
        account = self.repo.add(
            LoyaltyAccount(
                customer_id=customer.id, card_number=card, tier=rules.tiers[0].name,
                tier_since=moment, enrolled_at=moment, referral_code=self._new_referral_code(),
            )
        )  # fmt: skip
        if referrer is not None:
            # a member who refers themselves (a second profile, a plus-addressed email)
            # is recorded as refused, with what gave it away, and never rewarded
            shared = self.repo.shared_identity(referrer.customer_id, customer.id)
            self.repo.add(
                Referral(
                    referrer_id=referrer.id, friend_id=account.id, created_at=moment,
                    status=ReferralStatus.REFUSED if shared else ReferralStatus.PENDING,
                    reason=f"self-referral: {shared}" if shared else None,
                )
            )  # fmt: skip
        self.repo.add(
            TierChange(
                account_id=account.id, from_tier=None, to_tier=account.tier, at=moment,
                reason="enrolled", qualifying=Decimal("0"),
            )
        )  # fmt: skip
        bonus = rules.earning.welcome_bonus
        if bonus:
            self._lot(
                account, bonus, kind=EntryKind.EARN, reason="welcome bonus", source="program",
                ref=None, key=f"welcome:{account.id}", at=moment, actor=actor,
            )  # fmt: skip
        return account

    def _new_referral_code(self) -> str:
        while True:
            code = "".join(secrets.choice(ALPHABET) for _ in range(8))
            if self.repo.by_referral_code(code) is None:
                return code

    def referrals(self, account: LoyaltyAccount) -> Sequence[Referral]:
        """Friends the member brought, and how each referral went."""
        return self.repo.referrals_by(account.id)

    def _complete_referral(
        self, friend: LoyaltyAccount, transaction: PosTransaction, *, value: Decimal,
        now: datetime, actor: str,
    ) -> None:  # fmt: skip
        """The friend's first qualifying purchase rewards both sides, once."""
        referral = self.repo.pending_referral(friend.id)
        rules = self.rules.referrals
        if referral is None or value < rules.min_purchase:
            return
        # the friend's lock is held; the referrer's comes second, and no chain of referrals
        # can lock the other way round (a friend always enrolled after their referrer)
        referrer = self.repo.lock(referral.referrer_id)
        assert referrer is not None
        for member, points, side in (
            (referrer, rules.referrer_points, "referrer"), (friend, rules.friend_points, "friend")
        ):  # fmt: skip
            if points:
                self._lot(
                    member, points, kind=EntryKind.EARN, reason=f"referral {referral.id}",
                    source="program", ref=transaction.receipt,
                    key=f"referral:{referral.id}:{side}", at=now, actor=actor,
                )  # fmt: skip
            self._publish(
                member, "loyalty.referral_completed", now, f"referral:{referral.id}:{side}",
                {"referral": referral.id, "side": side, "points": points},
            )  # fmt: skip
        referral.status = ReferralStatus.COMPLETED
        referral.completed_at = now
        referral.transaction_id = transaction.id

    def _mini_progress(self, account: LoyaltyAccount, *, now: datetime, actor: str) -> None:
        for program in self.minis.progress(account, now=now):
            self._lot(
                account, program.reward_points, kind=EntryKind.EARN,
                reason=f"mini-program {program.name!r} goal reached", source="program",
                ref=str(program.id), key=f"mini:{program.id}:{account.id}", at=now, actor=actor,
            )  # fmt: skip
            self._publish(
                account, "loyalty.mini_goal_reached", now, f"mini:{program.id}:{account.id}",
                {"program": program.name, "points": program.reward_points},
            )  # fmt: skip

    def _new_card(self) -> str:
        while True:
            body = "7" + "".join(secrets.choice("0123456789") for _ in range(14))
            card = body + luhn_digit(body)
            if self.repo.by_card(card) is None:
                return card

    def account_of(self, customer_id: int) -> LoyaltyAccount | None:
        """The customer's loyalty account, or ``None`` when they have not enrolled."""
        return self.repo.by_customer(customer_id)

    def operation_done(self, key: str) -> bool:
        """Whether an operation with this idempotency key is recorded already, so a
        resubmission of it will change nothing."""
        return self.repo.operation(key) is not None

    def account(self, card: str) -> LoyaltyAccount:
        found = self.repo.by_card(card.strip())
        if found is None:
            raise NotFound(f"card {card!r} is not known")
        return found

    def block(self, card: str, *, blocked: bool) -> LoyaltyAccount:
        # under the account's lock, as every change of the account: a confirm that waited
        # for the lock reads again only when the lock's version moved while it waited
        # (LoyaltyRepository.lock_card_for_till)
        account = self.repo.lock(self.account(card).id)
        assert account is not None
        account.status = AccountStatus.BLOCKED if blocked else AccountStatus.ACTIVE
        self.session.flush()
        return account

    def balance(
        self, account: LoyaltyAccount, *, now: datetime, lots: Sequence[Lot] | None = None
    ) -> Balance:
        """Points available and pending at ``now``, from ``lots`` when the caller read them
        under the account's lock already."""
        if lots is None:
            lots = self.repo.lots(account.id)
        return Balance(
            available=sum(lot.remaining for lot in lots if _usable(lot, now)),
            pending=sum(lot.remaining for lot in lots if lot.effective_at > now),
        )

    def describe(self, account: LoyaltyAccount, *, now: datetime | None = None) -> AccountOut:
        moment = now or utcnow()
        lots = self.repo.lots(account.id)
        notice = moment + timedelta(days=self.rules.expiry_notice_days)
        return AccountOut(
            id=account.id,
            customer_id=account.customer_id,
            card_number=account.card_number,
            referral_code=account.referral_code,
            status=account.status,
            tier=account.tier,
            tier_since=account.tier_since,
            available_points=sum(lot.remaining for lot in lots if _usable(lot, moment)),
            pending_points=sum(lot.remaining for lot in lots if lot.effective_at > moment),
            expiring_soon=sum(
                lot.remaining
                for lot in lots
                if _usable(lot, moment) and lot.expires_at is not None and lot.expires_at <= notice
            ),
            qualifying=self.qualifying(account, now=moment),
            enrolled_at=account.enrolled_at,
        )

    def ledger(self, account: LoyaltyAccount, *, limit: int, offset: int) -> Sequence[LedgerEntry]:
        return self.repo.entries(account.id, limit=limit, offset=offset)

    def tiers_of(self, account: LoyaltyAccount) -> Sequence[TierChange]:
        return self.repo.tier_history(account.id)

    # -- the till --------------------------------------------------------------------------

    def quote(self, data: QuoteIn) -> QuoteOut:
        """Discounts, the most points the basket may take, and the points it would earn."""
        account = self._usable_account(data.card)
        moment = data.at or utcnow()
        return self._price(account, data.lines, data.redeem_points, moment, data.coupon)

    def confirm(self, data: ConfirmIn, *, key: str, actor: str) -> ConfirmOut:
        """Burn and earn for a purchase, at once; the same key again replays the answer."""
        moment = data.at or utcnow()
        # the tier check's spend is read with the context, over the window of the rules
        # this process saw last: the rules in force are read in that same statement, so
        # the window they set is not known before it (_spend_before checks it after)
        since = _ParsedRules.spend_since(moment)
        locked = self.repo.lock_card_for_till(
            data.card.strip(), key=key, receipt=data.receipt, at=moment, spend_since=since
        )
        if locked is None:
            raise NotFound(f"card {data.card!r} is not known")
        account, context = locked
        self._may_use(account, data.card)
        self._rules = _ParsedRules.of(context.rules)
        return self._once(
            key, "confirm", data, ConfirmOut,
            lambda record: self._confirm(
                account, data, key, actor, context=context, moment=moment, record=record
            ),
            recorded=context.recorded,
        )  # fmt: skip

    def _confirm(
        self, account: LoyaltyAccount, data: ConfirmIn, key: str, actor: str, *,
        context: TillContext, moment: datetime, record: Callable[[ConfirmOut], Base],
    ) -> ConfirmOut:  # fmt: skip
        if context.receipt_transaction is not None:
            raise Conflict(
                f"receipt {data.receipt!r} is confirmed already "
                f"(transaction {context.receipt_transaction})"
            )
        # read once (on PostgreSQL with the context): under the lock only this call moves
        # the account's lots
        lots = context.lots if context.lots is not None else self.repo.lots(account.id)
        quote = self._price(account, data.lines, data.redeem_points, moment, data.coupon, lots=lots)
        if data.redeem_points > quote.available_points:
            raise InvalidInput(
                f"redeem_points: {data.redeem_points} is more than the "
                f"{quote.available_points} points available on card {account.card_number}"
            )
        if data.redeem_points > quote.max_redeemable:
            raise InvalidInput(
                f"redeem_points: at most {quote.max_redeemable} points may pay for this basket "
                f"({self.rules.max_burn_share:.0%} of it)"
            )
        rules = self.rules
        transaction = PosTransaction(
            account_id=account.id, receipt=data.receipt, status=TransactionStatus.CONFIRMED,
            currency=rules.currency, subtotal=quote.subtotal, discount=quote.discount,
            points_burned=quote.redeem_points, points_value=quote.points_value,
            paid=quote.to_pay, points_earned=quote.points_to_earn,
            lines={"lines": [line.model_dump(mode="json") for line in data.lines],
                   "quote": [line.model_dump(mode="json") for line in quote.lines]},
            confirmed_at=moment,
        )  # fmt: skip
        available_at = moment + timedelta(days=rules.pending_days)
        before = self._spend_before(context, moment)
        # under the lock the one transaction since the context's read is this purchase
        measure = None if before is None else before + quote.subtotal - quote.discount
        # nothing but this purchase moved the lots read for the quote: the burn left
        # available lots, and the earn lot is available unless the return window holds it
        pending = quote.points_to_earn if available_at > moment else 0
        balance = Balance(
            available=quote.available_points - quote.redeem_points + quote.points_to_earn
            - pending,
            pending=quote.pending_points + pending,
        )  # fmt: skip
        # nothing but the points moves with the purchase
        alone = (
            quote.points_to_earn > 0 and data.coupon is None and not context.pending_referral
            and not context.in_mini_program
        )  # fmt: skip
        if alone and context.transaction_id is not None and measure is not None:
            # the answer is known before any write: the transaction, the burn with its
            # uses of lots, the earn with its lot, its event and the move of the cached
            # total, and the answer under the key are one statement
            # (LoyaltyRepository.add_lot); a move up follows it
            transaction.id = context.transaction_id
            burn = self._burn(account, transaction, lots, key=key, actor=actor)
            target = self._higher_tier(account, measure)
            answer = _confirmed(
                transaction, available_at, balance, tier=target or account.tier,
                changed=target is not None,
            )  # fmt: skip
            self._earn(
                account, transaction, key=key, actor=actor, available_at=available_at,
                moves=quote.points_to_earn - quote.redeem_points, along=[transaction],
                last=record(answer), burn=burn,
            )  # fmt: skip
            if target is not None:
                self._move_tier(account, target, now=moment, reason="qualified", measure=measure)
            return answer
        transaction_id = self.repo.insert(transaction)
        transaction.id = transaction_id
        # a coupon use and a referral are tied to the transaction as a loaded row
        loaded = data.coupon is not None or context.pending_referral
        stored = self.repo.transaction_by_id(transaction_id) if loaded else None
        if data.coupon is not None and stored is not None:
            # taken under the coupon's own lock, checked again: a shared code's last use
            # may have gone to another till since the quote
            self.coupons.redeem(
                data.coupon, account=account, transaction=stored,
                value=quote.subtotal - quote.discount + quote.coupon_discount, now=moment,
            )  # fmt: skip
        burn = self._burn(account, transaction, lots, key=key, actor=actor)
        if burn is not None:
            self.repo.use_lots(self.repo.insert(burn.entry), burn.uses)
        # the burn and the earn move the cached total once, by their difference
        moved = quote.points_to_earn - quote.redeem_points
        if quote.points_to_earn:
            self._earn(
                account, transaction, key=key, actor=actor, available_at=available_at,
                moves=moved,
            )  # fmt: skip
        elif moved:
            self.repo.add_points(account.id, moved)
        if context.pending_referral and stored is not None:
            self._complete_referral(
                account, stored, value=quote.subtotal - quote.discount, now=moment,
                actor=actor,
            )  # fmt: skip
        if context.in_mini_program:
            self._mini_progress(account, now=moment, actor=actor)
        changed = self._upgrade(account, now=moment, measure=measure)
        if context.pending_referral or context.in_mini_program:
            balance = self.balance(account, now=moment)  # a reward may have opened lots
        return _confirmed(transaction, available_at, balance, tier=account.tier, changed=changed)

    def _earn(
        self, account: LoyaltyAccount, transaction: PosTransaction, *, key: str, actor: str,
        available_at: datetime, moves: int, along: Sequence[Base] = (), last: Base | None = None,
        burn: Burn | None = None,
    ) -> None:  # fmt: skip
        """The purchase's earn: its lot, its ``loyalty.points_earned`` event and the move of
        the cached total by ``moves``, written together (on PostgreSQL in one statement,
        with the ``along`` rows before the event and ``last`` after it, and the ``burn``
        first)."""
        points = transaction.points_earned
        earned = self._event(
            account, "loyalty.points_earned", transaction.confirmed_at,
            f"earned:{transaction.id}",
            {"points": points, "receipt": transaction.receipt,
             "available_at": available_at.isoformat()},
        )  # fmt: skip
        self._lot(
            account, points, kind=EntryKind.EARN, reason=f"purchase {transaction.receipt}",
            source="order", ref=transaction.receipt, key=f"{key}:earn", at=available_at,
            actor=actor, transaction_id=transaction.id, moves=moves,
            along=[*along, earned, *([] if last is None else [last])], burn=burn,
        )  # fmt: skip

    def _burn(
        self, account: LoyaltyAccount, transaction: PosTransaction, lots: Sequence[Lot], *,
        key: str, actor: str,
    ) -> Burn | None:  # fmt: skip
        """The points that pay for part of ``transaction`` (its id set): their entry and
        what they take from the ``lots`` read under the lock; None when none pay. The
        cached total is left to the earn, which moves it once for both."""
        points = transaction.points_burned
        if not points:
            return None
        moment = transaction.confirmed_at
        uses = self._uses(account, points, at=moment, pending_too=False, lots=lots)
        entry = LedgerEntry(
            account_id=account.id, kind=EntryKind.BURN, points=-points,
            reason=f"paid {transaction.points_value} of receipt {transaction.receipt}",
            source="order", source_ref=transaction.receipt, idempotency_key=f"{key}:burn",
            effective_at=moment, expires_at=None, transaction_id=transaction.id,
            created_by=actor,
        )  # fmt: skip
        return Burn(entry, uses)

    def cancel(
        self, data: CancelIn, *, key: str, actor: str, now: datetime | None = None
    ) -> RefundOut:
        """Undo a whole purchase: every point it burned comes back, every point it earned
        goes (what was spent already is kept from the money)."""
        transaction = self._transaction(data.receipt)
        account = self.repo.lock(transaction.account_id)
        assert account is not None
        return self._once(
            key, "cancel", data, RefundOut,
            lambda _record: self._refund(
                account, transaction, None, key=key, actor=actor, now=now or utcnow(),
                cancelling=True,
            ),
            recorded=self.repo.recorded(key),
        )  # fmt: skip

    def refund(
        self, data: RefundIn, *, key: str, actor: str, now: datetime | None = None
    ) -> RefundOut:
        """Goods came back: earn and burn are reversed in proportion to their value."""
        transaction = self._transaction(data.receipt)
        account = self.repo.lock(transaction.account_id)
        assert account is not None
        return self._once(
            key, "refund", data, RefundOut,
            lambda _record: self._refund(
                account, transaction, data.amount, key=key, actor=actor, now=now or utcnow(),
                cancelling=False,
            ),
            recorded=self.repo.recorded(key),
        )  # fmt: skip

    def _refund(
        self, account: LoyaltyAccount, transaction: PosTransaction, amount: Decimal | None,
        *, key: str, actor: str, now: datetime, cancelling: bool,
    ) -> RefundOut:  # fmt: skip
        self.session.refresh(transaction)
        value = transaction.subtotal - transaction.discount
        left = value - transaction.refunded
        if transaction.status is TransactionStatus.CANCELLED:
            raise Conflict(f"receipt {transaction.receipt!r} was cancelled already")
        if left == 0:
            raise Conflict(f"receipt {transaction.receipt!r} is refunded in full already")
        if amount is None:
            if transaction.refunded:
                raise Conflict(
                    f"receipt {transaction.receipt!r} is partly refunded: refund the rest instead"
                )
            amount = left
        elif amount > left:
            raise InvalidInput(
                f"amount: {amount} is more than the {left} left to refund on receipt "
                f"{transaction.receipt!r} (bought {value}, refunded {transaction.refunded})"
            )
        refunded = transaction.refunded + amount
        share = refunded / value if value else Decimal(1)
        # cumulative targets, so that rounding never drifts and a full refund is exact
        return_target = _floor(transaction.points_burned * share)
        reverse_target = _floor(transaction.points_earned * share)
        if refunded == value:
            return_target, reverse_target = transaction.points_burned, transaction.points_earned
        returned = return_target - self.repo.transaction_points(
            transaction.id, EntryKind.REVERSE, sign=+1
        )
        to_reverse = reverse_target - self.repo.transaction_points(
            transaction.id, EntryKind.REVERSE, sign=-1
        )
        reason = f"refund of {amount} on receipt {transaction.receipt}"
        if returned > 0:
            self._lot(
                account, returned, kind=EntryKind.REVERSE, reason=reason, source="order",
                ref=transaction.receipt, key=f"{key}:return", at=now, actor=actor,
                transaction_id=transaction.id,
            )  # fmt: skip
        taken = 0
        if to_reverse > 0:
            earned = self.repo.earn_lot(transaction.id)
            taken = self._take(
                account, to_reverse, kind=EntryKind.REVERSE, reason=reason, source="order",
                ref=transaction.receipt, key=f"{key}:reverse", at=now, actor=actor,
                transaction_id=transaction.id, pending_too=True, partial=True,
                first=earned.id if earned is not None else None,
            )  # fmt: skip
        short = max(to_reverse, 0) - taken
        money_value = round_money(transaction.paid * amount / value) if value else Decimal("0")
        money_back = max(round_money(money_value - short * self.rules.point_value), Decimal("0.00"))
        transaction.refunded = refunded
        if cancelling:
            transaction.status = TransactionStatus.CANCELLED
            self.coupons.give_back(transaction, now=now)
        elif refunded == value:
            transaction.status = TransactionStatus.REFUNDED
        else:
            transaction.status = TransactionStatus.PARTLY_REFUNDED
        self.session.flush()
        # progress goes down with a refund; a reward already given stays given
        self._mini_progress(account, now=now, actor=actor)
        balance = self.balance(account, now=now)
        return RefundOut(
            transaction_id=transaction.id, receipt=transaction.receipt,
            status=transaction.status, refunded=amount, points_returned=max(returned, 0),
            points_reversed=taken, points_short=short, money_back=money_back,
            available_points=balance.available, pending_points=balance.pending,
        )  # fmt: skip

    def adjust(
        self, card: str, data: AdjustIn, *, key: str, actor: str, now: datetime | None = None
    ) -> AccountOut:
        """An operator's correction, with its reason; it never leaves a negative balance."""
        account = self.repo.lock(self.account(card).id)
        assert account is not None
        moment = now or utcnow()

        def act(_record: object) -> AccountOut:
            if data.points > 0:
                self._lot(
                    account, data.points, kind=EntryKind.ADJUST, reason=data.reason,
                    source="operator", ref=None, key=f"{key}:adjust", at=moment, actor=actor,
                )  # fmt: skip
            else:
                available = self.balance(account, now=moment).available
                if -data.points > available:
                    raise InvalidInput(
                        f"points: cannot take {-data.points} points, card {card} has "
                        f"{available} available"
                    )
                self._take(
                    account, -data.points, kind=EntryKind.ADJUST, reason=data.reason,
                    source="operator", ref=None, key=f"{key}:adjust", at=moment, actor=actor,
                    pending_too=False,
                )  # fmt: skip
            return self.describe(account, now=moment)

        return self._once(key, "adjust", data, AccountOut, act, recorded=self.repo.recorded(key))

    # -- pricing ---------------------------------------------------------------------------

    def _price(
        self, account: LoyaltyAccount, lines: Sequence[BasketLine], redeem: int, now: datetime,
        coupon: str | None = None, *, lots: Sequence[Lot] | None = None,
    ) -> QuoteOut:  # fmt: skip
        """The quote: the tier discount per line, then a coupon's, the points cap, and the
        points the money paid earns (each line at its multiplier; rounded down once, on the
        total) plus a coupon's bonus."""
        rules = self.rules
        tier = rules.tier(account.tier)
        amounts = [round_money(line.quantity * line.unit_price) for line in lines]
        subtotal = sum(amounts, Decimal("0.00"))
        percent = tier.discount_percent / 100
        discounts = [round_money(a * percent) for a in amounts]
        net = [a - d for a, d in zip(amounts, discounts, strict=True)]
        labels = [f"{tier.name} tier {tier.discount_percent}%"] if sum(discounts) else []
        bonus, coupon_discount = 0, Decimal("0.00")
        if coupon is not None:
            found = self.coupons.check(coupon, account=account, value=sum(net, Decimal(0)), now=now)
            coupon_cut = _share(found.discount, net)
            discounts = [d + c for d, c in zip(discounts, coupon_cut, strict=True)]
            net = [n - c for n, c in zip(net, coupon_cut, strict=True)]
            labels.append(f"coupon {coupon}: {found.discount}")
            bonus, coupon_discount = found.bonus_points, found.discount
        discount = sum(discounts, Decimal("0.00"))
        value = subtotal - discount
        balance = self.balance(account, now=now, lots=lots)
        cap = _floor(value * rules.max_burn_share / rules.point_value)
        max_redeemable = min(balance.available, cap)
        applied = min(redeem, max_redeemable)
        points_value = round_money(applied * rules.point_value)
        to_pay = value - points_value
        paid_lines = [n - s for n, s in zip(net, _share(points_value, net), strict=True)]
        promotions = self._promotions(account, now)
        earning = rules.earning
        exact = Decimal("0")
        quoted: list[LineQuote] = []
        for line, amount, cut, paid in zip(lines, amounts, discounts, paid_lines, strict=True):
            multiplier = earning.products.get(
                line.sku, earning.categories.get(line.category or "", Decimal("1"))
            )
            for promotion in promotions:
                if not promotion.categories or (line.category in promotion.categories):
                    multiplier *= promotion.multiplier
            multiplier *= tier.earn_multiplier
            points = paid * earning.base_rate * multiplier
            exact += points
            quoted.append(
                LineQuote(
                    sku=line.sku, amount=amount, discount=cut, points=_floor(points),
                    multiplier=multiplier,
                )
            )  # fmt: skip
        earn = (_floor(exact) if value >= earning.min_basket else 0) + bonus
        return QuoteOut(
            card=account.card_number, tier=tier.name, currency=rules.currency,
            subtotal=subtotal, discount=discount, discounts=labels,
            available_points=balance.available, pending_points=balance.pending,
            max_redeemable=max_redeemable, redeem_points=applied, points_value=points_value,
            to_pay=to_pay, points_to_earn=earn, promotions=[p.name for p in promotions],
            coupon=coupon, coupon_discount=coupon_discount, lines=quoted,
        )  # fmt: skip

    def _promotions(self, account: LoyaltyAccount, now: datetime) -> list[Any]:
        active = []
        segments = None  # made for the first segment asked about: most calls ask none
        for promotion in self.rules.earning.promotions:
            if promotion.starts_at and now < promotion.starts_at:
                continue
            if promotion.ends_at and now >= promotion.ends_at:
                continue
            if promotion.weekdays and now.isoweekday() not in promotion.weekdays:
                continue
            if promotion.segment:
                segments = segments or SegmentService(self.session)
                if not segments.contains(promotion.segment, account.customer_id, as_of=now):
                    continue
            active.append(promotion)
        return active

    # -- tiers -----------------------------------------------------------------------------

    def qualifying(self, account: LoyaltyAccount, *, now: datetime) -> Decimal:
        """The account's qualifying measure over the rolling window (never its balance)."""
        rules = self.rules.qualification
        since = now - timedelta(days=rules.window_days)
        if rules.measure == "spend":
            return self.repo.spend_in_window(account.id, since=since, until=now)
        return self.repo.earned_in_window(account.id, since=since, until=now)

    def _spend_before(self, context: TillContext, now: datetime) -> Decimal | None:
        """The qualifying spend the till context read, when the rules in force measure
        spend over the window it was read for; otherwise None."""
        rules = self.rules.qualification
        if context.spend is None or rules.measure != "spend":
            return None
        window = now - timedelta(days=rules.window_days)
        return context.spend if context.spend_since == window else None

    def _upgrade(
        self, account: LoyaltyAccount, *, now: datetime, measure: Decimal | None = None
    ) -> bool:
        """Move up at once when the measure (read here unless given) reaches a higher tier."""
        if measure is None:
            measure = self.qualifying(account, now=now)
        target = self._higher_tier(account, measure)
        if target is None:
            return False
        self._move_tier(account, target, now=now, reason="qualified", measure=measure)
        return True

    def _higher_tier(self, account: LoyaltyAccount, measure: Decimal) -> str | None:
        """The tier above the account's that ``measure`` qualifies for, if any."""
        target = self.rules.qualifying_tier(measure)
        if self.rules.rank(target.name) <= self.rules.rank(account.tier):
            return None
        return target.name

    def review_tiers(self, *, now: datetime | None = None) -> dict[str, int]:
        """The periodic review: move down those below their tier's threshold once their
        grace has passed (and up any who qualify). Returns counts of moves."""
        moment = now or utcnow()
        grace = timedelta(days=self.rules.qualification.grace_days)
        moves = {"up": 0, "down": 0}
        for account_id in self.repo.account_ids():
            account = self.repo.lock(account_id)
            assert account is not None
            measure = self.qualifying(account, now=moment)
            target = self.rules.qualifying_tier(measure)
            rank, current = self.rules.rank(target.name), self.rules.rank(account.tier)
            if rank > current:
                self._move_tier(account, target.name, now=moment, reason="qualified",
                                measure=measure)  # fmt: skip
                moves["up"] += 1
            elif rank < current and moment >= account.tier_since + grace:
                self._move_tier(
                    account, target.name, now=moment, reason="review: below threshold",
                    measure=measure,
                )  # fmt: skip
                moves["down"] += 1
        return moves

    def _move_tier(
        self, account: LoyaltyAccount, tier: str, *, now: datetime, reason: str, measure: Decimal
    ) -> None:
        before = account.tier
        account.tier, account.tier_since = tier, now
        self.repo.add(
            TierChange(
                account_id=account.id, from_tier=before, to_tier=tier, at=now, reason=reason,
                qualifying=measure,
            )
        )  # fmt: skip
        self._publish(
            account, "loyalty.tier_changed", now, f"tier:{account.id}:{now.isoformat()}",
            {"from": before, "to": tier, "reason": reason, "qualifying": str(measure)},
        )  # fmt: skip

    # -- expiry, birthdays -----------------------------------------------------------------

    def expire(self, *, now: datetime | None = None, actor: str = "expiry") -> int:
        """Write off what is left of every lot past its expiry; returns the points."""
        moment = now or utcnow()
        total = 0
        for account_id, lots in _by_account(self.repo.lots_expiring(until=moment)):
            self.repo.lock(account_id)
            for lot in lots:
                # re-read under the lock: a purchase may have used the lot meanwhile
                fresh = [x for x in self.repo.lots(account_id) if x.id == lot.id]
                if not fresh:
                    continue
                left = fresh[0].remaining
                entry = self.repo.add(
                    LedgerEntry(
                        account_id=account_id, kind=EntryKind.EXPIRE, points=-left,
                        reason=f"expired on {lot.expires_at:%Y-%m-%d}", source="program",
                        source_ref=str(lot.id), idempotency_key=f"expire:{lot.id}",
                        effective_at=moment, expires_at=None, created_by=actor,
                    )
                )  # fmt: skip
                self.repo.use_lots(entry.id, [(lot.id, left, 0)])
                self.repo.add_points(account_id, -left)
                total += left
        return total

    def announce_expiring(self, *, now: datetime | None = None) -> int:
        """Publish ``loyalty.points_expiring`` once per lot that will expire within the
        notice period, so a campaign or trigger can remind the customer."""
        moment = now or utcnow()
        until = moment + timedelta(days=self.rules.expiry_notice_days)
        announced = 0
        for lot in self.repo.lots_expiring(until=until, after=moment):
            account = self.repo.account(lot.account_id)
            assert account is not None and lot.expires_at is not None
            if self._publish(
                account, "loyalty.points_expiring", moment, f"expiring:{lot.id}",
                {"points": lot.remaining, "expires_at": lot.expires_at.isoformat()},
            ):  # fmt: skip
                announced += 1
        return announced

    def birthday_bonuses(self, *, now: datetime | None = None) -> int:
        """The birthday bonus to members born today, once a year each."""
        moment = now or utcnow()
        bonus = self.rules.earning.birthday_bonus
        if not bonus:
            return 0
        given = 0
        for account_id, _ in self.repo.birthdays(moment.month, moment.day):
            key = f"birthday:{account_id}:{moment.year}"
            if self.repo.entry_by_key(key) is not None:
                continue
            account = self.repo.lock(account_id)
            assert account is not None
            self._lot(
                account, bonus, kind=EntryKind.EARN, reason="birthday bonus", source="program",
                ref=None, key=key, at=moment, actor="program",
            )  # fmt: skip
            given += 1
        return given

    # -- reports ---------------------------------------------------------------------------

    def liability(self, *, now: datetime | None = None) -> Liability:
        """Points outstanding, the breakage expected, and the money the rest will cost.

        Breakage is the rules' rate when set, else the program's own history: points
        expired over points expired or burned. Pending points count: most will vest."""
        moment = now or utcnow()
        rules = self.rules
        accounts, available, pending = self.repo.totals(now=moment)
        outstanding = available + pending
        if rules.breakage_rate is not None:
            rate, source = rules.breakage_rate, "rules"
        else:
            expired, burned = self.repo.moved(EntryKind.EXPIRE), self.repo.moved(EntryKind.BURN)
            done = expired + burned
            rate = (Decimal(expired) / done).quantize(Decimal("0.0001")) if done else Decimal(0)
            source = "history" if done else "no history yet"
        expected = _floor(outstanding * (1 - rate))
        soon = sum(
            lot.remaining
            for lot in self.repo.lots_expiring(until=moment + timedelta(days=30), after=moment)
        )
        return Liability(
            currency=rules.currency, accounts=accounts, available_points=available,
            pending_points=pending, outstanding_points=outstanding, breakage_rate=rate,
            breakage_source=source, expected_redeemed_points=expected,
            liability=round_money(expected * rules.point_value), expiring_next_30_days=soon,
        )  # fmt: skip

    def verify(self) -> VerifyOut:
        """Every cached total against the sum of its ledger, every open lot's remainder
        against its uses, and no lot overdrawn."""
        sums = self.repo.ledger_sums()
        mismatches = [
            {"account": account, "cached": cached, "ledger": total}
            for account, (cached, total) in sums.items()
            if cached != total
        ]
        negative = sorted(a for a, (_, total) in sums.items() if total < 0)
        lots = [
            {"lot": lot, "cached": cached, "ledger": left}
            for lot, cached, left in self.repo.lot_differences()
        ]
        negative += [-entry["lot"] for entry in lots if entry["ledger"] < 0]
        return VerifyOut(accounts=len(sums), mismatches=mismatches + lots, negative=negative)

    def tier_counts(self) -> dict[str, int]:
        counts = self.repo.tier_counts()
        return {tier.name: counts.get(tier.name, 0) for tier in self.rules.tiers}

    # -- the ledger's two moves ------------------------------------------------------------

    def _lot(
        self, account: LoyaltyAccount, points: int, *, kind: EntryKind, reason: str,
        source: str, ref: str | None, key: str, at: datetime, actor: str,
        transaction_id: int | None = None, moves: int | None = None, along: Sequence[Base] = (),
        burn: Burn | None = None,
    ) -> int:  # fmt: skip
        """Open a lot: usable from ``at``, expiring ``expiry_days`` after; returns its id.
        The account's cached total moves by ``moves`` (by the lot's points unless given),
        and the ``along`` rows (and a ``burn`` before them) are written with the lot."""
        days = self.rules.expiry_days
        return self.repo.add_lot(
            LedgerEntry(
                account_id=account.id, kind=kind, points=points, reason=reason, source=source,
                source_ref=ref, idempotency_key=key, effective_at=at,
                expires_at=at + timedelta(days=days) if days else None,
                transaction_id=transaction_id, created_by=actor,
            ),
            move=points if moves is None else moves,
            along=along,
            burn=burn,
        )  # fmt: skip

    def _take(
        self, account: LoyaltyAccount, points: int, *, kind: EntryKind, reason: str,
        source: str, ref: str | None, key: str, at: datetime, actor: str,
        transaction_id: int | None = None, pending_too: bool, partial: bool = False,
        first: int | None = None, lots: Sequence[Lot] | None = None,
    ) -> int:  # fmt: skip
        """Take points from lots, soonest-expiring first (``first`` before all, e.g. the
        purchase's own earn lot on a refund). Returns the points taken; with ``partial``
        fewer than asked may be there, otherwise the caller checked the balance. ``lots``
        are the account's open lots when the caller read them under the lock already."""
        uses = self._uses(
            account, points, at=at, pending_too=pending_too, partial=partial, first=first,
            lots=self.repo.lots(account.id) if lots is None else lots,
        )  # fmt: skip
        taken = sum(part for _, part, _ in uses)
        if taken == 0:
            return 0
        entry_id = self.repo.insert(
            LedgerEntry(
                account_id=account.id, kind=kind, points=-taken, reason=reason, source=source,
                source_ref=ref, idempotency_key=key, effective_at=at, expires_at=None,
                transaction_id=transaction_id, created_by=actor,
            )
        )  # fmt: skip
        self.repo.use_lots(entry_id, uses)
        self.repo.add_points(account.id, -taken)
        return taken

    @staticmethod
    def _uses(
        account: LoyaltyAccount, points: int, *, at: datetime, pending_too: bool,
        partial: bool = False, first: int | None = None, lots: Sequence[Lot],
    ) -> list[tuple[int, int, int]]:  # fmt: skip
        """What :meth:`_take` takes from each lot: ``(lot, points taken, points left)``."""
        usable = [
            lot for lot in lots if _usable(lot, at) or (pending_too and lot.effective_at > at)
        ]  # fmt: skip
        usable.sort(key=lambda lot: lot.id != first)
        uses: list[tuple[int, int, int]] = []
        wanted = points
        for lot in usable:
            if wanted == 0:
                break
            part = min(lot.remaining, wanted)
            uses.append((lot.id, part, lot.remaining - part))
            wanted -= part
        if wanted and not partial:
            taken = points - wanted
            raise InvalidInput(f"card {account.card_number} has {taken} points, not {points}")
        return uses

    # -- helpers ---------------------------------------------------------------------------

    def _usable_account(self, card: str) -> LoyaltyAccount:
        return self._may_use(self.repo.by_card(card.strip()), card)

    def _may_use(self, account: LoyaltyAccount | None, card: str) -> LoyaltyAccount:
        if account is None:
            raise NotFound(f"card {card!r} is not known")
        if account.status is AccountStatus.BLOCKED:
            raise AccountBlocked(f"card {account.card_number} is blocked")
        return account

    def _transaction(self, receipt: str) -> PosTransaction:
        found = self.repo.transaction(receipt)
        if found is None:
            raise NotFound(f"receipt {receipt!r} was never confirmed")
        return found

    def _once(
        self, key: str, kind: str, request: BaseModel, answer: type[Answer],
        act: Callable[[Callable[[Answer], LoyaltyOperation]], Answer], *,
        recorded: Recorded | None,
    ) -> Answer:  # fmt: skip
        """Run ``act`` once per key (under the account lock the caller holds): a retry
        with the same request gets the first answer; another request with it is refused.
        ``recorded`` is what is stored under the key, read under that lock.

        ``act`` is given the maker of the row that keeps its answer under the key: when it
        knows its answer before its last write, it may write the row with that write (a
        confirm that earns does, on PostgreSQL); otherwise the row is written here, after it."""
        digest = hashlib.sha256(f"{kind}\n{request.model_dump_json()}".encode()).hexdigest()
        if recorded is not None:
            if recorded.request_hash != digest:
                raise Conflict(f"idempotency key {key!r} was used for a different request")
            return answer.model_validate(recorded.answer)
        made: list[LoyaltyOperation] = []

        def record(result: Answer) -> LoyaltyOperation:
            made.append(
                LoyaltyOperation(
                    key=key, kind=kind, request_hash=digest,
                    answer=result.model_dump(mode="json"),
                )
            )  # fmt: skip
            return made[-1]

        result = act(record)
        if not made:
            self.repo.insert(record(result))
        return result

    def _publish(
        self,
        account: LoyaltyAccount,
        kind: str,
        at: datetime,
        ref: str,
        data: dict[str, Any],
    ) -> bool:
        """An event on the customer's timeline, once per ``ref``; triggers start from it."""
        if self.repo.event_exists(ref):
            return False
        self.repo.insert(self._event(account, kind, at, ref, data))
        return True

    @staticmethod
    def _event(
        account: LoyaltyAccount, kind: str, at: datetime, ref: str, data: dict[str, Any]
    ) -> Event:
        """The timeline event of :meth:`_publish`, not yet written."""
        return Event(
            customer_id=account.customer_id, type=kind, occurred_at=at,
            properties={"card": account.card_number, **data}, source=EVENT_SOURCE,
            external_id=ref,
        )  # fmt: skip


def _confirmed(
    transaction: PosTransaction, available_at: datetime, balance: Balance, *, tier: str,
    changed: bool,
) -> ConfirmOut:  # fmt: skip
    """The answer to a confirm whose transaction is ``transaction`` (its id set)."""
    return ConfirmOut(
        transaction_id=transaction.id, receipt=transaction.receipt,
        status=TransactionStatus.CONFIRMED, subtotal=transaction.subtotal,
        discount=transaction.discount, points_burned=transaction.points_burned,
        points_value=transaction.points_value, paid=transaction.paid,
        points_earned=transaction.points_earned, earn_available_at=available_at,
        available_points=balance.available, pending_points=balance.pending, tier=tier,
        tier_changed=changed,
    )  # fmt: skip


def _usable(lot: Lot, now: datetime) -> bool:
    return lot.effective_at <= now and (lot.expires_at is None or lot.expires_at > now)


def _share(total: Decimal, weights: Sequence[Decimal]) -> list[Decimal]:
    """``total`` spread over lines by their value in cents; the last line takes the rest."""
    whole = sum(weights, Decimal(0))
    shares = [round_money(total * w / whole) if whole else Decimal("0.00") for w in weights]
    if shares:
        shares[-1] = total - sum(shares[:-1], Decimal("0"))
    return shares


def _floor(value: Decimal | int) -> int:
    return int(Decimal(value).to_integral_value(rounding=ROUND_FLOOR))


def _by_account(lots: Sequence[Lot]) -> list[tuple[int, list[Lot]]]:
    grouped: dict[int, list[Lot]] = {}
    for lot in lots:
        grouped.setdefault(lot.account_id, []).append(lot)
    return sorted(grouped.items())
