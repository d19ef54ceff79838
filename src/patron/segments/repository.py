"""All SQL of the segments domain: the rule compiler, saved segments, builds and history.

A rule compiles to one SQL predicate over ``customers``: profile tests become column
comparisons, every other leaf becomes ``customers.id IN (subquery)`` (or ``NOT IN``), and
``all``/``any``/``not`` become ``AND``/``OR``/``NOT``. The database does the whole
evaluation, on SQLite and PostgreSQL alike; no customer row passes through Python. Each
leaf is two-valued (never SQL NULL), so ``not`` means exactly "the rest of the base".

An aggregate leaf such as "spend over the last 90 days below 100" must also select the
customers with no orders there, whose spend is zero. Whether zero passes the test is
known when the rule is compiled, so the leaf becomes either ``IN (customers whose
aggregate passes)`` or ``NOT IN (customers whose aggregate fails)``, and the orders are
grouped once either way.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    MetaData,
    Select,
    Table,
    and_,
    case,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    union,
    update,
)
from sqlalchemy.orm import Session

from patron.kit.db import UTCDateTime
from patron.kit.errors import Conflict, InvalidInput
from patron.models import (
    AnalysisRun,
    Consent,
    Customer,
    CustomerScore,
    Event,
    Identity,
    Order,
    OrderKind,
    OrderLine,
    RunStatus,
    Segment,
    SegmentBuild,
    SegmentMembership,
)
from patron.segments.schemas import (
    AllOf,
    AnyOf,
    CategoryCondition,
    Condition,
    ConsentCondition,
    EventCondition,
    IdentityCondition,
    NotOf,
    OrderCondition,
    ProfileCondition,
    ScoreCondition,
    SegmentCondition,
    parse_rule,
)

ACTIVE = Customer.merged_into_id.is_(None)
"""The base every rule selects from: profiles not merged into another."""

_PURCHASE = OrderKind.PURCHASE.value
_RETURN = OrderKind.RETURN.value
_PY_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}


class RuleCompiler:
    """Turns a rule into a SQL predicate over ``customers``, as of one moment.

    ``as_of`` bounds everything that has a time: orders and events before it, the
    consent decision in force then, the newest analysis run completed for a date up to
    it. Saved segments named by a rule are read through ``session`` and compiled in place.
    ``inside`` names the segments being compiled already (a rule saved as segment S may
    not refer to S). ``checking`` compiles a rule only to check it, so a missing analysis
    run is not an error yet.
    """

    def __init__(
        self,
        session: Session,
        *,
        as_of: datetime,
        inside: Sequence[str] = (),
        checking: bool = False,
    ) -> None:
        self.session = session
        self.as_of = as_of
        self.checking = checking
        self._run_id: int | None = None
        self._stack: list[str] = list(inside)

    @property
    def score_run(self) -> int | None:
        """The analysis run whose scores the compiled rules read (None: they read none)."""
        return self._run_id

    def predicate(self, rule: Condition, *, where: str = "rule") -> ColumnElement[bool]:
        """The rule as a boolean SQL expression on ``customers``; ``where`` names the
        rule's place in error messages."""
        match rule:
            case AllOf(conditions=conditions):
                return and_(*self._each(conditions, where=where))
            case AnyOf(conditions=conditions):
                return or_(*self._each(conditions, where=where))
            case NotOf(condition=condition):
                return not_(self.predicate(condition, where=f"{where}.condition"))
            case ProfileCondition():
                return self._profile(rule)
            case IdentityCondition():
                return self._identity(rule)
            case ConsentCondition():
                return self._consent(rule)
            case OrderCondition():
                return self._orders(rule)
            case CategoryCondition():
                return self._category(rule)
            case ScoreCondition():
                return self._score(rule, where=where)
            case EventCondition():
                return self._events(rule)
            case SegmentCondition():
                return self._segment(rule, where=where)
        raise InvalidInput(f"{where}: unknown condition {rule!r}")  # pragma: no cover

    def _each(self, conditions: Sequence[Condition], *, where: str) -> list[ColumnElement[bool]]:
        return [
            self.predicate(c, where=f"{where}.conditions.{i}") for i, c in enumerate(conditions)
        ]

    # -- leaves ------------------------------------------------------------------------------

    def _profile(self, rule: ProfileCondition) -> ColumnElement[bool]:
        column: Any
        if rule.field.startswith("attributes."):
            element = Customer.attributes[rule.field.removeprefix("attributes.")]
            sample = rule.value[0] if isinstance(rule.value, list) else rule.value
            if isinstance(sample, bool):
                column = element.as_boolean()
            elif isinstance(sample, int | float):
                column = element.as_float()
            else:
                column = element.as_string()
        else:
            column = getattr(Customer, rule.field)
        return compare(column, rule.op, rule.value)

    def _identity(self, rule: IdentityCondition) -> ColumnElement[bool]:
        found = select(Identity.customer_id).where(Identity.kind == rule.identity)
        if rule.namespace is not None:
            found = found.where(Identity.namespace == rule.namespace)
        if rule.verified is not None:
            found = found.where(Identity.verified.is_(rule.verified))
        return Customer.id.in_(found) if rule.present else Customer.id.not_in(found)

    def _consent(self, rule: ConsentCondition) -> ColumnElement[bool]:
        decisions = and_(
            Consent.channel == rule.channel,
            Consent.purpose == rule.purpose,
            Consent.status != "pending",
            Consent.decided_at <= self.as_of,
        )
        if rule.status == "none":
            return Customer.id.not_in(select(Consent.customer_id).where(decisions))
        ranked = (
            select(
                Consent.customer_id,
                Consent.status,
                func.row_number()
                .over(
                    partition_by=Consent.customer_id,
                    order_by=(Consent.decided_at.desc(), Consent.id.desc()),
                )
                .label("rank"),
            )
            .where(decisions)
            .subquery()
        )
        in_force = select(ranked.c.customer_id).where(
            ranked.c.rank == 1, ranked.c.status == rule.status
        )
        return Customer.id.in_(in_force)

    def _window(
        self, column: Any, rule: OrderCondition | CategoryCondition | EventCondition
    ) -> Any:
        bounds = [column < min(self.as_of, rule.until or self.as_of)]
        if rule.days is not None:
            bounds.append(column >= self.as_of - timedelta(days=rule.days))
        if rule.since is not None:
            bounds.append(column >= rule.since)
        return and_(*bounds)

    def _orders(self, rule: OrderCondition) -> ColumnElement[bool]:
        scope = and_(Order.customer_id.is_not(None), self._window(Order.placed_at, rule))
        purchase = Order.kind == _PURCHASE
        if rule.categories:
            rows = select(Order.customer_id).join(OrderLine, OrderLine.order_id == Order.id)
            scope = and_(scope, OrderLine.category.in_(rule.categories))
            money: Any = OrderLine.amount
            purchases: Any = func.count(func.distinct(case((purchase, Order.id))))
            returns: Any = func.count(func.distinct(case((Order.kind == _RETURN, Order.id))))
        else:
            rows = select(Order.customer_id)
            money = Order.total
            purchases = func.sum(case((purchase, 1), else_=0))
            returns = func.sum(case((Order.kind == _RETURN, 1), else_=0))
        rows = rows.where(scope).group_by(Order.customer_id)
        if rule.measure in ("spend", "orders", "returns"):
            measure = {"spend": func.sum(money), "orders": purchases, "returns": returns}
            return _aggregate_test(rows, measure[rule.measure], rule.op, rule.value, zero=0)
        bought = select(Order.customer_id).where(scope, purchase)
        if rule.categories:
            bought = bought.join(OrderLine, OrderLine.order_id == Order.id)
        if rule.op in ("is_null", "not_null"):
            # no purchase in the window is what makes the measure null
            has = Customer.id.in_(bought)
            return not_(has) if rule.op == "is_null" else has
        if rule.measure == "average_order":
            mean = func.sum(case((purchase, money))) / func.nullif(purchases, 0)
            return Customer.id.in_(rows.having(compare(mean, rule.op, rule.value)))
        last = rule.measure == "days_since_last"
        moment = func.max(Order.placed_at) if last else func.min(Order.placed_at)
        dated = bought.group_by(Order.customer_id).having(self._days_since(moment, rule))
        return Customer.id.in_(dated)

    def _days_since(self, moment: Any, rule: OrderCondition) -> ColumnElement[bool]:
        """Whole days since ``moment`` compared with the rule, written as bounds on the
        timestamp itself (``days >= n`` is ``moment <= as_of - n days``), which reads the
        same on every backend and can use an index."""

        def at_least(days: int) -> ColumnElement[bool]:
            bound: ColumnElement[bool] = moment <= self.as_of - timedelta(days=days)
            return bound

        def at_most(days: int) -> ColumnElement[bool]:
            bound: ColumnElement[bool] = moment > self.as_of - timedelta(days=days + 1)
            return bound

        value = rule.value
        tests: dict[str, Callable[[], ColumnElement[bool]]] = {
            "ge": lambda: at_least(value),
            "gt": lambda: at_least(value + 1),
            "le": lambda: at_most(value),
            "lt": lambda: at_most(value - 1),
            "eq": lambda: and_(at_least(value), at_most(value)),
            "ne": lambda: or_(at_most(value - 1), at_least(value + 1)),
            "between": lambda: and_(at_least(value[0]), at_most(value[1])),
        }
        return tests[rule.op]()

    def _category(self, rule: CategoryCondition) -> ColumnElement[bool]:
        bought = (
            select(Order.customer_id)
            .join(OrderLine, OrderLine.order_id == Order.id)
            .where(
                Order.customer_id.is_not(None),
                Order.kind == _PURCHASE,
                OrderLine.category.in_(rule.categories),
                self._window(Order.placed_at, rule),
            )
        )
        return Customer.id.in_(bought) if rule.bought else Customer.id.not_in(bought)

    def _score(self, rule: ScoreCondition, *, where: str) -> ColumnElement[bool]:
        run = self._score_run(where)
        column = getattr(CustomerScore, rule.field)
        scored = select(CustomerScore.customer_id).where(
            CustomerScore.run_id == run, compare(column, rule.op, rule.value)
        )
        return Customer.id.in_(scored)

    def _score_run(self, where: str) -> int:
        if self._run_id is None:
            found = self.session.scalar(
                select(AnalysisRun.id)
                .where(AnalysisRun.status == RunStatus.COMPLETED, AnalysisRun.as_of <= self.as_of)
                .order_by(AnalysisRun.as_of.desc(), AnalysisRun.id.desc())
                .limit(1)
            )
            if found is None and self.checking:
                return 0
            if found is None:
                raise Conflict(
                    f"{where} tests an analytics score, but no analysis has completed for a "
                    f"date up to {self.as_of:%Y-%m-%d %H:%M} UTC: run `patron analyze` first"
                )
            self._run_id = found
        return self._run_id

    def _events(self, rule: EventCondition) -> ColumnElement[bool]:
        scope = [
            Event.customer_id.is_not(None),
            Event.type == rule.type,
            self._window(Event.occurred_at, rule),
        ]
        for key, value in rule.properties.items():
            element = Event.properties[key]
            typed: Any
            if isinstance(value, bool):
                typed = element.as_boolean()
            elif isinstance(value, int):
                typed = element.as_integer()
            elif isinstance(value, float):
                typed = element.as_float()
            else:
                typed = element.as_string()
            scope.append(typed == value)
        rows = select(Event.customer_id).where(*scope).group_by(Event.customer_id)
        return _aggregate_test(rows, func.count(), rule.op, rule.value, zero=0)

    def _segment(self, rule: SegmentCondition, *, where: str) -> ColumnElement[bool]:
        if rule.segment in self._stack:
            chain = " -> ".join([*self._stack, rule.segment])
            raise InvalidInput(f"{where}: segments refer to each other in a circle: {chain}")
        segment = self.session.scalar(select(Segment).where(Segment.name == rule.segment))
        if segment is None or segment.archived:
            raise InvalidInput(f"{where}: no segment named {rule.segment!r}")
        self._stack.append(rule.segment)
        try:
            inner = self.predicate(
                parse_rule(segment.rule, where=f"segment {rule.segment!r}"),
                where=f"segment {rule.segment!r}",
            )
        finally:
            self._stack.pop()
        return inner if rule.member else not_(inner)


