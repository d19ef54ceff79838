"""All SQL of the loyalty domain: rules versions, accounts, the ledger and its lots, till
transactions, operations and tier history.

What remains of a lot is its points less what negative entries took from it
(``loyalty_lot_uses``), so "spend the oldest first" and "expire exactly what is left" are
both one grouped query. The ledger tables only ever receive inserts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    and_,
    bindparam,
    case,
    cast,
    column,
    delete,
    exists,
    extract,
    func,
    insert,
    inspect,
    literal,
    or_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.orm import Session

from patron.kit.clock import utcnow
from patron.kit.db import Base, bulk_insert_columns, python_default, table_of
from patron.kit.errors import Conflict
from patron.models import (
    Coupon,
    CouponPool,
    CouponUse,
    Customer,
    EntryKind,
    Event,
    Identity,
    IdentityKind,
    LedgerEntry,
    LotUse,
    LoyaltyAccount,
    LoyaltyOperation,
    LoyaltyProgram,
    MiniProgram,
    MiniProgramMember,
    OpenLot,
    PosTransaction,
    Referral,
    ReferralStatus,
    TierChange,
    TransactionStatus,
)

Row = TypeVar("Row")


@dataclass(frozen=True)
class Lot:
    """A positive entry with points left."""

    id: int
    account_id: int
    remaining: int
    effective_at: datetime
    expires_at: datetime | None


def _lot(row: Any) -> Lot:
    # PostgreSQL sums bigints as numeric: the points are whole, so make them int again
    lot_id, account_id, remaining, effective_at, expires_at = row
    return Lot(int(lot_id), int(account_id), int(remaining), effective_at, expires_at)


@dataclass(frozen=True)
class Recorded:
    """An operation done already: the hash of its request and its answer."""

    request_hash: str
    answer: dict[str, Any]


@dataclass(frozen=True)
class TillContext:
    """What a confirm reads under the account's lock before it writes anything."""

    recorded: Recorded | None
    receipt_transaction: int | None
    """The transaction that confirmed the receipt already, if any."""
    rules: dict[str, Any] | None
    """The newest rules version as saved, or ``None`` when none is."""
    pending_referral: bool
    in_mini_program: bool
    """Whether the account is a member of a mini-program running at the time."""
    spend: Decimal | None
    """The account's spend after ``spend_since`` up to the call's time, when asked."""
    spend_since: datetime | None
    transaction_id: int | None = None
    """On PostgreSQL, an id for the purchase's transaction, taken from its table's sequence
    (a call that writes no transaction leaves a gap in the ids)."""
    lots: list[Lot] | None = None
    """On PostgreSQL, the account's open lots, as :meth:`LoyaltyRepository.lots` gives them."""


@dataclass(frozen=True)
class Burn:
    """A negative entry written with an earn (see :meth:`LoyaltyRepository.add_lot`), and
    what it takes from each lot: ``(lot, points taken, points left)``, from lots read under
    the account's lock."""

    entry: LedgerEntry
    uses: Sequence[tuple[int, int, int]]


# The till's statements are built once: composing them anew for every call cost more CPU
# than running them. Values are bound at execution.
_INSERTS: dict[type[Base], tuple[Any, list[tuple[str, str]]]] = {}
"""One INSERT ... RETURNING per table, for :meth:`LoyaltyRepository.insert`."""
# the soonest to expire first, then the oldest; a lot that never expires goes last
_LOT_ORDER = (case((OpenLot.expires_at.is_(None), 1), else_=0), OpenLot.expires_at, OpenLot.lot_id)
_OPEN_LOTS = (
    select(
        OpenLot.lot_id, OpenLot.account_id, OpenLot.remaining, OpenLot.effective_at,
        OpenLot.expires_at,
    )
    .where(OpenLot.remaining > 0, OpenLot.account_id == bindparam("account_id"))
    .order_by(*_LOT_ORDER)
)  # fmt: skip
_ACCOUNTS = table_of(LoyaltyAccount)
_LOTS = table_of(OpenLot)
_ENTRIES = table_of(LedgerEntry)
# a lot used in part keeps what is left; one used up is closed. Each statement names what
# the lot held when it was read under the account's lock, so a lot moved by anything
# that did not hold the lock matches no row, and the caller is refused.
_USE_PART = (
    update(_LOTS)
    .where(_LOTS.c.lot_id == bindparam("lot"), _LOTS.c.remaining == bindparam("held"))
    .values(remaining=bindparam("left"))
)
_CLOSE = delete(_LOTS).where(
    tuple_(_LOTS.c.lot_id, _LOTS.c.remaining).in_(bindparam("lots", expanding=True))
)
# on the table, not the entity: the ORM's bulk UPDATE path costs more than the statement
_ADD_POINTS = (
    update(_ACCOUNTS)
    .where(_ACCOUNTS.c.id == bindparam("account_id"))
    .values(points=_ACCOUNTS.c.points + bindparam("points"))
)


def _locking(where: ColumnElement[bool]) -> Any:
    # the row comes back through RETURNING as the ORM entity, so nothing is read twice
    bump = _ACCOUNTS.c.lock_version + 1
    returning = update(_ACCOUNTS).where(where).values(lock_version=bump).returning(*_ACCOUNTS.c)
    return select(LoyaltyAccount).from_statement(returning)


_LOCK_BY_ID = _locking(_ACCOUNTS.c.id == bindparam("account_id"))
_LOCK_BY_CARD = _locking(_ACCOUNTS.c.card_number == bindparam("card"))


def _spend(until: Any, account: Any = None) -> Any:
    """Goods bought and kept (net of refunds) by ``account`` (by default ``:account_id``)
    after ``:since`` up to ``until``."""
    return select(
        func.sum(PosTransaction.subtotal - PosTransaction.discount - PosTransaction.refunded)
    ).where(
        PosTransaction.account_id == (bindparam("account_id") if account is None else account),
        PosTransaction.status != TransactionStatus.CANCELLED,
        PosTransaction.confirmed_at > bindparam("since"),
        PosTransaction.confirmed_at <= until,
    )


