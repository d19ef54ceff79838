"""Trigger evaluation and journey steps. Services never commit: the runner
(:mod:`patron.journeys.tasks`) commits each pass, and the step log, the step's effect and
the entry's new place go in one transaction, so each step runs exactly once.

A pass does three things:

1. **facts**: new events and orders, read after the cursors, admit customers to campaigns
   triggered by them, and move entries that listen (a wait for that event wakes early; the
   journey's goal converts the entry);
2. **timed triggers**: dates, segment builds and analysis runs, each read from where its
   campaign's ``trigger_state`` says it stopped;
3. **steps**: entries whose ``wake_at`` has come run their steps until a wait or the end.
"""

from __future__ import annotations

import functools
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy.orm import Session

from patron.analytics.repository import AnalyticsRepository
from patron.campaigns.groups import control_mask, unit_hash
from patron.campaigns.repository import ADDRESS_KIND, CampaignRepository
from patron.campaigns.schemas import MessageTemplate, Offer, Schedule
from patron.campaigns.templates import check
from patron.dispatch.repository import DispatchRepository
from patron.journeys.repository import JourneyRepository
from patron.journeys.schemas import (
    BranchStep,
    Condition,
    DateTrigger,
    EventTrigger,
    ExitStep,
    Journey,
    ScoreTrigger,
    SegmentTrigger,
    SendStep,
    SplitStep,
    Step,
    TriggerSpec,
    UpdateStep,
    WaitStep,
    single_send,
)
from patron.kit.errors import InvalidInput
from patron.kit.settings import Settings, get_settings
from patron.loyalty.coupons import CouponService, new_code
from patron.models import (
    Campaign,
    CampaignRecipient,
    CampaignStatus,
    Channel,
    EntryStatus,
    JourneyEntry,
    JourneyStep,
    Message,
    MessageStatus,
    OrderKind,
    RecipientGroup,
    TriggerCursor,
)
from patron.segments.service import SegmentService

_BATCH = 2000
GOAL_LOG = "/goal"
"""The step log's name for a conversion: no step id can take it (ids have no ``/``)."""
_CASCADE_RECHECK = timedelta(minutes=15)
_UNSENT = frozenset({MessageStatus.FAILED, MessageStatus.SKIPPED})
_OPS = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


@dataclass(frozen=True)
class Fact:
    """Something that happened to a customer, which may fire a trigger or move an entry."""

    ref: str
    customer_id: int
    type: str
    at: datetime
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass
class PassTally:
    """What one pass of the runner did."""

    facts: int = 0
    read: int = 0
    """Rows of the events and orders tables read (with anonymous ones and returns)."""
    entered: int = 0
    held_out: int = 0
    steps: int = 0
    messages: int = 0
    converted: int = 0
    backlog: bool = False


def plan_of(campaign: Campaign) -> tuple[TriggerSpec, Journey]:
    """A triggered campaign's trigger and journey, validated (never to be changed: the
    same objects serve every entry of the campaign)."""
    return _plan(json.dumps([campaign.trigger, campaign.journey, campaign.channel.value]))


@functools.lru_cache(maxsize=256)
def _plan(plan: str) -> tuple[TriggerSpec, Journey]:
    # validating a journey costs more than the rest of a step; a pass asks for it per entry
    trigger, journey, channel = json.loads(plan)
    spec = TriggerSpec.model_validate(trigger)
    steps = Journey.model_validate(journey) if journey else single_send(Channel(channel))
    return spec, steps


def check_plan(spec: TriggerSpec, journey: Journey, *, message: MessageTemplate,
               channel: Channel) -> None:  # fmt: skip
    """Refuse a journey whose messages would not render on their channels."""
    for step in journey.steps:
        if isinstance(step, SendStep):
            for each in step.channels or [step.channel or channel]:
                try:
                    check(step.message or message, each)
                except InvalidInput as exc:
                    raise InvalidInput(f"journey step {step.id!r}: {exc.message}") from None