def compare(column: Any, op: str, value: Any) -> ColumnElement[bool]:
    """``column op value`` that is never SQL NULL: a missing value fails every positive
    test and passes ``ne`` and ``not_in`` ("not in Moscow" includes an unknown city)."""
    known: ColumnElement[bool] = column.is_not(None)
    match op:
        case "is_null":
            return not_(known)
        case "not_null":
            return known
        case "ne":
            return or_(column.is_(None), column != value)
        case "not_in":
            return or_(column.is_(None), column.not_in(value))
        case "in":
            return and_(known, column.in_(value))
        case "between":
            return and_(known, column.between(value[0], value[1]))
        case "contains":
            return and_(known, func.lower(column).contains(value.lower(), autoescape=True))
        case "starts_with":
            return and_(known, func.lower(column).startswith(value.lower(), autoescape=True))
    test: Any = _PY_OPS[op](column, value)
    return and_(known, test)


def passes(op: str, value: Any, measured: Any) -> bool:
    """Whether a measured value passes ``op value``; used on the zero of an aggregate
    when compiling, never on customers."""
    match op:
        case "is_null":
            return measured is None
        case "not_null":
            return measured is not None
        case "in":
            return bool(measured in value)
        case "not_in":
            return bool(measured not in value)
        case "between":
            return bool(value[0] <= measured <= value[1])
        case "contains" | "starts_with":
            return False
    return _PY_OPS[op](measured, value)