_SPEND = _spend(bindparam("until"))
_RECORDED = select(LoyaltyOperation.request_hash, LoyaltyOperation.answer).where(
    LoyaltyOperation.key == bindparam("key")
)


def _till_context(account: Any, *, postgres: bool) -> list[Any]:
    """The columns of :meth:`LoyaltyRepository.till_context`, for the account ``account``
    (a bound id, or the locked row's id where the lock and the reads are one statement)."""
    columns = [
        _RECORDED.with_only_columns(LoyaltyOperation.request_hash).scalar_subquery(),
        select(PosTransaction.id).where(PosTransaction.receipt == bindparam("receipt"))
        .scalar_subquery(),
        select(LoyaltyProgram.rules).order_by(LoyaltyProgram.version.desc()).limit(1)
        .scalar_subquery(),
        exists().where(Referral.friend_id == account, Referral.status == ReferralStatus.PENDING),
        exists().where(
            MiniProgramMember.account_id == account,
            MiniProgramMember.program_id == MiniProgram.id,
            MiniProgram.starts_at <= bindparam("at"),
            MiniProgram.ends_at > bindparam("at"),
        ),
        _spend(bindparam("at"), account).scalar_subquery(),
    ]  # fmt: skip
    if not postgres:
        return columns
    # On PostgreSQL the context also takes the id of the purchase's transaction: a confirm
    # that earns then writes its transaction with the earn, in one statement (the ledger
    # entries refer to it by that id; a foreign key is checked at the end of the statement).
    # And it brings the open lots, as JSON (times as ISO text: exact, where epoch seconds in
    # a double could move a lot that opens at the call's instant by a microsecond)
    lots = func.json_agg(
        aggregate_order_by(
            func.json_build_array(
                OpenLot.lot_id, OpenLot.remaining, OpenLot.effective_at, OpenLot.expires_at
            ),
            *_LOT_ORDER,
        )
    )
    return [
        *columns,
        func.nextval(func.pg_get_serial_sequence(PosTransaction.__tablename__, "id")),
        select(lots).where(OpenLot.remaining > 0, OpenLot.account_id == account).scalar_subquery(),
    ]


_TILL_CONTEXT = select(*_till_context(bindparam("account_id"), postgres=False))
_TILL_CONTEXT_POSTGRES = select(*_till_context(bindparam("account_id"), postgres=True))


def _locked_with_context() -> Any:
    """PostgreSQL: the till's lock by card and its reads in one statement, and the lock
    version the reads saw.

    A statement's subqueries read the snapshot taken when it began, before it waited for
    the lock, so they miss what a holder of the lock committed meanwhile. Every holder
    moves ``lock_version`` by one (every change of an account is made under
    :meth:`LoyaltyRepository.lock`), and the UPDATE reads the newest row: the reads are
    current exactly when the version seen in the snapshot is the new one less one
    (:meth:`LoyaltyRepository.lock_card_for_till` reads again otherwise)."""
    card = _ACCOUNTS.c.card_number == bindparam("card")
    seen = select(_ACCOUNTS.c.lock_version).where(card).scalar_subquery()
    locked = (
        update(_ACCOUNTS).where(card).values(lock_version=_ACCOUNTS.c.lock_version + 1)
        .returning(*_ACCOUNTS.c).cte("locked")
    )  # fmt: skip
    reads = [c.label(f"read_{n}") for n, c in enumerate(_till_context(locked.c.id, postgres=True))]
    both = select(*locked.c, seen.label("seen_version"), *reads)
    named: list[Any] = [column(read.name) for read in reads]
    return select(LoyaltyAccount, column("seen_version"), *named).from_statement(both)


_LOCK_CARD_WITH_CONTEXT = _locked_with_context()


def _insert_of(model: type[Base]) -> tuple[Any, list[tuple[str, str]]]:
    """The model's INSERT ... RETURNING its key, and its (attribute, column) names."""
    known = _INSERTS.get(model)
    if known is None:
        table = table_of(model)
        names = [
            (attribute.key, column.key)
            for attribute in inspect(model).column_attrs
            for column in attribute.columns
        ]
        known = _INSERTS[model] = (insert(table).returning(*table.primary_key.columns), names)
    return known


def _values(row: Base) -> dict[str, Any]:
    """The column values set on ``row``; the table's defaults fill the rest."""
    state = row.__dict__
    return {column: state[key] for key, column in _insert_of(type(row))[1] if key in state}


def _bound(row: Base, unset: dict[str, Any] | None = None) -> dict[str, Any]:
    """The values of every column of ``row`` but its key: those it sets, else those of
    ``unset``, else their Python-side default; a column with none is left out (the
    server's default)."""
    values = _values(row)
    for field in table_of(type(row)).c:
        if field.primary_key or field.key in values:
            continue
        if unset is not None and field.key in unset:
            values[field.key] = unset[field.key]
        elif field.default is not None:
            values[field.key] = python_default(field)
    return values


Shape = tuple[type[Base], tuple[str, ...], tuple[str, ...]]
"""A row's model, the columns its INSERT binds and those of them that take the entry's
parameter (:func:`_shared`)."""

# columns a purchase's rows tend to share with its entry (the account, the transaction, its
# source, the moment and the actor), which then take one parameter
_SHARED = (
    "account_id", "transaction_id", "source", "source_ref", "created_at", "created_by",
    "effective_at",
)  # fmt: skip