class JourneyService:
    """Triggered campaigns on one session."""

    def __init__(self, session: Session, *, settings: Settings | None = None) -> None:
        self.session = session
        self.settings = settings or get_settings()
        self.repo = JourneyRepository(session)
        self.outbox = DispatchRepository(session)
        # per batch of due entries: who is reachable on which channel, read in bulk
        self._reachable: dict[tuple[int, Channel], tuple[str | None, str]] = {}
        # while a batch walks, its step log rows wait for one flush to give their messages
        # ids; they are added afterwards in the order they were made
        self._unsaved: list[tuple[JourneyStep, Message | None]] | None = None
        # per batch: each customer's messages per channel within the frequency cap's days
        self._recent: dict[int, dict[str, int]] = {}

    # -- starting ----------------------------------------------------------------------------

    def start_state(self, campaign: Campaign, *, at: datetime) -> dict[str, Any]:
        """Where a triggered campaign starts reading: now, so launching it never replays
        history (last year's birthdays, old carts)."""
        spec, journey = plan_of(campaign)
        check_plan(spec, journey, message=MessageTemplate.model_validate(campaign.message),
                   channel=campaign.channel)  # fmt: skip
        # the shared cursors exist from the first launch on, so no fact after it is missed
        self.repo.cursor("events")
        self.repo.cursor("orders")
        state: dict[str, Any] = {
            "event_id": self.repo.end_of("events"),
            "order_id": self.repo.end_of("orders"),
        }
        trigger = spec.on
        if isinstance(trigger, DateTrigger):
            # today's anniversaries still count: the day is read at the first pass
            state["day"] = (_local_day(campaign, at) - timedelta(days=1)).isoformat()
        if isinstance(trigger, SegmentTrigger):
            segment = SegmentService(self.session).find(trigger.segment)
            builds = self.repo.builds_after(segment.id, 0)
            state |= {"segment_id": segment.id, "build_id": builds[-1] if builds else 0}
        if isinstance(trigger, ScoreTrigger):
            runs = self.repo.runs_after(0)
            state["run_id"] = runs[-1] if runs else 0
        return state

    # -- facts: events and orders ----------------------------------------------------------

    def take_facts(self, *, now: datetime, limit: int = _BATCH) -> PassTally:
        """Read the events and orders that came since the last pass: admit customers to
        campaigns they trigger, and move the entries that listen for them."""
        tally = PassTally()
        campaigns = self.repo.triggered(statuses=[CampaignStatus.RUNNING, CampaignStatus.PAUSED])
        events, orders = self.repo.cursor("events"), self.repo.cursor("orders")
        facts: list[tuple[str, int, Fact]] = []
        rows = _read(events, self.repo.events_after, self.repo.events_by_ids, now=now,
                     limit=limit)  # fmt: skip
        tally.read = len(rows)
        for row in rows:
            if row.customer_id is not None:
                fact = Fact(f"event:{row.id}", int(row.customer_id), row.type, row.occurred_at,
                            dict(row.properties or {}))  # fmt: skip
                facts.append(("event_id", int(row.id), fact))
        bought = _read(orders, self.repo.purchases_after, self.repo.orders_by_ids, now=now,
                       limit=limit)  # fmt: skip
        tally.read += len(bought)
        buyers = [int(o.customer_id) for o in bought if o.customer_id is not None
                  and o.kind is OrderKind.PURCHASE]  # fmt: skip
        firsts = self.repo.first_purchases(sorted(set(buyers))) if buyers else {}
        for row in bought:
            if row.customer_id is None or row.kind is not OrderKind.PURCHASE:
                continue
            properties = {"order_id": int(row.id), "total": str(row.total)}
            fact = Fact(f"order:{row.id}", int(row.customer_id), "purchase", row.placed_at,
                        properties)  # fmt: skip
            facts.append(("order_id", int(row.id), fact))
            if firsts.get(int(row.customer_id)) == row.placed_at:
                facts.append(("order_id", int(row.id), Fact(
                    f"first:{row.id}", int(row.customer_id), "first_purchase", row.placed_at,
                    properties)))  # fmt: skip
        tally.facts = len(facts)
        if not facts:
            return tally
        for campaign in campaigns:
            if campaign.status is not CampaignStatus.RUNNING:
                continue
            spec, _ = plan_of(campaign)
            trigger = spec.on
            if not isinstance(trigger, EventTrigger) or _ended(campaign, now):
                continue
            matching = [
                fact for source, position, fact in facts
                if fact.type == trigger.event_type
                and position > int(campaign.trigger_state.get(source, 0))
                and all(fact.properties.get(k) == v for k, v in trigger.where.items())
            ]  # fmt: skip
            if matching:
                self.admit(campaign, spec, matching, now=now, tally=tally)
        self._signal([fact for _, _, fact in facts], campaigns, now=now, tally=tally)
        return tally

    def _signal(
        self, facts: Sequence[Fact], campaigns: Sequence[Campaign], *, now: datetime,
        tally: PassTally,
    ) -> None:  # fmt: skip
        """Facts reach the entries that listen: a goal converts, an awaited event wakes."""
        journeys = {c.id: plan_of(c)[1] for c in campaigns}
        listened = {t for j in journeys.values() for t in j.events()}
        wanted = [f for f in facts if f.type in listened]
        if not wanted:
            return
        by_customer: dict[int, list[Fact]] = {}
        for fact in wanted:
            by_customer.setdefault(fact.customer_id, []).append(fact)
        for entry in self.repo.listening(sorted(by_customer)):
            journey = journeys.get(entry.campaign_id)
            if journey is None:
                continue
            for fact in by_customer[entry.customer_id]:
                # the fact that fired the entry (or its twin, a first purchase's order)
                # is not something that happened after it
                if fact.at < entry.fired_at or _row(fact.ref) == _row(entry.source_ref):
                    continue
                if journey.goal == fact.type:
                    self._end(entry, EntryStatus.CONVERTED, f"goal: {fact.type} ({fact.ref})",
                              now=now)  # fmt: skip
                    self._log(entry, GOAL_LOG, f"converted: {fact.ref}", now=now)
                    tally.converted += 1
                    break
                if entry.waiting_for == fact.type:
                    entry.wake_at = now

    # -- timed triggers: dates, segments, scores ---------------------------------------------

    def evaluate_timed(self, *, now: datetime) -> PassTally:
        """Date, segment and score triggers, each from where its campaign stopped."""
        tally = PassTally()
        for campaign in self.repo.triggered(statuses=[CampaignStatus.RUNNING], lock=True):
            spec, _ = plan_of(campaign)
            trigger, state = spec.on, dict(campaign.trigger_state)
            if _ended(campaign, now):
                continue
            facts: list[Fact] = []
            if isinstance(trigger, DateTrigger):
                today = _local_day(campaign, now)
                day = date.fromisoformat(state["day"]) + timedelta(days=1)
                # catching up after a stop is bounded: a week of missed days at most
                day = max(day, today - timedelta(days=7))
                while day <= today:
                    anniversary = day - timedelta(days=trigger.offset_days)
                    fired = datetime.combine(day, datetime.min.time(), tzinfo=now.tzinfo)
                    facts += [
                        Fact(f"date:{day.isoformat()}:{c}", c, "date", fired)
                        for c in self.repo.anniversaries(trigger.field, anniversary)
                    ]
                    state["day"] = day.isoformat()
                    day += timedelta(days=1)
            elif isinstance(trigger, SegmentTrigger):
                for build in self.repo.builds_after(state["segment_id"], state["build_id"]):
                    moved = self.repo.segment_moves(state["segment_id"], build, on=trigger.on)
                    facts += [Fact(f"build:{build}:{c}", c, "segment", now) for c in moved]
                    state["build_id"] = build
            elif isinstance(trigger, ScoreTrigger):
                for run in self.repo.runs_after(state["run_id"]):
                    crossed = self.repo.score_crossings(
                        run, self.repo.previous_run(run), stage=trigger.stage,
                        p_alive_below=trigger.p_alive_below,
                    )  # fmt: skip
                    facts += [Fact(f"run:{run}:{c}", c, "score", now) for c in crossed]
                    state["run_id"] = run
            else:
                continue
            if facts:
                self.admit(campaign, spec, facts, now=now, tally=tally)
            campaign.trigger_state = state
        return tally

    # -- admission ---------------------------------------------------------------------------

    def admit(
        self, campaign: Campaign, spec: TriggerSpec, facts: Sequence[Fact], *, now: datetime,
        tally: PassTally,
    ) -> list[JourneyEntry]:  # fmt: skip
        """Admit the customers these facts name, by the re-entry rule: each becomes an
        entry, held out as control (by the campaign's hash, the same on every entry) or
        set to run its first step now."""
        _, journey = plan_of(campaign)
        customers = sorted({f.customer_id for f in facts})
        alive = self.repo.active_customers(customers)
        if spec.within_segment:
            alive &= self.repo.members(campaign.segment_id, customers)
        seen = self.repo.known_sources(campaign.id, [f.ref for f in facts])
        last = self.repo.last_entries(campaign.id, customers)
        recorded = self.repo.recipients(campaign.id, customers)
        ids = np.array(customers, dtype=np.int64)
        mask = control_mask(ids, campaign_id=campaign.id, share=campaign.control_share)
        held = dict(zip(customers, mask.tolist(), strict=True))
        rule = spec.reentry
        made: list[JourneyEntry] = []
        joined: list[CampaignRecipient] = []
        for fact in facts:
            customer = fact.customer_id
            if customer not in alive or fact.ref in seen:
                continue
            before = last.get(customer)
            if before is not None and (
                rule.mode == "once"
                or (rule.mode == "once_per" and now - before < timedelta(days=rule.days or 0))
            ):
                continue
            control = bool(held[customer])
            if customer not in recorded:
                joined.append(CampaignRecipient(
                    campaign_id=campaign.id, customer_id=customer,
                    group=RecipientGroup.CONTROL if control else RecipientGroup.TREATMENT,
                    wave=None if control else 1, reason=None, frozen_at=now,
                ))  # fmt: skip
                recorded.add(customer)
            entry = JourneyEntry(
                campaign_id=campaign.id, customer_id=customer, source_ref=fact.ref,
                fired_at=fact.at, entered_at=now,
                status=EntryStatus.CONTROL if control else EntryStatus.ACTIVE,
                step=None if control else journey.steps[0].id,
                wake_at=None if control else now, context=_plain(fact.properties),
                ended_at=now if control else None,
                outcome="held out as control" if control else None,
            )  # fmt: skip
            made.append(entry)
            seen.add(fact.ref)
            last[customer] = now
            tally.held_out += control
            tally.entered += not control
        # a burst of events admits thousands at once: written in bulk, not object by object
        self.repo.insert_new(joined)
        self.repo.insert_new(made, with_ids=True)
        return made

    # -- steps -------------------------------------------------------------------------------

    def advance(self, *, now: datetime, limit: int = 500) -> PassTally:
        """Run the steps of entries whose time has come, each until a wait or the end."""
        tally = PassTally()
        entries = self.repo.due(now=now, limit=limit)
        if not entries:
            return tally
        campaigns = self.outbox.campaigns(sorted({e.campaign_id for e in entries}))
        done = self.repo.done_steps([e.id for e in entries])
        self._prefetch_reach(entries, campaigns, now=now)
        self._unsaved = []
        for entry in entries:
            campaign = campaigns[entry.campaign_id]
            if campaign.status is CampaignStatus.CANCELLED:
                self._end(entry, EntryStatus.EXITED, "campaign cancelled", now=now)
                continue
            if campaign.status is not CampaignStatus.RUNNING:
                continue  # paused since the batch was read: its entries wait where they are
            _, journey = plan_of(campaign)
            self._walk(campaign, journey, entry, done.setdefault(entry.id, {}), now=now,
                       tally=tally)  # fmt: skip
        self._save_logs()
        self._reachable.clear()
        self._recent = {}
        return tally

    def _prefetch_reach(
        self, entries: Sequence[JourneyEntry], campaigns: dict[int, Campaign], *, now: datetime
    ) -> None:
        """Read address, consent and suppression for the whole batch at once, on every
        channel its journeys send on: three queries a channel, not three a message."""
        channels: set[Channel] = set()
        for campaign in {e.campaign_id: campaigns[e.campaign_id] for e in entries}.values():
            for step in plan_of(campaign)[1].steps:
                if isinstance(step, SendStep):
                    channels.update(step.channels or [step.channel or campaign.channel])
        customers = sorted({e.customer_id for e in entries})
        if channels:
            since = now - timedelta(days=self.settings.frequency_cap_days)
            self._recent = self.repo.recent_messages(customers, since=since)
        contacts = self.outbox.contacts(customers) if channels else {}
        for channel in channels:
            kind = ADDRESS_KIND.get(channel)
            if kind is None:
                continue  # push reads the profile; _reach does it one by one
            consenting = self.outbox.consenting(customers, channel.value, now=now)
            suppressed = self.outbox.suppressed(customers, channel.value)
            for customer in customers:
                address = contacts.get(customer, {}).get(kind)
                self._reachable[(customer, channel)] = (
                    (None, "no address") if not address
                    else (None, "no consent") if customer not in consenting
                    else (None, "suppressed") if customer in suppressed
                    else (address, "")
                )  # fmt: skip

    def _save_logs(self) -> None:
        """Insert the batch's messages in bulk, then the step log rows that name them."""
        unsaved, self._unsaved = self._unsaved or [], None
        self.session.flush()  # the coupons issued for the messages go first
        self.repo.insert_new([m for _, m in unsaved if m is not None], with_ids=True)
        for row, message in unsaved:
            if message is not None:
                row.message_id = message.id
        self.repo.insert_new([row for row, _ in unsaved])

    def _walk(
        self, campaign: Campaign, journey: Journey, entry: JourneyEntry,
        done: dict[str, JourneyStep], *, now: datetime, tally: PassTally,
    ) -> None:  # fmt: skip
        for _ in range(2 * len(journey.steps) + 2):  # a journey has no loops; this bounds it
            if entry.step is None:
                self._end(entry, EntryStatus.COMPLETED, "journey completed", now=now)
                return
            step = journey.step(entry.step)
            tally.steps += 1
            if isinstance(step, WaitStep):
                if not self._wait(journey, step, entry, done, now=now):
                    return
            elif isinstance(step, SendStep):
                if not self._send(campaign, journey, step, entry, done, now=now, tally=tally):
                    return
            elif isinstance(step, BranchStep):
                passed = self._holds(step.when, entry, done, now=now)
                self._log(entry, step.id, "yes" if passed else "no", now=now, done=done)
                target = step.then if passed else step.otherwise
                if target is None:
                    self._end(entry, EntryStatus.EXITED, f"branch {step.id}: no", now=now)
                    return
                entry.step = target
            elif isinstance(step, SplitStep):
                salt = zlib.crc32(f"{campaign.id}:{step.id}".encode())
                draw = float(unit_hash(np.array([entry.id], dtype=np.int64), salt=salt)[0])
                edge, chosen = 0.0, step.paths[-1]
                for path in step.paths:
                    edge += path.share
                    if draw < edge:
                        chosen = path
                        break
                self._log(entry, step.id, f"path: {chosen.next}", now=now, done=done)
                entry.step = chosen.next
            elif isinstance(step, UpdateStep):
                self._update(step, entry)
                self._log(entry, step.id, "updated", now=now, done=done)
                entry.step = journey.following(step)
            elif isinstance(step, ExitStep):
                self._log(entry, step.id, "exit", now=now, done=done)
                self._end(entry, EntryStatus.EXITED, f"exit at {step.id}", now=now)
                return

    def _wait(
        self, journey: Journey, step: WaitStep, entry: JourneyEntry,
        done: dict[str, JourneyStep], *, now: datetime,
    ) -> bool:  # fmt: skip
        """Start or finish a wait; True when the entry goes on now."""
        started = done.get(step.id)
        if started is None:
            self._log(entry, step.id, "waiting", now=now, done=done)
            # an event-only wait has no timeout: it listens until the event or an exit
            entry.wake_at = now + timedelta(seconds=step.seconds) if step.seconds else None
            entry.waiting_for = step.until_event
            return False
        if step.until_event and self.repo.happened(
            entry.customer_id, step.until_event, since=started.at, besides=_row(entry.source_ref)
        ):
            outcome, target = f"event: {step.until_event}", step.on_event or journey.following(step)
        elif step.seconds and now >= started.at + timedelta(seconds=step.seconds):
            outcome, target = "timeout" if step.until_event else "elapsed", journey.following(step)
        else:
            # woken by something else: the wait goes on to its own end
            entry.wake_at = started.at + timedelta(seconds=step.seconds) if step.seconds else None
            return False
        self._log(entry, f"{step.id}/end", outcome, now=now, done=done)
        entry.waiting_for = None
        entry.step = target
        return True

    def _send(
        self, campaign: Campaign, journey: Journey, step: SendStep, entry: JourneyEntry,
        done: dict[str, JourneyStep], *, now: datetime, tally: PassTally,
    ) -> bool:  # fmt: skip
        """Write the step's message to the outbox (or the next of a cascade); True when the
        entry goes on now."""
        channels = step.channels or [step.channel or campaign.channel]
        tried = [i for i in range(len(channels)) if f"{step.id}#{i}" in done]
        if tried:
            last = done[f"{step.id}#{tried[-1]}"]
            message = self.repo.message(last.message_id) if last.message_id else None
            if message is not None and _delivered(message):
                self._log(entry, step.id, f"delivered: {channels[tried[-1]]}", now=now, done=done)
                entry.step = journey.following(step)
                return True
            fallback = timedelta(minutes=step.fallback_minutes)
            if message is not None and message.status not in _UNSENT:
                if message.status is not MessageStatus.SENT or message.sent_at is None:
                    # still on its way (queued, held by a pause, waiting out quiet hours):
                    # the next channel would make two messages, so the cascade waits
                    entry.wake_at = now + min(fallback, _CASCADE_RECHECK)
                    return False
                if now < message.sent_at + fallback:
                    entry.wake_at = message.sent_at + fallback
                    return False
        start = tried[-1] + 1 if tried else 0
        reasons: list[str] = []
        for index in range(start, len(channels)):
            channel = channels[index]
            address, why = self._reach(entry.customer_id, channel, now=now)
            if address is not None and journey.frequency_cap:
                address, why = self._under_cap(entry.customer_id, channel, address)
            if address is None:
                reasons.append(f"{channel.value}: {why}")
                continue
            if journey.frequency_cap:
                sent = self._recent.setdefault(entry.customer_id, {})
                sent[channel.value] = sent.get(channel.value, 0) + 1
            message = self._message(campaign, step, entry, channel, address,
                                    key=f"{entry.id}:{step.id}" + (f"#{index}" if step.channels
                                                                   else ""), now=now,
                                    capped=journey.frequency_cap)  # fmt: skip
            tally.messages += 1
            if not step.channels:
                self._log(entry, step.id, f"queued: {channel.value}", now=now, done=done,
                          message=message)  # fmt: skip
                entry.step = journey.following(step)
                return True
            self._log(entry, f"{step.id}#{index}", f"queued: {channel.value}", now=now,
                      done=done, message=message)  # fmt: skip
            entry.wake_at = now + timedelta(minutes=step.fallback_minutes)
            return False
        outcome = "undelivered" if tried else "unreachable: " + "; ".join(reasons)
        self._log(entry, step.id, outcome[:200], now=now, done=done)
        entry.step = journey.following(step)
        return True

    def _reach(
        self, customer_id: int, channel: Channel, *, now: datetime
    ) -> tuple[str | None, str]:
        """The address to send to on the channel, or None with why not: no address, no
        marketing consent in force, suppressed."""
        known = self._reachable.get((customer_id, channel))
        if known is not None:
            return known
        kind = ADDRESS_KIND.get(channel)
        address: str | None = None
        if kind is not None:
            address = self.outbox.contacts([customer_id]).get(customer_id, {}).get(kind)
        elif channel is Channel.PUSH:
            customer = self.repo.customer(customer_id)
            subscription = (
                (customer.attributes or {}).get("push_subscription") if customer else None
            )
            address = json.dumps(subscription) if subscription else None
        if not address:
            return None, "no address"
        if customer_id not in self.outbox.consenting([customer_id], channel.value, now=now):
            return None, "no consent"
        if self.outbox.suppressed([customer_id], channel.value):
            return None, "suppressed"
        return address, ""

    def _under_cap(
        self, customer_id: int, channel: Channel, address: str
    ) -> tuple[str | None, str]:
        """The address, or None when the customer has had the cap's number of messages on
        this channel, or on all channels together, within the cap's days."""
        sent = self._recent.get(customer_id, {})
        if sent.get(channel.value, 0) >= self.settings.frequency_cap_messages:
            return None, "frequency cap"
        every = self.settings.frequency_cap_all_channels
        if every is not None and sum(sent.values()) >= every:
            return None, "frequency cap (all channels)"
        return address, ""

    def _message(
        self, campaign: Campaign, step: SendStep, entry: JourneyEntry, channel: Channel,
        address: str, *, key: str, now: datetime, capped: bool,
    ) -> Message:  # fmt: skip
        offer = step.offer or Offer.model_validate(campaign.offer)
        coupon = None
        if offer.kind == "coupon":
            coupon = new_code(offer.coupon_prefix or "")
            CouponService(self.session).issue_for_campaign(
                campaign.id, campaign.name, discount_percent=offer.discount_percent,
                valid_days=offer.valid_days, at=now, pairs=[(entry.customer_id, coupon)],
            )  # fmt: skip
        message = Message(
            campaign_id=campaign.id, customer_id=entry.customer_id, channel=channel, wave=1,
            address=address, coupon=coupon, status=MessageStatus.QUEUED, attempts=0,
            next_attempt_at=now, created_at=now, step_key=key, entry_id=entry.id,
            capped=capped,
        )  # fmt: skip
        return message  # written with its step log row in _save_logs

    def _holds(
        self, condition: Condition, entry: JourneyEntry, done: dict[str, JourneyStep], *,
        now: datetime,
    ) -> bool:  # fmt: skip
        if condition.opened is not None or condition.delivered is not None:
            step_id = condition.opened or condition.delivered or ""
            rows = [r for k, r in done.items() if k == step_id or k.startswith(f"{step_id}#")]
            messages = [self.repo.message(r.message_id) for r in rows if r.message_id]
            if condition.opened is not None:
                return any(m is not None and m.opened_at is not None for m in messages)
            return any(m is not None and _delivered(m) for m in messages)
        if condition.has is not None:
            return condition.has in self.repo.identity_kinds(entry.customer_id)
        if condition.event is not None:
            return self.repo.happened(
                entry.customer_id, condition.event, since=entry.fired_at,
                besides=_row(entry.source_ref),
            )  # fmt: skip
        if condition.segment is not None:
            segment = SegmentService(self.session).find(condition.segment)
            return bool(self.repo.members(segment.id, [entry.customer_id]))
        if condition.score is not None:
            run = AnalyticsRepository(self.session).newest_run_id(until=now)
            score = self.repo.score(entry.customer_id, run_id=run) if run is not None else None
            value = getattr(score, condition.score, None) if score is not None else None
            return _compare(value, condition.op, condition.value)
        customer = self.repo.customer(entry.customer_id)
        name = condition.profile or ""
        value = None
        if customer is not None:
            value = getattr(customer, name) if hasattr(type(customer), name) else (
                customer.attributes or {}).get(name)  # fmt: skip
        return _compare(value, condition.op, condition.value)

    def _update(self, step: UpdateStep, entry: JourneyEntry) -> None:
        customer = self.repo.customer(entry.customer_id)
        if customer is None:
            return
        attributes = dict(customer.attributes or {})
        attributes |= step.set
        if step.tags:
            tags = list(attributes.get("tags") or [])
            attributes["tags"] = tags + [t for t in step.tags if t not in tags]
        customer.attributes = attributes

    def _log(
        self, entry: JourneyEntry, step: str, outcome: str, *, now: datetime,
        done: dict[str, JourneyStep] | None = None, message: Message | None = None,
    ) -> None:  # fmt: skip
        row = JourneyStep(entry_id=entry.id, campaign_id=entry.campaign_id, step=step, at=now,
                          outcome=outcome, message_id=message.id if message else None)  # fmt: skip
        if self._unsaved is not None:
            self._unsaved.append((row, message))
        else:
            self.repo.add(row)
        if done is not None:
            done[step] = row

    def _end(
        self, entry: JourneyEntry, status: EntryStatus, outcome: str, *, now: datetime
    ) -> None:
        entry.status, entry.outcome, entry.ended_at = status, outcome[:200], now
        entry.step, entry.wake_at, entry.waiting_for = None, None, None

    # -- ending campaigns --------------------------------------------------------------------

    def finish_ended(self, *, now: datetime) -> list[int]:
        """Complete triggered campaigns past their end whose entries and messages are all
        final; a triggered campaign without an end runs until it is cancelled."""
        completed: list[int] = []
        trail = CampaignRepository(self.session)
        # a cancelled campaign's entries end where they are, waits for an event included
        self.repo.end_entries_of_cancelled(now=now)
        for campaign in self.repo.triggered(statuses=[CampaignStatus.RUNNING]):
            if not _ended(campaign, now):
                continue
            # past its end a wait for an event with no timeout would never end
            self.repo.end_endless_waits(campaign.id, now=now)
            if self.repo.active_count(campaign.id):
                continue
            if self.outbox.unfinished(campaign.id):
                continue
            campaign.status, campaign.finished_at = CampaignStatus.COMPLETED, now
            trail.record(campaign, actor="journeys", action="complete", changes={
                "status": {"from": "running", "to": "completed"},
                "entries": self.repo.entry_counts(campaign.id),
            })  # fmt: skip
            completed.append(campaign.id)
        return completed

    # -- reading -------------------------------------------------------------------------------

    def entries(
        self, campaign: Campaign, *, customer_id: int | None, limit: int, offset: int
    ) -> Sequence[JourneyEntry]:
        _triggered(campaign)
        return self.repo.entries(campaign.id, customer_id=customer_id, limit=limit, offset=offset)

    def steps_of(self, entry: JourneyEntry) -> Sequence[JourneyStep]:
        """The entry's log of steps carried out, in the order they ran."""
        return self.repo.steps_of(entry.id)

    def report(self, campaign: Campaign) -> dict[str, Any]:
        """Per step, what its entries did, and how many are at each step now."""
        _triggered(campaign)
        _, journey = plan_of(campaign)
        counts = self.repo.step_counts(campaign.id)
        steps: list[dict[str, Any]] = []
        for step in journey.steps:
            outcomes: dict[str, int] = {}
            for key, bucket in counts.items():
                if key == step.id or key.startswith((f"{step.id}#", f"{step.id}/")):
                    for outcome, n in bucket.items():
                        name = outcome if not key.startswith(f"{step.id}/") else f"end {outcome}"
                        outcomes[name] = outcomes.get(name, 0) + n
            steps.append({"id": step.id, "type": step.type, "outcomes": outcomes})
        return {
            "entries": self.repo.entry_counts(campaign.id),
            "at_step": self.repo.waiting_at(campaign.id),
            "steps": steps,
            "goal": counts.get(GOAL_LOG, {}),
        }


