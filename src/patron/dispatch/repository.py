"""All SQL of dispatch: writing the outbox, claiming due messages, recording outcomes.

Claiming is one statement per backend. PostgreSQL selects due rows ``FOR UPDATE SKIP
LOCKED`` so that workers on several hosts never take the same row and never wait on each
other. SQLite has one writer at a time, so a plain ``UPDATE ... WHERE id IN (SELECT ...
LIMIT n)`` is atomic there; workers on one host can share a SQLite store, taking turns at
its write lock.

A claim is a :class:`~patron.dispatch.schemas.Lease`. Every write that follows it on a
claimed message before its handover (sent, retry, failed, deferred, held, skipped, the
lease's renewal) is a compare-and-set on that lease, so a claim that a later one took
over after its lease ran out changes nothing. After the handover the message is ``sent``,
which no claim takes, and the provider's late verdict (a retry, a failure) is written
only while it still is.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from patron.customers.repository import chunks
from patron.dispatch.schemas import Lease
from patron.kit.db import bulk_insert_columns, table_of
from patron.models import (
    AnalysisRun,
    CallResult,
    Campaign,
    CampaignRecipient,
    CampaignStatus,
    Channel,
    Consent,
    ConsentStatus,
    Customer,
    CustomerScore,
    Event,
    Identity,
    JourneyEntry,
    Message,
    MessageStatus,
    Purpose,
    RecipientGroup,
    RunStatus,
    Suppression,
)
from patron.models.message import FINAL

_MESSAGES = table_of(Message)

# The sent mark, a compare-and-set on the claim, one ``executemany`` per handover: each row
# has its own subject, and the total row count says whether every mark took effect.
_MARK_SENT = (
    update(_MESSAGES)
    .where(
        _MESSAGES.c.id == bindparam("b_id"),
        _MESSAGES.c.status == bindparam("b_status"),
        _MESSAGES.c.worker == bindparam("b_worker"),
        _MESSAGES.c.lease_until == bindparam("b_until"),
    )
    .values(
        status=MessageStatus.SENT, sent_at=bindparam("b_at"), lease_until=None, reason=None,
        subject=bindparam("b_subject"),
    )
)  # fmt: skip


class DispatchRepository:
    """The outbox in one session."""

    def __init__(self, session: Session) -> None:
        self.session = session

    # -- writing the outbox --------------------------------------------------------------

    def wave_recipients(
        self, campaign_id: int, wave: int, kind: str | None
    ) -> list[tuple[int, str | None]]:
        """Treatment customers of one wave without a message yet, with their address for
        the channel (the first by value)."""
        address: Any = None
        if kind is not None:
            address = (
                select(func.min(Identity.value))
                .where(Identity.customer_id == CampaignRecipient.customer_id, Identity.kind == kind)
                .scalar_subquery()
            )
        query = (
            select(CampaignRecipient.customer_id, address)
            .where(
                CampaignRecipient.campaign_id == campaign_id,
                CampaignRecipient.group == RecipientGroup.TREATMENT,
                CampaignRecipient.wave == wave,
                CampaignRecipient.customer_id.not_in(
                    select(Message.customer_id).where(Message.campaign_id == campaign_id)
                ),
            )
            .order_by(CampaignRecipient.customer_id)
        )
        return [(int(c), a) for c, a in self.session.execute(query)]

    def enqueue(self, columns: dict[str, Sequence[Any]]) -> None:
        bulk_insert_columns(self.session, table_of(Message), columns)

    # -- claiming ------------------------------------------------------------------------

    def claim(self, *, worker: str, limit: int, now: datetime, lease: timedelta) -> Lease:
        """Take up to ``limit`` due messages: queued and due, or sending with a lease that
        ran out (their worker died, or is slow). Returns the claim, its ids oldest first."""
        due = or_(
            and_(Message.status == MessageStatus.QUEUED, Message.next_attempt_at <= now),
            and_(Message.status == MessageStatus.SENDING, Message.lease_until < now),
        )
        until = now + lease
        candidates = select(Message.id).where(due).order_by(Message.id).limit(limit)
        if self.session.get_bind().dialect.name == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
            ids = list(self.session.scalars(candidates))
            if not ids:
                return Lease(worker=worker, until=until, ids=())
            chosen: Any = Message.id.in_(ids)
        else:
            chosen = Message.id.in_(candidates.scalar_subquery())
        claimed = self.session.execute(
            update(Message)
            .where(chosen)
            .values(
                status=MessageStatus.SENDING,
                lease_until=until,
                worker=worker,
                attempts=Message.attempts + 1,
            )
            .returning(Message.id)
            .execution_options(synchronize_session=False)
        )
        ids = sorted(int(i) for i in claimed.scalars())
        return Lease(worker=worker, until=until, ids=tuple(ids))

    def renew(self, lease: Lease, *, until: datetime) -> Lease:
        """Extend a claim to ``until`` on the messages still under it (the others were
        taken over). The renewed claim is a new lease: later writes name it."""
        # strictly later, so that the old lease can never match a renewed row
        until = max(until, lease.until + timedelta(microseconds=1))
        self.session.execute(
            update(Message)
            .where(Message.id.in_(lease.ids), self._held(lease))
            .values(lease_until=until)
            .execution_options(synchronize_session=False)
        )
        return Lease(worker=lease.worker, until=until, ids=lease.ids)

    @staticmethod
    def _held(lease: Lease) -> ColumnElement[bool]:
        """The rows that are still this claim's."""
        return and_(
            Message.status == MessageStatus.SENDING,
            Message.worker == lease.worker,
            Message.lease_until == lease.until,
        )

    def move_status(
        self, campaign_id: int, old: MessageStatus, new: MessageStatus, **values: Any
    ) -> int:
        """Move a campaign's messages from one state to another; returns how many moved."""
        moved = self.session.execute(
            update(Message)
            .where(Message.campaign_id == campaign_id, Message.status == old)
            .values(status=new, **values)
            .execution_options(synchronize_session=False)
        )
        return int(moved.rowcount)  # type: ignore[attr-defined]

    def messages(self, ids: Sequence[int], *, lease: Lease | None = None) -> list[Message]:
        """Messages by id; with ``lease``, only those still under that claim."""
        query = select(Message).where(Message.id.in_(ids))
        if lease is not None:
            query = query.where(self._held(lease))
        return list(self.session.scalars(query.order_by(Message.id)))

    def mark(
        self,
        ids: Sequence[int],
        *,
        lease: Lease | None = None,
        was: MessageStatus | None = None,
        **values: Any,
    ) -> int:
        """Set the same values on several messages; with ``lease``, only on those still
        under that claim, and with ``was``, only on those in that state. Returns how many
        changed."""
        if not ids:
            return 0
        query = update(Message).where(Message.id.in_(ids))
        if lease is not None:
            query = query.where(self._held(lease))
        if was is not None:
            query = query.where(Message.status == was)
        changed = self.session.execute(
            query.values(**values).execution_options(synchronize_session=False)
        )
        return int(changed.rowcount)  # type: ignore[attr-defined]

    def mark_sent(self, subjects: dict[int, str], *, lease: Lease, at: datetime) -> set[int]:
        """Messages sent, each with its subject (keyed by id), if still under ``lease``.
        Returns the ids marked: the rest were claimed again after the lease ran out."""
        if not subjects:
            return set()
        common = {"b_status": MessageStatus.SENDING, "b_worker": lease.worker,
                  "b_until": lease.until, "b_at": at}  # fmt: skip
        marked = self.session.execute(
            _MARK_SENT, [{"b_id": i, "b_subject": s, **common} for i, s in subjects.items()]
        )
        if int(marked.rowcount) == len(subjects):  # type: ignore[attr-defined]
            return set(subjects)
        # some were taken over: ours are the ones now sent at this very instant by us
        ours = select(Message.id).where(
            Message.id.in_(list(subjects)),
            Message.status == MessageStatus.SENT,
            Message.worker == lease.worker,
            Message.sent_at == at,
        )
        return {int(i) for i in self.session.scalars(ours)}

    def set_provider_refs(self, refs: dict[int, str]) -> None:
        """The providers' ids of sent messages, for their delivery callbacks."""
        if refs:
            self.session.execute(
                update(Message),
                [{"id": message_id, "provider_ref": ref} for message_id, ref in refs.items()],
            )

    def complaint_counts(self, campaign_id: int) -> tuple[int, int]:
        """A campaign's messages sent, and how many of them drew a complaint."""
        row = self.session.execute(
            select(
                func.count().filter(Message.status == MessageStatus.SENT),
                func.count(Message.complained_at),
            ).where(Message.campaign_id == campaign_id)
        ).one()
        return int(row[0]), int(row[1])

    def call_messages(self, campaign_id: int) -> Sequence[Message]:
        """A campaign's phone messages on the call list (handed to it: sent)."""
        return self.session.scalars(
            select(Message)
            .where(
                Message.campaign_id == campaign_id,
                Message.channel == Channel.PHONE,
                Message.status == MessageStatus.SENT,
            )
            .order_by(Message.id)
        ).all()

    def call_results(self, message_ids: Sequence[int]) -> dict[int, list[CallResult]]:
        """Each message's calls, oldest first."""
        found: dict[int, list[CallResult]] = {}
        for part in chunks(message_ids):
            rows = self.session.scalars(
                select(CallResult)
                .where(CallResult.message_id.in_(part))
                .order_by(CallResult.recorded_at, CallResult.id)
            )
            for row in rows:
                found.setdefault(row.message_id, []).append(row)
        return found

    def add_call_result(self, result: CallResult) -> CallResult:
        self.session.add(result)
        self.session.flush()
        return result

    def add_event(self, event: Event) -> None:
        self.session.add(event)
        self.session.flush()

    def by_provider_ref(self, ref: str) -> Message | None:
        return self.session.scalar(select(Message).where(Message.provider_ref == ref))

    # -- contexts ------------------------------------------------------------------------

    def entry_contexts(self, entry_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """The firing facts' properties of journey entries."""
        if not entry_ids:
            return {}
        rows = self.session.execute(
            select(JourneyEntry.id, JourneyEntry.context).where(JourneyEntry.id.in_(entry_ids))
        )
        return {int(i): dict(c or {}) for i, c in rows}

    def customers(self, ids: Sequence[int]) -> dict[int, Customer]:
        rows = self.session.scalars(select(Customer).where(Customer.id.in_(ids)))
        return {c.id: c for c in rows}

    def contacts(self, ids: Sequence[int]) -> dict[int, dict[str, str]]:
        """Each customer's first identity value of each kind."""
        rows = self.session.execute(
            select(Identity.customer_id, Identity.kind, func.min(Identity.value))
            .where(Identity.customer_id.in_(ids))
            .group_by(Identity.customer_id, Identity.kind)
        )
        found: dict[int, dict[str, str]] = {}
        for customer, kind, value in rows:
            found.setdefault(int(customer), {})[
                str(kind.value if hasattr(kind, "value") else kind)
            ] = value
        return found

    def newest_scores(self, ids: Sequence[int], *, until: datetime) -> dict[int, CustomerScore]:
        """Scores of the newest completed analysis run up to ``until``."""
        run = self.session.scalar(
            select(AnalysisRun.id)
            .where(AnalysisRun.status == RunStatus.COMPLETED, AnalysisRun.as_of <= until)
            .order_by(AnalysisRun.as_of.desc(), AnalysisRun.id.desc())
            .limit(1)
        )
        if run is None:
            return {}
        rows = self.session.scalars(
            select(CustomerScore).where(
                CustomerScore.run_id == run, CustomerScore.customer_id.in_(ids)
            )
        )
        return {s.customer_id: s for s in rows}

    def consenting(self, ids: Sequence[int], channel: str, *, now: datetime) -> set[int]:
        """Which of these customers' marketing consent on the channel is granted now: the
        latest decision per customer, read for these customers only (a send-time check
        must not scan the whole base for each batch)."""
        rows = self.session.execute(
            select(Consent.customer_id, Consent.status, Consent.decided_at, Consent.id).where(
                Consent.customer_id.in_(ids),
                Consent.channel == channel,
                Consent.purpose == Purpose.MARKETING,
                Consent.status != ConsentStatus.PENDING,
                Consent.decided_at <= now,
            )
        )
        latest: dict[int, tuple[datetime, int, str]] = {}
        for customer, status, decided, row in rows:
            seen = latest.get(int(customer))
            if seen is None or (decided, row) > seen[:2]:
                latest[int(customer)] = (decided, row, str(status))
        return {c for c, (_, _, status) in latest.items() if status == ConsentStatus.GRANTED}

    def suppressed(self, ids: Sequence[int], channel: str) -> set[int]:
        """Which of these customers are suppressed on the channel now."""
        rows = self.session.scalars(
            select(Suppression.customer_id).where(
                Suppression.customer_id.in_(ids),
                Suppression.channel == channel,
                Suppression.lifted_at.is_(None),
            )
        )
        return {int(c) for c in rows}

    # -- campaigns -----------------------------------------------------------------------

    def campaigns(self, ids: Sequence[int]) -> dict[int, Campaign]:
        rows = self.session.scalars(select(Campaign).where(Campaign.id.in_(ids)))
        return {c.id: c for c in rows}

    def running(self) -> Sequence[Campaign]:
        return self.session.scalars(
            select(Campaign).where(Campaign.status == CampaignStatus.RUNNING).order_by(Campaign.id)
        ).all()

    def status_counts(self, campaign_id: int) -> dict[str, int]:
        rows = self.session.execute(
            select(Message.status, func.count())
            .where(Message.campaign_id == campaign_id)
            .group_by(Message.status)
        )
        return {str(getattr(s, "value", s)): int(n) for s, n in rows}

    def unfinished(self, campaign_id: int) -> int:
        """Messages of a campaign not yet in a final state."""
        query = (
            select(func.count())
            .select_from(Message)
            .where(Message.campaign_id == campaign_id, Message.status.not_in(list(FINAL)))
        )
        return int(self.session.scalar(query) or 0)

    def pending_waves(self, campaign_id: int) -> list[int]:
        """Waves with treatment customers but no messages yet."""
        have = select(Message.wave).where(Message.campaign_id == campaign_id).distinct()
        rows = self.session.scalars(
            select(CampaignRecipient.wave)
            .where(
                CampaignRecipient.campaign_id == campaign_id,
                CampaignRecipient.group == RecipientGroup.TREATMENT,
                CampaignRecipient.wave.not_in(have),
            )
            .distinct()
        )
        return sorted(int(w) for w in rows if w is not None)

    def due_count(self, *, now: datetime) -> int:
        """Messages a worker could take now or that are still in flight."""
        query = (
            select(func.count())
            .select_from(Message)
            .where(Message.status.in_([MessageStatus.QUEUED, MessageStatus.SENDING]))
        )
        return int(self.session.scalar(query) or 0)