def _shared(table: Any, bound: dict[str, Any], entry: dict[str, Any]) -> tuple[str, ...]:
    """The columns of a row for ``table`` that hold the entry's value, in a column of the
    entry's type, so that the entry's parameter can serve them.

    Why: psycopg parses and caches a statement's conversion only up to 50 parameters;
    past that it parses the SQL text again on every call (about a tenth of the CPU of a
    confirm that burns, in a profile of the server under load). Sharing keeps a
    purchase's statement under it."""
    return tuple(
        name for name in _SHARED
        if name in bound and name in entry and bound[name] == entry[name]
        and type(table.c[name].type) is type(_ENTRIES.c[name].type)
    )  # fmt: skip


def _insert_bound(
    table: Any, names: tuple[str, ...], prefix: str, shared: tuple[str, ...] = ()
) -> Any:
    """An INSERT into ``table`` binding ``names`` as ``{prefix}{name}``, but those in
    ``shared`` as the entry's ``e_{name}``."""
    return insert(table).values(
        {
            name: bindparam(
                f"e_{name}" if name in shared else f"{prefix}{name}", type_=table.c[name].type
            )
            for name in names
        }
    )


def _arrays(*names: str) -> Any:
    """``unnest`` of the bigint arrays bound as ``names``, as a table with those columns."""
    arrays = [bindparam(name, type_=ARRAY(BigInteger)) for name in names]
    return func.unnest(*arrays).table_valued(*names).render_derived(with_types=False)


def _burning(columns: tuple[str, ...], shared: tuple[str, ...]) -> tuple[Any, list[Any]]:
    """The burn's entry (binding ``b_{column}``) as a CTE, and the CTEs that record its
    uses of lots and move the lots, each lot matched on what it held when it was read
    under the lock, as ``_USE_PART`` and ``_CLOSE`` do (:func:`_add_lot` returns how many
    lots they moved)."""
    burned = _insert_bound(_ENTRIES, columns, "b_", shared).returning(_ENTRIES.c.id)
    burned = burned.cte("burned")
    used = _arrays("use_lot", "use_points")
    parts = _arrays("part_lot", "part_held", "part_left")
    ends = _arrays("close_lot", "close_held")
    return burned, [
        insert(_LOT_USES).from_select(
            ["entry_id", "lot_id", "points"],
            # one burn, each of its uses: a product of one row by the uses, on purpose
            select(burned.c.id, used.c.use_lot, used.c.use_points).select_from(
                burned.join(used, true())
            ),
        ).cte("used"),
        update(_LOTS)
        .where(_LOTS.c.lot_id == parts.c.part_lot, _LOTS.c.remaining == parts.c.part_held)
        .values(remaining=parts.c.part_left)
        .returning(_LOTS.c.lot_id)
        .cte("parted"),
        delete(_LOTS)
        .where(_LOTS.c.lot_id == ends.c.close_lot, _LOTS.c.remaining == ends.c.close_held)
        .returning(_LOTS.c.lot_id)
        .cte("closed"),
    ]  # fmt: skip


def _add_lot(
    entry: tuple[str, ...], move: bool, along: tuple[Shape, ...],
    burn: tuple[tuple[str, ...], tuple[str, ...]] | None = None,
) -> Any:  # fmt: skip
    """The entry's INSERT (binding the columns ``entry`` as ``e_{column}``), as a CTE, hands
    its id and points to the lot's. With ``move`` an UPDATE of the account's cached total
    rides along, and each ``(model, columns, shared)`` of ``along`` an INSERT of one row
    (``{i}_{column}`` for row i, but ``e_{column}`` for its shared columns): PostgreSQL
    runs every data-modifying CTE of a statement, read or not.

    With ``burn`` (the burn entry's columns and its shared ones) the statement also writes
    the burn of :func:`_burning` and returns, beside the lot's id, the number of lots it
    moved. The earn's entry then selects its values from the burn's row, so that it is
    written after it and takes the later id, as when they were written one after the other
    (PostgreSQL runs a CTE no other part reads only after the main statement)."""
    extra = []
    if move:
        extra.append(
            # (bound names that are no column of a table written here: an UPDATE would
            # also set the column a parameter is named after)
            update(_ACCOUNTS)
            .where(_ACCOUNTS.c.id == bindparam("e_account_id"))
            .values(points=_ACCOUNTS.c.points + bindparam("_move"))
            .cte("moved")
        )
    for number, (model, names, shared) in enumerate(along):
        written_along = _insert_bound(table_of(model), names, f"{number}_", shared)
        extra.append(written_along.cte(f"along_{number}"))
    returned = (
        _ENTRIES.c.id, _ENTRIES.c.account_id, _ENTRIES.c.points, _ENTRIES.c.effective_at,
        _ENTRIES.c.expires_at,
    )  # fmt: skip
    if burn is None:
        written = _insert_bound(_ENTRIES, entry, "e_").returning(*returned).cte("entry")
        counted: list[Any] = []
    else:
        burned, writes = _burning(*burn)
        extra.extend(writes)
        after = select(
            *(cast(bindparam(f"e_{name}"), _ENTRIES.c[name].type) for name in entry)
        ).select_from(burned)
        written = insert(_ENTRIES).from_select(list(entry), after).returning(*returned)
        written = written.cte("entry")
        parted, closed = writes[1], writes[2]
        moved = (
            select(func.count()).select_from(parted).scalar_subquery()
            + select(func.count()).select_from(closed).scalar_subquery()
        )
        counted = [moved]
    return insert(_LOTS).from_select(
        ["lot_id", "account_id", "remaining", "effective_at", "expires_at"],
        select(written.c.id, written.c.account_id, written.c.points, written.c.effective_at,
               written.c.expires_at),
    ).returning(_LOTS.c.lot_id, *counted).add_cte(*extra)  # fmt: skip


_ADD_LOTS: dict[Any, Any] = {}  # _add_lot's statements by their arguments
_LOT_USES = table_of(LotUse)