GAP_SECONDS = 600
"""How long an id missing below a cursor is looked for: longer than any transaction that
writes events or orders should take."""
_MAX_GAPS = 20_000
"""Gaps kept at most: several API processes each writing a batch of up to 1,000 events
(ids drawn at once, committed in any order) leave thousands of ids missing for a moment."""


def _read(
    cursor: TriggerCursor, after: Any, by_ids: Any, *, now: datetime, limit: int
) -> list[Any]:
    """The rows after the cursor, and rows that filled its gaps since; moves the cursor."""
    gaps: dict[str, str] = dict(cursor.gaps or {})
    late = list(by_ids([int(i) for i in gaps])) if gaps else []
    rows = list(after(cursor.position, limit=limit))
    for row in late:
        gaps.pop(str(row.id), None)
    if rows:
        seen = {int(r.id) for r in rows}
        missing = [i for i in range(cursor.position + 1, int(rows[-1].id)) if i not in seen]
        # a huge rollback must not make the cursor heavy: the newest gaps are kept
        gaps |= {str(i): now.isoformat() for i in missing[-_MAX_GAPS:]}
        cursor.position = int(rows[-1].id)
    horizon = now - timedelta(seconds=GAP_SECONDS)
    gaps = {i: t for i, t in gaps.items() if datetime.fromisoformat(t) > horizon}
    if len(gaps) > _MAX_GAPS:
        gaps = dict(sorted(gaps.items(), key=lambda item: int(item[0]))[-_MAX_GAPS:])
    if gaps != (cursor.gaps or {}) or rows:
        cursor.gaps, cursor.updated_at = gaps, now
    return late + rows