def _aggregate_test(
    rows: Select[Any], measure: Any, op: str, value: Any, *, zero: int
) -> ColumnElement[bool]:
    """Test an aggregate of the customers in ``rows`` (grouped by customer) and count the
    customers absent from ``rows`` as having ``zero``."""
    test = compare(measure, op, value)
    if passes(op, value, Decimal(zero)):
        return Customer.id.not_in(rows.having(not_(test)))
    return Customer.id.in_(rows.having(test))


_MATCHES = Table(
    "segment_matches",
    MetaData(),
    Column("customer_id", BigInteger, primary_key=True),
    prefixes=["TEMPORARY"],
)
"""The customers a rule selects, for one build; private to the connection."""


class SegmentRepository:
    """Saved segments, their builds and membership history, and rule evaluation."""

    def __init__(self, session: Session) -> None:
        self.session = session

    # -- saved segments --------------------------------------------------------------------

    def add(self, segment: Segment) -> Segment:
        self.session.add(segment)
        self.session.flush()
        return segment

    def get(self, segment_id: int) -> Segment | None:
        return self.session.get(Segment, segment_id)

    def by_name(self, name: str) -> Segment | None:
        return self.session.scalar(select(Segment).where(Segment.name == name))

    def listing(self, *, limit: int, offset: int) -> Sequence[Segment]:
        return self.session.scalars(
            select(Segment)
            .where(Segment.archived.is_(False))
            .order_by(Segment.name)
            .limit(limit)
            .offset(offset)
        ).all()

    def latest_build(self, segment_id: int) -> SegmentBuild | None:
        return self.session.scalar(
            select(SegmentBuild)
            .where(SegmentBuild.segment_id == segment_id)
            .order_by(SegmentBuild.built_at.desc(), SegmentBuild.id.desc())
            .limit(1)
        )

    def builds(self, segment_id: int, *, limit: int) -> Sequence[SegmentBuild]:
        return self.session.scalars(
            select(SegmentBuild)
            .where(SegmentBuild.segment_id == segment_id)
            .order_by(SegmentBuild.built_at.desc(), SegmentBuild.id.desc())
            .limit(limit)
        ).all()

    # -- evaluation ------------------------------------------------------------------------

    def compiler(
        self, *, as_of: datetime, inside: Sequence[str] = (), checking: bool = False
    ) -> RuleCompiler:
        return RuleCompiler(self.session, as_of=as_of, inside=inside, checking=checking)

    def count(self, predicate: ColumnElement[bool]) -> int:
        """How many active customers the predicate selects."""
        query = select(func.count()).select_from(Customer).where(ACTIVE, predicate)
        return int(self.session.scalar(query) or 0)

    def ids(self, predicate: ColumnElement[bool], *, limit: int, offset: int) -> list[int]:
        """The selected customers' ids in order, one page."""
        query = (
            select(Customer.id)
            .where(ACTIVE, predicate)
            .order_by(Customer.id)
            .limit(limit)
            .offset(offset)
        )
        return list(self.session.scalars(query))

    def ids_among(self, predicate: ColumnElement[bool], candidates: Sequence[int]) -> set[int]:
        """Which of ``candidates`` the predicate selects."""
        query = select(Customer.id).where(ACTIVE, Customer.id.in_(candidates), predicate)
        return set(self.session.scalars(query))

    # -- materialisation -------------------------------------------------------------------

    def materialise(
        self, segment: Segment, predicate: ColumnElement[bool], *, build: SegmentBuild
    ) -> tuple[int, int, int]:
        """Close the stays of customers who no longer match, open stays for those who newly
        match, all in SQL; returns (members, entered, left)."""
        self.session.add(build)
        self.session.flush()
        open_stay = and_(
            SegmentMembership.segment_id == segment.id, SegmentMembership.left_at.is_(None)
        )
        # the rule is evaluated once, into a temporary table of the matching ids, and
        # both sides of the difference are then read from there rather than recomputed
        connection = self.session.connection()
        # a failed build leaves the table only until the rollback that must follow
        _MATCHES.create(connection, checkfirst=True)
        connection.execute(_MATCHES.delete())
        connection.execute(
            insert(_MATCHES).from_select(
                ["customer_id"], select(Customer.id).where(ACTIVE, predicate)
            )
        )
        matching = select(_MATCHES.c.customer_id)
        self.session.execute(
            update(SegmentMembership)
            .where(open_stay, SegmentMembership.customer_id.not_in(matching))
            .values(left_at=build.built_at, left_build_id=build.id)
            .execution_options(synchronize_session=False)
        )
        current = select(SegmentMembership.customer_id).where(open_stay)
        self.session.execute(
            insert(SegmentMembership).from_select(
                ["segment_id", "customer_id", "entered_at", "entered_build_id"],
                select(
                    literal(segment.id),
                    _MATCHES.c.customer_id,
                    literal(build.built_at, UTCDateTime()),
                    literal(build.id),
                ).where(_MATCHES.c.customer_id.not_in(current)),
            )
        )
        _MATCHES.drop(connection)

        def stays(*where: ColumnElement[bool]) -> int:
            # counted, not taken from rowcount, which drivers do not all report for
            # INSERT ... SELECT
            query = select(func.count()).select_from(SegmentMembership).where(*where)
            return int(self.session.scalar(query) or 0)

        return (
            stays(open_stay),
            stays(SegmentMembership.entered_build_id == build.id),
            stays(SegmentMembership.left_build_id == build.id),
        )

    def members(
        self, segment_id: int, *, on: datetime | None, limit: int, offset: int
    ) -> list[tuple[int, datetime]]:
        """Members now (``on`` None) or on a date, with the time each entered."""
        query = (
            select(SegmentMembership.customer_id, SegmentMembership.entered_at)
            .where(self._member_on(segment_id, on))
            .order_by(SegmentMembership.customer_id)
            .limit(limit)
            .offset(offset)
        )
        return [(int(c), e) for c, e in self.session.execute(query)]

    def member_count(self, segment_id: int, *, on: datetime | None) -> int:
        query = (
            select(func.count())
            .select_from(SegmentMembership)
            .where(self._member_on(segment_id, on))
        )
        return int(self.session.scalar(query) or 0)

    def _member_on(self, segment_id: int, on: datetime | None) -> ColumnElement[bool]:
        if on is None:
            return and_(
                SegmentMembership.segment_id == segment_id, SegmentMembership.left_at.is_(None)
            )
        return and_(
            SegmentMembership.segment_id == segment_id,
            SegmentMembership.entered_at <= on,
            or_(SegmentMembership.left_at.is_(None), SegmentMembership.left_at > on),
        )

    def changes(
        self, segment_id: int, *, since: datetime, until: datetime, limit: int, offset: int
    ) -> list[tuple[int, str, datetime]]:
        """Entries and exits in ``[since, until)``, in time order."""
        stays = SegmentMembership
        entered = select(
            stays.customer_id.label("customer_id"),
            literal("entered").label("change"),
            stays.entered_at.label("at"),
        ).where(stays.segment_id == segment_id, stays.entered_at >= since, stays.entered_at < until)
        left = select(
            stays.customer_id.label("customer_id"),
            literal("left").label("change"),
            stays.left_at.label("at"),
        ).where(stays.segment_id == segment_id, stays.left_at >= since, stays.left_at < until)
        both = union(entered, left).subquery()
        query = (
            select(both.c.customer_id, both.c.change, both.c.at)
            .order_by(both.c.at, both.c.customer_id, both.c.change)
            .limit(limit)
            .offset(offset)
        )
        return [(int(c), str(k), a) for c, k, a in self.session.execute(query)]

    # -- movement ----------------------------------------------------------------------------

    def run_on(self, moment: datetime) -> int | None:
        """The newest completed analysis run for a date up to ``moment``."""
        return self.session.scalar(
            select(AnalysisRun.id)
            .where(AnalysisRun.status == RunStatus.COMPLETED, AnalysisRun.as_of <= moment)
            .order_by(AnalysisRun.as_of.desc(), AnalysisRun.id.desc())
            .limit(1)
        )

    def score_moves(
        self, field: str, *, before_run: int, after_run: int, within: Select[Any] | None
    ) -> list[tuple[Any, Any, int]]:
        """Customers by (score in the earlier run, score in the later run)."""
        first = select(CustomerScore.customer_id, getattr(CustomerScore, field).label("v")).where(
            CustomerScore.run_id == before_run
        )
        second = select(CustomerScore.customer_id, getattr(CustomerScore, field).label("v")).where(
            CustomerScore.run_id == after_run
        )
        return self._moves(first.subquery(), second.subquery(), within)

    def segment_moves(
        self, segments: Sequence[Segment], *, before: datetime, after: datetime,
        within: Select[Any] | None,
    ) -> list[tuple[Any, Any, int]]:  # fmt: skip
        """Customers by (first listed segment they were in on ``before``, on ``after``)."""

        def labelled(on: datetime) -> Any:
            stays = SegmentMembership
            order = case(
                *((stays.segment_id == s.id, literal(i)) for i, s in enumerate(segments)),
            )
            ranked = select(
                stays.customer_id,
                order.label("position"),
                case(*((stays.segment_id == s.id, literal(s.name)) for s in segments)).label("v"),
                func.row_number()
                .over(partition_by=stays.customer_id, order_by=order)
                .label("rank"),
            ).where(
                stays.segment_id.in_([s.id for s in segments]),
                stays.entered_at <= on,
                or_(stays.left_at.is_(None), stays.left_at > on),
            )
            inner = ranked.subquery()
            return select(inner.c.customer_id, inner.c.v).where(inner.c.rank == 1).subquery()

        return self._moves(labelled(before), labelled(after), within)

    def _moves(
        self, first: Any, second: Any, within: Select[Any] | None
    ) -> list[tuple[Any, Any, int]]:
        people = union(select(first.c.customer_id), select(second.c.customer_id)).subquery()
        query = (
            select(first.c.v, second.c.v, func.count())
            .select_from(people)
            .outerjoin(first, first.c.customer_id == people.c.customer_id)
            .outerjoin(second, second.c.customer_id == people.c.customer_id)
        )
        if within is not None:
            query = query.where(people.c.customer_id.in_(within))
        query = query.group_by(first.c.v, second.c.v)
        return [(a, b, int(n)) for a, b, n in self.session.execute(query)]

    def member_ids_on(self, segment_id: int, on: datetime) -> Select[Any]:
        """A subquery of the members on a date, for restricting other queries."""
        return select(SegmentMembership.customer_id).where(self._member_on(segment_id, on))

    # -- export ------------------------------------------------------------------------------

    def export_rows(
        self, predicate: ColumnElement[bool], *, batch: int = 10_000
    ) -> Iterator[tuple[Any, ...]]:
        """Selected customers with names, city and a primary email and phone (the first
        by value), streamed in batches."""

        def contact(kind: str) -> Any:
            return (
                select(func.min(Identity.value))
                .where(Identity.customer_id == Customer.id, Identity.kind == kind)
                .scalar_subquery()
            )

        query = (
            select(
                Customer.id,
                Customer.first_name,
                Customer.last_name,
                Customer.city,
                contact("email"),
                contact("phone"),
            )
            .where(ACTIVE, predicate)
            .order_by(Customer.id)
            .execution_options(yield_per=batch)
        )
        for row in self.session.execute(query):
            yield tuple(row)