def _use_arrays(uses: Sequence[tuple[int, int, int]]) -> dict[str, list[int]]:
    """The arrays :func:`_burning` binds: every use, the lots used in part and those used up."""
    part = [(lot, taken + left, left) for lot, taken, left in uses if left]
    ends = [(lot, taken) for lot, taken, left in uses if not left]
    return {
        "use_lot": [lot for lot, _, _ in uses], "use_points": [taken for _, taken, _ in uses],
        "part_lot": [lot for lot, _, _ in part], "part_held": [held for _, held, _ in part],
        "part_left": [left for _, _, left in part],
        "close_lot": [lot for lot, _ in ends], "close_held": [held for _, held in ends],
    }  # fmt: skip


def _moved_without_lock(uses: Sequence[tuple[int, int, int]]) -> Conflict:
    return Conflict(
        f"the lots {sorted(lot for lot, _, _ in uses)} no longer hold the points read "
        "under the account's lock (something moved them without it): try again"
    )


def _canonical(kind: IdentityKind, value: str) -> str:
    if kind is not IdentityKind.EMAIL or "@" not in value:
        return value
    local, domain = value.rsplit("@", 1)
    local = local.split("+", 1)[0]
    if domain in {"gmail.com", "googlemail.com"}:
        local, domain = local.replace(".", ""), "gmail.com"
    return f"{local}@{domain}"


