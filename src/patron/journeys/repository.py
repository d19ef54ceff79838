"""SQL of the trigger runner and journeys. The per-pass queries are bounded: by a cursor on
a growing table, by a batch of customers, or by the due index, so no pass rescans the base.
A date trigger reads the day's anniversaries once a day."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, exists, extract, func, select, update
from sqlalchemy.orm import Session, aliased

from patron.kit.clock import utcnow
from patron.kit.db import insert_objects, one_of
from patron.models import (
    AnalysisRun,
    Campaign,
    CampaignRecipient,
    CampaignStatus,
    Customer,
    CustomerScore,
    EntryStatus,
    Event,
    Identity,
    JourneyEntry,
    JourneyStep,
    Message,
    MessageStatus,
    Order,
    OrderKind,
    RunStatus,
    SegmentBuild,
    SegmentMembership,
    TriggerCursor,
)

_EVENT_FACT = (Event.id, Event.customer_id, Event.type, Event.occurred_at, Event.properties)
_ORDER_FACT = (Order.id, Order.customer_id, Order.kind, Order.placed_at, Order.total)
"""What the runner reads of an event or an order to make a fact of it."""


class JourneyRepository:
    """Triggers and journeys in one session."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._dialect = session.get_bind().dialect

    # -- triggered campaigns ---------------------------------------------------------------

    def triggered(
        self, *, statuses: Sequence[CampaignStatus], lock: bool = False
    ) -> list[Campaign]:
        """Triggered campaigns in these states (there are few: this is not a scan of
        customers). ``lock`` takes their rows for this transaction, skipping those another
        runner holds, so two runners never evaluate the same campaign's timed trigger."""
        query = select(Campaign).where(Campaign.status.in_(statuses)).order_by(Campaign.id)
        if lock:
            query = query.with_for_update(skip_locked=True)
        return [c for c in self.session.scalars(query) if c.trigger]

    # -- cursors over growing tables -------------------------------------------------------

    def cursor(self, name: str) -> TriggerCursor:
        """The cursor, locked for this transaction (two runners never read the same
        rows); made at the table's current end the first time, so history is not replayed."""
        found = self.session.scalar(
            select(TriggerCursor).where(TriggerCursor.name == name).with_for_update()
        )
        if found is None:
            table = {"events": Event.id, "orders": Order.id}[name]
            found = TriggerCursor(
                name=name, position=self.session.scalar(select(func.max(table))) or 0,
                updated_at=utcnow(),
            )  # fmt: skip
            self.session.add(found)
            self.session.flush()
        return found

    def end_of(self, name: str) -> int:
        """The newest id of the cursor's table: where a campaign launched now starts reading."""
        table = {"events": Event.id, "orders": Order.id}[name]
        return int(self.session.scalar(select(func.max(table))) or 0)

    def events_after(self, position: int, *, limit: int) -> Sequence[Any]:
        """The next batch of events past the cursor, in id order: the runner's facts."""
        return self.session.execute(
            select(*_EVENT_FACT).where(Event.id > position).order_by(Event.id).limit(limit)
        ).all()

    def events_by_ids(self, ids: Sequence[int]) -> Sequence[Any]:
        """Events of these ids that are there now (late commits of earlier gaps)."""
        return self.session.execute(
            select(*_EVENT_FACT).where(Event.id.in_(ids)).order_by(Event.id)
        ).all()

    def orders_by_ids(self, ids: Sequence[int]) -> Sequence[Any]:
        """Orders of these ids that are there now (late commits of earlier gaps)."""
        return self.session.execute(
            select(*_ORDER_FACT).where(Order.id.in_(ids)).order_by(Order.id)
        ).all()

    def purchases_after(self, position: int, *, limit: int) -> Sequence[Any]:
        """Orders after the cursor (returns too, so the cursor passes them)."""
        return self.session.execute(
            select(*_ORDER_FACT).where(Order.id > position).order_by(Order.id).limit(limit)
        ).all()

    def first_purchases(self, customers: Sequence[int]) -> dict[int, datetime]:
        """Each customer's first purchase time."""
        rows = self.session.execute(
            select(Order.customer_id, func.min(Order.placed_at))
            .where(Order.customer_id.in_(customers), Order.kind == OrderKind.PURCHASE)
            .group_by(Order.customer_id)
        )
        return {int(c): t for c, t in rows if c is not None}

    # -- dates, segments, scores -----------------------------------------------------------

    def anniversaries(self, field: str, day: date) -> list[int]:
        """Active customers whose date ``field`` falls on ``day``'s month and day (29
        February counts on 28 February in other years)."""
        days = [day.day]
        if day.month == 2 and day.day == 28 and not _leap(day.year):
            days.append(29)
        if field == "birth_date":
            condition: Any = and_(
                extract("month", Customer.birth_date) == day.month,
                extract("day", Customer.birth_date).in_(days),
            )
        else:
            text = Customer.attributes[field].as_string()
            condition = func.substr(text, 6, 5).in_([f"{day.month:02d}-{d:02d}" for d in days])
        return [
            int(c)
            for c in self.session.scalars(
                select(Customer.id).where(condition, Customer.merged_into_id.is_(None))
            )
        ]

    def builds_after(self, segment_id: int, position: int) -> list[int]:
        """The segment's builds after the cursor, oldest first: each may move customers."""
        return [
            int(b)
            for b in self.session.scalars(
                select(SegmentBuild.id)
                .where(SegmentBuild.segment_id == segment_id, SegmentBuild.id > position)
                .order_by(SegmentBuild.id)
            )
        ]

    def segment_moves(self, segment_id: int, build_id: int, *, on: str) -> list[int]:
        """Who entered (or left) the segment at this build."""
        column = (
            SegmentMembership.entered_build_id if on == "enter" else SegmentMembership.left_build_id
        )
        return [
            int(c)
            for c in self.session.scalars(
                select(SegmentMembership.customer_id).where(
                    SegmentMembership.segment_id == segment_id, column == build_id
                )
            )
        ]

    def members(self, segment_id: int, customers: Sequence[int]) -> set[int]:
        """Which of these customers are in the segment at its latest build."""
        rows = self.session.scalars(
            select(SegmentMembership.customer_id).where(
                SegmentMembership.segment_id == segment_id,
                SegmentMembership.customer_id.in_(customers),
                SegmentMembership.left_at.is_(None),
            )
        )
        return {int(c) for c in rows}

    def runs_after(self, position: int) -> list[int]:
        """Completed analysis runs after the cursor, oldest first: each may cross a score."""
        return [
            int(r)
            for r in self.session.scalars(
                select(AnalysisRun.id)
                .where(AnalysisRun.id > position, AnalysisRun.status == RunStatus.COMPLETED)
                .order_by(AnalysisRun.id)
            )
        ]

    def previous_run(self, run_id: int) -> int | None:
        """The completed run just before this one by as-of date, to tell a crossing from a stay."""
        run = self.session.get(AnalysisRun, run_id)
        if run is None:
            return None
        return self.session.scalar(
            select(AnalysisRun.id)
            .where(
                AnalysisRun.status == RunStatus.COMPLETED,
                AnalysisRun.id != run_id,
                AnalysisRun.as_of <= run.as_of,
            )
            .order_by(AnalysisRun.as_of.desc(), AnalysisRun.id.desc())
            .limit(1)
        )

    def score_crossings(
        self, run_id: int, previous: int | None, *, stage: str | None, p_alive_below: float | None
    ) -> list[int]:
        """Customers of the run at the stage (or under the P(alive) threshold) who were not
        so at the previous run."""
        now, before = CustomerScore, aliased(CustomerScore)
        if stage is not None:
            hit, was = now.lifecycle_stage == stage, before.lifecycle_stage == stage
        else:
            hit, was = now.p_alive < p_alive_below, before.p_alive < p_alive_below
        query = select(now.customer_id).where(now.run_id == run_id, hit)
        if previous is not None:
            query = query.where(
                ~exists().where(
                    before.run_id == previous, before.customer_id == now.customer_id, was
                )
            )
        return [int(c) for c in self.session.scalars(query)]

    # -- entries ---------------------------------------------------------------------------

    def last_entries(self, campaign_id: int, customers: Sequence[int]) -> dict[int, datetime]:
        """When each of these customers last entered the campaign, for its re-entry rule."""
        rows = self.session.execute(
            select(JourneyEntry.customer_id, func.max(JourneyEntry.entered_at))
            .where(
                JourneyEntry.campaign_id == campaign_id,
                one_of(JourneyEntry.customer_id, customers, self._dialect),
            )
            .group_by(JourneyEntry.customer_id)
        )
        return {int(c): t for c, t in rows}

    def known_sources(self, campaign_id: int, refs: Sequence[str]) -> set[str]:
        """Which of these facts fired an entry into the campaign already, so none fires twice."""
        rows = self.session.scalars(
            select(JourneyEntry.source_ref).where(
                JourneyEntry.campaign_id == campaign_id,
                one_of(JourneyEntry.source_ref, refs, self._dialect),
            )
        )
        return set(rows)

    def active_customers(self, customers: Sequence[int]) -> set[int]:
        """Customers (of these) who are not merged away: only they can enter."""
        rows = self.session.scalars(
            select(Customer.id).where(
                one_of(Customer.id, customers, self._dialect),
                Customer.merged_into_id.is_(None),
            )
        )
        return {int(c) for c in rows}

    def recipients(self, campaign_id: int, customers: Sequence[int]) -> set[int]:
        """Which of these customers have a recipient row in the campaign, so each gets only one."""
        rows = self.session.scalars(
            select(CampaignRecipient.customer_id).where(
                CampaignRecipient.campaign_id == campaign_id,
                one_of(CampaignRecipient.customer_id, customers, self._dialect),
            )
        )
        return {int(c) for c in rows}

    def recent_messages(
        self, customers: Sequence[int], *, since: datetime
    ) -> dict[int, dict[str, int]]:
        """Per customer and channel, the marketing messages made for them since ``since``
        that are on their way or sent (a skipped or failed one reached no one, a service
        message is not marketing): what the frequency cap counts."""
        rows = self.session.execute(
            select(Message.customer_id, Message.channel, func.count())
            .where(
                one_of(Message.customer_id, customers, self._dialect),
                Message.created_at >= since,
                Message.capped.is_(True),
                Message.status.not_in([MessageStatus.SKIPPED, MessageStatus.FAILED]),
            )
            .group_by(Message.customer_id, Message.channel)
        )
        found: dict[int, dict[str, int]] = {}
        for customer, channel, count in rows:
            found.setdefault(int(customer), {})[str(channel)] = int(count)
        return found

    def add(self, row: Any) -> None:
        """Stage a new row (recipient, entry, step log or message) for the caller's flush."""
        self.session.add(row)

    def insert_new(self, rows: Sequence[Any], *, with_ids: bool = False) -> None:
        """Write new rows of one kind at once, outside the unit of work (see
        :func:`insert_objects`); with ``with_ids`` each row gets its id."""
        insert_objects(self.session, rows, with_ids=with_ids)

    def listening(self, customers: Sequence[int]) -> Sequence[JourneyEntry]:
        """Active entries of these customers (a signal may move them)."""
        return self.session.scalars(
            select(JourneyEntry).where(
                JourneyEntry.customer_id.in_(customers),
                JourneyEntry.status == EntryStatus.ACTIVE,
            )
        ).all()

    def due(self, *, now: datetime, limit: int) -> Sequence[JourneyEntry]:
        """Active entries whose time has come, oldest first, locked so that concurrent
        runners take different ones (``SKIP LOCKED`` on PostgreSQL; SQLite has one
        writer)."""
        # a paused campaign's entries stay where they are and do not crowd out the others
        return self.session.scalars(
            select(JourneyEntry)
            .join(Campaign, Campaign.id == JourneyEntry.campaign_id)
            .where(
                JourneyEntry.status == EntryStatus.ACTIVE,
                JourneyEntry.wake_at <= now,
                Campaign.status.in_([CampaignStatus.RUNNING, CampaignStatus.CANCELLED]),
            )
            .order_by(JourneyEntry.wake_at, JourneyEntry.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=JourneyEntry)
        ).all()

    def end_entries_of_cancelled(self, *, now: datetime) -> None:
        """Close every active entry of a cancelled campaign, so none of them sends again."""
        cancelled = select(Campaign.id).where(Campaign.status == CampaignStatus.CANCELLED)
        self.session.execute(
            update(JourneyEntry)
            .where(
                JourneyEntry.status == EntryStatus.ACTIVE,
                JourneyEntry.campaign_id.in_(cancelled),
            )
            .values(
                status=EntryStatus.EXITED,
                outcome="campaign cancelled",
                ended_at=now,
                step=None,
                wake_at=None,
                waiting_for=None,
            )
        )

    def end_endless_waits(self, campaign_id: int, *, now: datetime) -> None:
        """Close the ended campaign's entries that wait with no timeout: nothing could wake them."""
        self.session.execute(
            update(JourneyEntry)
            .where(
                JourneyEntry.campaign_id == campaign_id,
                JourneyEntry.status == EntryStatus.ACTIVE,
                JourneyEntry.wake_at.is_(None),
            )
            .values(
                status=EntryStatus.EXITED,
                outcome="campaign ended while waiting",
                ended_at=now,
                step=None,
                waiting_for=None,
            )
        )

    def done_steps(self, entry_ids: Sequence[int]) -> dict[int, dict[str, JourneyStep]]:
        """Each entry's logged steps by name, read in bulk so a batch walks without a query each."""
        found: dict[int, dict[str, JourneyStep]] = {}
        for row in self.session.scalars(
            select(JourneyStep).where(one_of(JourneyStep.entry_id, entry_ids, self._dialect))
        ):
            found.setdefault(row.entry_id, {})[row.step] = row
        return found

    def message(self, message_id: int) -> Message | None:
        """One message, for conditions on whether a step's send was opened or delivered."""
        return self.session.get(Message, message_id)

    def happened(
        self, customer_id: int, event_type: str, *, since: datetime, besides: str = ""
    ) -> bool:
        """Whether the customer had an event of this type (``purchase`` reads orders)
        at or after ``since``, other than the row ``besides`` names (``order:N``,
        ``event:N``: the fact that fired the entry)."""
        kind, _, number = besides.partition(":")
        if event_type in ("purchase", "first_purchase"):
            query: Any = select(Order.id).where(
                Order.customer_id == customer_id, Order.kind == OrderKind.PURCHASE,
                Order.placed_at >= since,
            )  # fmt: skip
            if kind == "order":
                query = query.where(Order.id != int(number))
        else:
            query = select(Event.id).where(
                Event.customer_id == customer_id, Event.type == event_type,
                Event.occurred_at >= since,
            )  # fmt: skip
            if kind == "event":
                query = query.where(Event.id != int(number))
        return self.session.scalar(query.limit(1)) is not None

    def identity_kinds(self, customer_id: int) -> set[str]:
        """The kinds of identity the customer has, for a ``has`` condition."""
        rows = self.session.scalars(
            select(Identity.kind).where(Identity.customer_id == customer_id).distinct()
        )
        return {str(getattr(k, "value", k)) for k in rows}

    def customer(self, customer_id: int) -> Customer | None:
        """One customer, for profile conditions and update steps."""
        return self.session.get(Customer, customer_id)

    def score(self, customer_id: int, *, run_id: int) -> CustomerScore | None:
        """The customer's score in one analysis run, for conditions."""
        return self.session.scalar(
            select(CustomerScore).where(
                CustomerScore.run_id == run_id, CustomerScore.customer_id == customer_id
            )
        )

    # -- reading back ----------------------------------------------------------------------

    def sent_at_step(self, campaign_id: int, step: str) -> Sequence[tuple[int, int, datetime]]:
        """``(message id, customer id, created at)`` of the campaign's sent messages of this
        single-channel send step (a cascade's keys carry the channel's index too)."""
        rows = self.session.execute(
            select(Message.id, Message.customer_id, Message.created_at).where(
                Message.campaign_id == campaign_id,
                Message.step_key.endswith(f":{step}", autoescape=True),
                Message.status == MessageStatus.SENT,
            )
        )
        return [(int(m), int(c), at) for m, c, at in rows]

    def step_counts(self, campaign_id: int) -> dict[str, dict[str, int]]:
        """Per step, how many entries carried it out, by outcome's first word."""
        rows = self.session.execute(
            select(JourneyStep.step, JourneyStep.outcome, func.count())
            .where(JourneyStep.campaign_id == campaign_id)
            .group_by(JourneyStep.step, JourneyStep.outcome)
        )
        found: dict[str, dict[str, int]] = {}
        for step, outcome, count in rows:
            bucket = found.setdefault(step, {})
            key = outcome.split(":")[0]
            bucket[key] = bucket.get(key, 0) + int(count)
        return found

    def entry_counts(self, campaign_id: int) -> dict[str, int]:
        """How many of the campaign's entries are in each status, for its report."""
        rows = self.session.execute(
            select(JourneyEntry.status, func.count())
            .where(JourneyEntry.campaign_id == campaign_id)
            .group_by(JourneyEntry.status)
        )
        return {str(getattr(s, "value", s)): int(n) for s, n in rows}

    def waiting_at(self, campaign_id: int) -> dict[str, int]:
        """How many active entries wait at each step, for the campaign's report."""
        rows = self.session.execute(
            select(JourneyEntry.step, func.count())
            .where(
                JourneyEntry.campaign_id == campaign_id, JourneyEntry.status == EntryStatus.ACTIVE
            )
            .group_by(JourneyEntry.step)
        )
        return {str(s): int(n) for s, n in rows}

    def entries(
        self, campaign_id: int, *, customer_id: int | None, limit: int, offset: int
    ) -> Sequence[JourneyEntry]:
        """The campaign's entries in the order they came (one customer's, if given), a page."""
        query = select(JourneyEntry).where(JourneyEntry.campaign_id == campaign_id)
        if customer_id is not None:
            query = query.where(JourneyEntry.customer_id == customer_id)
        return self.session.scalars(
            query.order_by(JourneyEntry.id).limit(limit).offset(offset)
        ).all()

    def steps_of(self, entry_id: int) -> Sequence[JourneyStep]:
        """The entry's log of steps in the order they ran, to show one customer's path."""
        return self.session.scalars(
            select(JourneyStep).where(JourneyStep.entry_id == entry_id).order_by(JourneyStep.id)
        ).all()

    def active_count(self, campaign_id: int) -> int:
        """How many entries are still active, to tell whether an ended campaign is done."""
        return int(
            self.session.scalar(
                select(func.count())
                .select_from(JourneyEntry)
                .where(
                    JourneyEntry.campaign_id == campaign_id,
                    JourneyEntry.status == EntryStatus.ACTIVE,
                )
            )
            or 0
        )


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