def _triggered(campaign: Campaign) -> None:
    if not campaign.trigger:
        raise InvalidInput(f"campaign {campaign.id} is not triggered: it has no journey")


def _row(ref: str) -> str:
    """The table row a fact comes from: a first purchase is its order's row."""
    kind, _, rest = ref.partition(":")
    return f"order:{rest}" if kind == "first" else ref


def _delivered(message: Message) -> bool:
    """Delivered as far as we can know: the provider said so, or the customer opened it."""
    return any(t is not None for t in (message.delivered_at, message.read_at, message.opened_at))


def _compare(value: Any, op: str, expected: Any) -> bool:
    if value is None:
        return False
    try:
        if isinstance(expected, int | float) and not isinstance(expected, bool):
            return bool(_OPS[op](float(value), float(expected)))
        return bool(_OPS[op](str(value), str(expected)))
    except (TypeError, ValueError):
        return False


def _ended(campaign: Campaign, now: datetime) -> bool:
    end = Schedule.model_validate(campaign.schedule).end_at
    return end is not None and now >= end


def _local_day(campaign: Campaign, moment: datetime) -> date:
    return moment.astimezone(ZoneInfo(Schedule.model_validate(campaign.schedule).timezone)).date()


def _plain(properties: dict[str, Any]) -> dict[str, Any]:
    plain: dict[str, Any] = json.loads(json.dumps(properties, default=str))
    return plain


__all__ = ["Fact", "JourneyService", "PassTally", "Step", "check_plan", "plan_of"]