class LoyaltyRepository:
    """Loyalty rows in one session."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def _core(self, statement: Any, values: dict[str, Any]) -> Any:
        """Run a Core statement on the session's connection, after flushing what the
        session holds so rows reach the database in the order they were made.

        The till's statements go this way: through ``Session.execute`` a statement on
        mapped columns is set up by the ORM first, which cost the read of the lots 0.31 ms
        of CPU against 0.13 ms here (PostgreSQL)."""
        self.session.flush()
        return self.session.connection().execute(statement, values)

    # -- rules -----------------------------------------------------------------------------

    def latest_program(self) -> LoyaltyProgram | None:
        query = select(LoyaltyProgram).order_by(LoyaltyProgram.version.desc()).limit(1)
        return self.session.scalar(query)

    def programs(self) -> Sequence[LoyaltyProgram]:
        return self.session.scalars(
            select(LoyaltyProgram).order_by(LoyaltyProgram.version.desc())
        ).all()

    def add(self, row: Row) -> Row:
        """Insert one row and give it its id."""
        self.session.add(row)
        self.session.flush()
        return row

    def insert(self, row: Base) -> int:
        """Insert ``row`` with one Core statement and return its primary key; the row
        object stays out of the session.

        For rows nothing reads back in the same call (ledger entries, events, operations):
        the ORM's flush costs more CPU than the INSERT. Pending ORM changes are flushed
        first, so rows still reach the database in the order they were made."""
        statement, _ = _insert_of(type(row))
        return int(self._core(statement, _values(row)).scalar_one())

    # -- accounts --------------------------------------------------------------------------

    def account(self, account_id: int) -> LoyaltyAccount | None:
        return self.session.get(LoyaltyAccount, account_id)

    def by_card(self, card: str) -> LoyaltyAccount | None:
        return self.session.scalar(select(LoyaltyAccount).where(LoyaltyAccount.card_number == card))

    def by_customer(self, customer_id: int) -> LoyaltyAccount | None:
        return self.session.scalar(
            select(LoyaltyAccount).where(LoyaltyAccount.customer_id == customer_id)
        )

    def lock(self, account_id: int) -> LoyaltyAccount | None:
        """Take the account's lock for the rest of the transaction; returns the account as
        it is under the lock.

        An UPDATE is the one lock every backend has: PostgreSQL holds the row until the
        commit, and SQLite takes its write lock here, before anything is read, so a
        balance read after this point cannot be stale."""
        return self._lock(_LOCK_BY_ID, {"account_id": account_id})

    def lock_card(self, card: str) -> LoyaltyAccount | None:
        """:meth:`lock` by card number: the till's one round trip to find and lock."""
        return self._lock(_LOCK_BY_CARD, {"card": card})

    def _lock(self, statement: Any, values: dict[str, Any]) -> LoyaltyAccount | None:
        self.session.expire_all()
        return self.session.scalars(
            statement, values, execution_options={"populate_existing": True}
        ).one_or_none()

    def add_points(self, account_id: int, points: int) -> None:
        """Move the cached total with its entries, in the same transaction."""
        self._core(_ADD_POINTS, {"account_id": account_id, "points": points})

    def lock_card_for_till(
        self, card: str, *, key: str, receipt: str, at: datetime, spend_since: datetime | None,
    ) -> tuple[LoyaltyAccount, TillContext] | None:  # fmt: skip
        """:meth:`lock_card` and then :meth:`till_context`: a confirm's lock and reads.

        On PostgreSQL they are one statement, and so one round trip, whenever no other
        holder of the lock committed between the statement's start and its taking the lock
        (see ``_locked_with_context``); otherwise the reads are made again, under the lock.
        None when no account has the card."""
        if self.session.get_bind().dialect.name != "postgresql":
            account = self.lock_card(card)
            if account is None:
                return None
            return account, self.till_context(
                account.id, key=key, receipt=receipt, at=at, spend_since=spend_since
            )
        values = {"card": card, "key": key, "receipt": receipt, "at": at, "since": spend_since}
        # pending changes reach the database before the entities are read over them
        self.session.flush()
        self.session.expire_all()
        row = self.session.execute(
            _LOCK_CARD_WITH_CONTEXT, values, execution_options={"populate_existing": True}
        ).one_or_none()
        if row is None:
            return None
        account, seen, *reads = row
        if seen != account.lock_version - 1:  # a holder committed while this call waited
            return account, self.till_context(
                account.id, key=key, receipt=receipt, at=at, spend_since=spend_since
            )
        return account, self._context(account.id, key, spend_since, reads)

    def till_context(
        self, account_id: int, *, key: str, receipt: str, at: datetime,
        spend_since: datetime | None = None,
    ) -> TillContext:  # fmt: skip
        """A confirm's reads in one round trip: the operation recorded under ``key``, the
        transaction of ``receipt``, the rules in force, whether a referral or a
        mini-program may move with the purchase, with ``spend_since`` the spend of
        :meth:`spend_in_window` from then to ``at``, and on PostgreSQL an id for the
        purchase's transaction and the account's open lots.

        Call it after :meth:`lock`: PostgreSQL evaluates a statement's subqueries on the
        snapshot taken before it waited for the lock, so folded into the lock's statement
        they could miss what the previous holder just committed (which
        :meth:`lock_card_for_till` checks for)."""
        values = {
            "key": key, "receipt": receipt, "account_id": account_id, "at": at,
            "since": spend_since,
        }  # fmt: skip
        postgres = self.session.get_bind().dialect.name == "postgresql"
        row = self._core(_TILL_CONTEXT_POSTGRES if postgres else _TILL_CONTEXT, values).one()
        return self._context(account_id, key, spend_since, row)

    def _context(
        self, account_id: int, key: str, spend_since: datetime | None, row: Sequence[Any]
    ) -> TillContext:
        """The :class:`TillContext` of the reads of ``_till_context``, in their order."""
        recorded_hash, transaction, rules, referral, mini, spend, *more = row
        lots = None
        if more:
            lots = [
                Lot(int(lot), account_id, int(remaining), datetime.fromisoformat(opens),
                    None if expires is None else datetime.fromisoformat(expires))
                for lot, remaining, opens, expires in more[1] or ()
            ]  # fmt: skip
        return TillContext(
            # the answer is read only for a replay, the rare case
            recorded=self.recorded(key) if recorded_hash is not None else None,
            receipt_transaction=None if transaction is None else int(transaction),
            rules=rules,
            pending_referral=bool(referral),
            in_mini_program=bool(mini),
            spend=None if spend_since is None else Decimal(spend or 0),
            spend_since=spend_since,
            transaction_id=int(more[0]) if more else None,
            lots=lots,
        )

    def accounts(self, *, limit: int, offset: int) -> Sequence[LoyaltyAccount]:
        query = select(LoyaltyAccount).order_by(LoyaltyAccount.id).limit(limit).offset(offset)
        return self.session.scalars(query).all()

    def by_referral_code(self, code: str) -> LoyaltyAccount | None:
        return self.session.scalar(
            select(LoyaltyAccount).where(LoyaltyAccount.referral_code == code)
        )

    def pending_referral(self, friend_id: int) -> Referral | None:
        return self.session.scalar(
            select(Referral).where(
                Referral.friend_id == friend_id, Referral.status == ReferralStatus.PENDING
            )
        )

    def referrals_by(self, referrer_id: int) -> Sequence[Referral]:
        return self.session.scalars(
            select(Referral).where(Referral.referrer_id == referrer_id).order_by(Referral.id)
        ).all()

    def shared_identity(self, one: int, other: int) -> str | None:
        """What shows two profiles are one person: the same profile, one merged into the
        other, or an email or phone that is the same once canonical (an email's +tag and,
        at Gmail, its dots do not make another mailbox). None when nothing is shared."""
        if one == other:
            return "the same customer"
        merged = self.session.scalar(
            select(func.count()).select_from(Customer).where(
                or_(
                    and_(Customer.id == one, Customer.merged_into_id == other),
                    and_(Customer.id == other, Customer.merged_into_id == one),
                )
            )
        )  # fmt: skip
        if merged:
            return "one profile is merged into the other"
        rows = self.session.execute(
            select(Identity.customer_id, Identity.kind, Identity.value).where(
                Identity.customer_id.in_([one, other]),
                Identity.kind.in_([IdentityKind.EMAIL, IdentityKind.PHONE]),
            )
        )
        seen: dict[str, set[int]] = {}
        for owner, kind, value in rows:
            key = f"{kind.value} {_canonical(kind, value)}"
            seen.setdefault(key, set()).add(int(owner))
        shared = sorted(key for key, owners in seen.items() if len(owners) == 2)
        return shared[0] if shared else None

    def account_ids(self) -> list[int]:
        return list(self.session.scalars(select(LoyaltyAccount.id).order_by(LoyaltyAccount.id)))

    def birthdays(self, month: int, day: int) -> list[tuple[int, int]]:
        """(account, customer) of members born on this day of the year."""
        born = Customer.birth_date
        rows = self.session.execute(
            select(LoyaltyAccount.id, Customer.id)
            .join(Customer, Customer.id == LoyaltyAccount.customer_id)
            .where(
                born.is_not(None),
                extract("month", born) == month,
                extract("day", born) == day,
            )
            .order_by(LoyaltyAccount.id)
        )
        return [(int(a), int(c)) for a, c in rows]

    # -- the ledger ------------------------------------------------------------------------

    def entry_by_key(self, key: str) -> LedgerEntry | None:
        return self.session.scalar(select(LedgerEntry).where(LedgerEntry.idempotency_key == key))

    def entries(self, account_id: int, *, limit: int, offset: int) -> Sequence[LedgerEntry]:
        query = (
            select(LedgerEntry)
            .where(LedgerEntry.account_id == account_id)
            .order_by(LedgerEntry.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return self.session.scalars(query).all()

    def add_lot(
        self, entry: LedgerEntry, *, move: int = 0, along: Sequence[Base] = (),
        burn: Burn | None = None,
    ) -> int:  # fmt: skip
        """Write a positive entry and open its lot with all its points; returns its id.
        ``move`` is added to the account's cached total, and the ``along`` rows (rows
        nothing reads back in the call, such as events) are inserted.

        On PostgreSQL all of it is one statement (each write a data-modifying CTE): a
        confirm's earn, its event and the move of its total cost one round trip instead of
        three, and with them a share of the till's CPU (about 0.25 ms of Python and 0.15 ms
        of PostgreSQL per statement). SQLite has no INSERT inside WITH, so there each write
        is a statement of its own.

        A ``burn`` is written first, as :meth:`use_lots` writes it and with its checks
        (on PostgreSQL in the same statement).

        Raises
        ------
        Conflict
            As :meth:`use_lots`.
        """
        if self.session.get_bind().dialect.name != "postgresql":
            if burn is not None:
                self.use_lots(self.insert(burn.entry), burn.uses)
            lot_id = self.insert(entry)
            self.insert(
                OpenLot(
                    lot_id=lot_id, account_id=entry.account_id, remaining=entry.points,
                    effective_at=entry.effective_at, expires_at=entry.expires_at,
                )
            )  # fmt: skip
            if move:
                self.add_points(entry.account_id, move)
            for row in along:
                self.insert(row)
            return lot_id
        # the columns a row leaves unset take their Python-side default, as an INSERT of
        # the row alone would give them (one with none is left out, to the server's)
        earned = _bound(entry)
        columns = tuple(earned)
        values: dict[str, Any] = {f"e_{name}": value for name, value in earned.items()}
        # the rows written with the entry were made at its moment, unless they say otherwise
        moment = {"created_at": earned["created_at"]}
        shapes: list[Shape] = []
        for number, row in enumerate(along):
            bound = _bound(row, moment)
            shared = _shared(table_of(type(row)), bound, earned)
            shapes.append((type(row), tuple(bound), shared))
            values.update(
                {f"{number}_{name}": value for name, value in bound.items() if name not in shared}
            )
        if move:
            values["_move"] = move
        burning = None
        if burn is not None:
            bound = _bound(burn.entry, moment)
            shared = _shared(_ENTRIES, bound, earned)
            burning = (tuple(bound), shared)
            values.update(
                {f"b_{name}": value for name, value in bound.items() if name not in shared}
            )
            values.update(_use_arrays(burn.uses))
        shape = (columns, bool(move), tuple(shapes), burning)
        statement = _ADD_LOTS.get(shape)
        if statement is None:
            statement = _ADD_LOTS[shape] = _add_lot(*shape)
        written = self._core(statement, values).one()
        if burn is not None and written[1] != len(burn.uses):
            raise _moved_without_lock(burn.uses)
        return int(written[0])

    def use_lots(self, entry_id: int, uses: Sequence[tuple[int, int, int]]) -> None:
        """Record what a negative entry took from each lot, given as ``(lot, points taken,
        points left)`` from lots read under the account's lock: a lot left with points is
        updated, the lots used up are closed in one statement.

        Raises
        ------
        Conflict
            A lot no longer holds what the caller read: it moved without the account's
            lock. The transaction must then be rolled back (the request's is, as every
            error rolls it back): the uses were written before the check.
        """
        if not uses:
            return
        bulk_insert_columns(
            self.session,
            _LOT_USES,
            {
                "entry_id": [entry_id] * len(uses),
                "lot_id": [lot for lot, _, _ in uses],
                "points": [points for _, points, _ in uses],
            },
        )
        moved = 0
        for lot, points, left in uses:
            if left:
                values = {"lot": lot, "held": points + left, "left": left}
                moved += self._core(_USE_PART, values).rowcount
        used_up = [(lot, points) for lot, points, left in uses if not left]
        if used_up:
            moved += self._core(_CLOSE, {"lots": used_up}).rowcount
        if moved != len(uses):
            raise _moved_without_lock(uses)

    def _open(self) -> Any:
        return select(
            OpenLot.lot_id, OpenLot.account_id, OpenLot.remaining, OpenLot.effective_at,
            OpenLot.expires_at,
        ).where(OpenLot.remaining > 0)  # fmt: skip

    def lots(self, account_id: int) -> list[Lot]:
        """The account's lots with points left: the soonest to expire first, then the
        oldest (a lot that never expires goes last)."""
        return [_lot(row) for row in self._core(_OPEN_LOTS, {"account_id": account_id})]

    def lots_expiring(self, *, until: datetime, after: datetime | None = None) -> list[Lot]:
        """Lots with points left whose expiry is at or before ``until`` (and after
        ``after``), across accounts, in account order: the expiry job's work list."""
        query = self._open().where(OpenLot.expires_at <= until)
        if after is not None:
            query = query.where(OpenLot.expires_at > after)
        query = query.order_by(OpenLot.account_id, OpenLot.lot_id)
        return [_lot(row) for row in self.session.execute(query)]

    def totals(self, *, now: datetime) -> tuple[int, int, int]:
        """Accounts, points available and points pending, across the program."""
        live = or_(OpenLot.expires_at.is_(None), OpenLot.expires_at > now)
        available = func.sum(case((and_(OpenLot.effective_at <= now, live), OpenLot.remaining)))
        pending = func.sum(case((OpenLot.effective_at > now, OpenLot.remaining)))
        points = self.session.execute(select(available, pending)).one()
        accounts = self.session.scalar(select(func.count()).select_from(LoyaltyAccount))
        return int(accounts or 0), int(points[0] or 0), int(points[1] or 0)

    def lot_differences(self) -> list[tuple[int, int, int]]:
        """Lots whose open remainder differs from what the ledger leaves them:
        (lot, cached, ledger). The ledger's remainder is the lot less its uses."""
        used = (
            select(func.coalesce(func.sum(LotUse.points), 0))
            .where(LotUse.lot_id == LedgerEntry.id)
            .correlate(LedgerEntry)
            .scalar_subquery()
        )
        left = (LedgerEntry.points - used).label("left")
        cached = func.coalesce(OpenLot.remaining, 0)
        rows = self.session.execute(
            select(LedgerEntry.id, cached, left)
            .outerjoin(OpenLot, OpenLot.lot_id == LedgerEntry.id)
            .where(LedgerEntry.points > 0, cached != left)
            .order_by(LedgerEntry.id)
        )
        return [(int(a), int(b), int(c)) for a, b, c in rows]

    def moved(self, kind: EntryKind) -> int:
        """All points ever moved by entries of ``kind`` (as a positive number)."""
        total = self.session.scalar(
            select(func.sum(func.abs(LedgerEntry.points))).where(LedgerEntry.kind == kind)
        )
        return int(total or 0)

    def ledger_sums(self) -> dict[int, tuple[int, int]]:
        """Per account: the cached points and the sum of its entries."""
        sums = (
            select(LedgerEntry.account_id, func.sum(LedgerEntry.points).label("total"))
            .group_by(LedgerEntry.account_id)
            .subquery()
        )
        rows = self.session.execute(
            select(LoyaltyAccount.id, LoyaltyAccount.points, func.coalesce(sums.c.total, 0))
            .outerjoin(sums, sums.c.account_id == LoyaltyAccount.id)
            .order_by(LoyaltyAccount.id)
        )
        return {int(a): (int(cached), int(total)) for a, cached, total in rows}

    # -- till transactions -----------------------------------------------------------------

    def transaction_by_id(self, transaction_id: int) -> PosTransaction | None:
        return self.session.get(PosTransaction, transaction_id)

    def transaction(self, receipt: str) -> PosTransaction | None:
        return self.session.scalar(select(PosTransaction).where(PosTransaction.receipt == receipt))

    def transaction_points(self, transaction_id: int, kind: EntryKind, *, sign: int) -> int:
        """Points a transaction's entries of one kind and sign moved so far (positive)."""
        direction = LedgerEntry.points > 0 if sign > 0 else LedgerEntry.points < 0
        total = self.session.scalar(
            select(func.sum(func.abs(LedgerEntry.points))).where(
                LedgerEntry.transaction_id == transaction_id, LedgerEntry.kind == kind, direction
            )
        )
        return int(total or 0)

    def earn_lot(self, transaction_id: int) -> LedgerEntry | None:
        return self.session.scalar(
            select(LedgerEntry).where(
                LedgerEntry.transaction_id == transaction_id, LedgerEntry.kind == EntryKind.EARN
            )
        )

    def spend_in_window(self, account_id: int, *, since: datetime, until: datetime) -> Decimal:
        """Goods bought and kept (net of refunds) in the window: the spend measure."""
        values = {"account_id": account_id, "since": since, "until": until}
        return Decimal(self._core(_SPEND, values).scalar() or 0)

    def earned_in_window(self, account_id: int, *, since: datetime, until: datetime) -> Decimal:
        """Points earned (less those reversed) in the window: the points measure."""
        total = self.session.scalar(
            select(func.sum(LedgerEntry.points)).where(
                LedgerEntry.account_id == account_id,
                or_(
                    LedgerEntry.kind == EntryKind.EARN,
                    and_(
                        LedgerEntry.kind == EntryKind.REVERSE,
                        LedgerEntry.points < 0,
                        LedgerEntry.transaction_id.is_not(None),
                    ),
                ),
                LedgerEntry.created_at > since,
                LedgerEntry.created_at <= until,
            )
        )
        return Decimal(total or 0)

    # -- operations, tiers, events ---------------------------------------------------------

    def operation(self, key: str) -> LoyaltyOperation | None:
        return self.session.scalar(select(LoyaltyOperation).where(LoyaltyOperation.key == key))

    def recorded(self, key: str) -> Recorded | None:
        """The request hash and answer of the operation recorded under ``key``, if any."""
        row = self.session.execute(_RECORDED, {"key": key}).one_or_none()
        return None if row is None else Recorded(row[0], row[1])

    def tier_history(self, account_id: int) -> Sequence[TierChange]:
        return self.session.scalars(
            select(TierChange).where(TierChange.account_id == account_id).order_by(TierChange.id)
        ).all()

    def tier_counts(self) -> dict[str, int]:
        rows = self.session.execute(
            select(LoyaltyAccount.tier, func.count()).group_by(LoyaltyAccount.tier)
        )
        return {str(tier): int(n) for tier, n in rows}

    def event_exists(self, external_id: str) -> bool:
        found = self.session.scalar(
            select(literal(1)).where(Event.source == "loyalty", Event.external_id == external_id)
        )
        return found is not None

    def ledger_totals(self) -> dict[EntryKind, tuple[int, int, int]]:
        """Per kind of entry, across the program: entries, points added and points taken
        (both positive). A refund's ``reverse`` entries go both ways, so the two sums are
        kept apart."""
        points = LedgerEntry.points
        rows = self.session.execute(
            select(
                LedgerEntry.kind,
                func.count(),
                func.coalesce(func.sum(case((points > 0, points))), 0),
                func.coalesce(func.sum(case((points < 0, -points))), 0),
            ).group_by(LedgerEntry.kind)
        )
        return {EntryKind(kind): (int(n), int(added), int(taken)) for kind, n, added, taken in rows}


class CouponRepository:
    """Coupon pools, codes and their uses."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, row: Row) -> Row:
        self.session.add(row)
        self.session.flush()
        return row

    def pool(self, pool_id: int) -> CouponPool | None:
        return self.session.get(CouponPool, pool_id)

    def pool_by_name(self, name: str) -> CouponPool | None:
        return self.session.scalar(select(CouponPool).where(CouponPool.name == name))

    def pool_of_campaign(self, campaign_id: int) -> CouponPool | None:
        return self.session.scalar(select(CouponPool).where(CouponPool.campaign_id == campaign_id))

    def pools(self) -> Sequence[CouponPool]:
        return self.session.scalars(select(CouponPool).order_by(CouponPool.id)).all()

    def coupon(self, code: str) -> Coupon | None:
        return self.session.scalar(select(Coupon).where(Coupon.code == code))

    def add_codes(self, pool_id: int, codes: Sequence[str], owners: Sequence[int | None]) -> None:
        bulk_insert_columns(
            self.session,
            table_of(Coupon),
            {
                "pool_id": [pool_id] * len(codes),
                "code": list(codes),
                "customer_id": list(owners),
                "lock_version": [0] * len(codes),
                "created_at": [utcnow()] * len(codes),
            },
        )

    def lock(self, coupon_id: int) -> None:
        """The coupon's lock, taken after the account's (always in that order)."""
        self.session.execute(
            update(Coupon)
            .where(Coupon.id == coupon_id)
            .values(lock_version=Coupon.lock_version + 1)
            .execution_options(synchronize_session=False)
        )

    def uses(self, coupon_id: int) -> int:
        total = self.session.scalar(
            select(func.sum(CouponUse.uses)).where(CouponUse.coupon_id == coupon_id)
        )
        return int(total or 0)

    def uses_by(self, pool_id: int, customer_id: int) -> int:
        total = self.session.scalar(
            select(func.sum(CouponUse.uses))
            .join(Coupon, Coupon.id == CouponUse.coupon_id)
            .where(Coupon.pool_id == pool_id, CouponUse.customer_id == customer_id)
        )
        return int(total or 0)

    def use_of(self, transaction_id: int) -> CouponUse | None:
        return self.session.scalar(
            select(CouponUse)
            .where(CouponUse.transaction_id == transaction_id, CouponUse.uses > 0)
            .limit(1)
        )

    def stats(self, pool_id: int) -> tuple[int, int, int, Decimal]:
        """Codes, net redemptions, customers who redeemed, and discount given."""
        codes = self.session.scalar(
            select(func.count()).select_from(Coupon).where(Coupon.pool_id == pool_id)
        )
        used = (
            select(CouponUse.customer_id, CouponUse.uses, CouponUse.discount)
            .join(Coupon, Coupon.id == CouponUse.coupon_id)
            .where(Coupon.pool_id == pool_id)
            .subquery()
        )
        row = self.session.execute(
            select(
                func.coalesce(func.sum(used.c.uses), 0),
                func.count(func.distinct(used.c.customer_id)),
                func.coalesce(func.sum(used.c.uses * used.c.discount), 0),
            )
        ).one()
        return int(codes or 0), int(row[0]), int(row[1]), Decimal(row[2])

    def redemptions(self, campaign_id: int) -> dict[int, Decimal]:
        """Per customer, the discount the campaign's coupons gave (net of cancellations)."""
        rows = self.session.execute(
            select(CouponUse.customer_id, func.sum(CouponUse.uses * CouponUse.discount))
            .join(Coupon, Coupon.id == CouponUse.coupon_id)
            .join(CouponPool, CouponPool.id == Coupon.pool_id)
            .where(CouponPool.campaign_id == campaign_id)
            .group_by(CouponUse.customer_id)
        )
        return {int(c): Decimal(d) for c, d in rows if d}


class MiniProgramRepository:
    """Mini-programs and their members."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, row: Row) -> Row:
        self.session.add(row)
        self.session.flush()
        return row

    def get(self, program_id: int) -> MiniProgram | None:
        return self.session.get(MiniProgram, program_id)

    def by_name(self, name: str) -> MiniProgram | None:
        return self.session.scalar(select(MiniProgram).where(MiniProgram.name == name))

    def listing(self) -> Sequence[MiniProgram]:
        return self.session.scalars(select(MiniProgram).order_by(MiniProgram.id)).all()

    def join(self, program_id: int, selected: ColumnElement[bool], *, at: datetime) -> int:
        """Members whose customer the segment's predicate selects join; returns how many."""
        chosen = select(Customer.id).where(Customer.merged_into_id.is_(None), selected)
        accounts = list(
            self.session.scalars(
                select(LoyaltyAccount.id)
                .where(LoyaltyAccount.customer_id.in_(chosen))
                .order_by(LoyaltyAccount.id)
            )
        )
        if accounts:
            bulk_insert_columns(
                self.session,
                table_of(MiniProgramMember),
                {
                    "program_id": [program_id] * len(accounts),
                    "account_id": accounts,
                    "joined_at": [at] * len(accounts),
                    "progress": [Decimal("0.00")] * len(accounts),
                    "reached_at": [None] * len(accounts),
                },
            )
        return len(accounts)

    def memberships(
        self, account_id: int, *, at: datetime
    ) -> list[tuple[MiniProgram, MiniProgramMember]]:
        """The account's places in programs running at ``at``."""
        rows = self.session.execute(
            select(MiniProgram, MiniProgramMember)
            .join(MiniProgramMember, MiniProgramMember.program_id == MiniProgram.id)
            .where(
                MiniProgramMember.account_id == account_id,
                MiniProgram.starts_at <= at,
                MiniProgram.ends_at > at,
            )
            .order_by(MiniProgram.id)
        )
        return [(program, member) for program, member in rows]

    def purchases_in_window(self, account_id: int, *, since: datetime, until: datetime) -> int:
        total = self.session.scalar(
            select(func.count()).select_from(PosTransaction).where(
                PosTransaction.account_id == account_id,
                PosTransaction.status.not_in(
                    [TransactionStatus.CANCELLED, TransactionStatus.REFUNDED]
                ),
                PosTransaction.confirmed_at >= since,
                PosTransaction.confirmed_at <= until,
            )
        )  # fmt: skip
        return int(total or 0)

    def standing(self, program_id: int) -> tuple[int, int, Decimal]:
        """Members, those who reached the goal, and the mean progress."""
        row = self.session.execute(
            select(
                func.count(),
                func.count(MiniProgramMember.reached_at),
                func.coalesce(func.avg(MiniProgramMember.progress), 0),
            ).where(MiniProgramMember.program_id == program_id)
        ).one()
        return int(row[0]), int(row[1]), Decimal(row[2])
