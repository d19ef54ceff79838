"""Dispatch logic: write a wave to the outbox, render claimed messages, settle outcomes
(retries with exponential backoff, failures parked with their reason, hard bounces
suppressed), release mass waves, complete campaigns, and take feedback. No commits here:
the worker loop (:mod:`patron.dispatch.tasks`) and the HTTP boundary commit."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError
from sqlalchemy.orm import Session

from patron.campaigns.repository import ADDRESS_KIND, CampaignRepository
from patron.campaigns.schemas import MessageTemplate, Offer, Schedule
from patron.campaigns.templates import render
from patron.channels.base import Envelope, Outcome
from patron.channels.email import message_key
from patron.channels.feedback import Feedback
from patron.customers.normalize import check_email
from patron.customers.repository import CustomerRepository
from patron.customers.schemas import PROFILE_FIELDS, ConsentIn
from patron.customers.service import CustomerService
from patron.dispatch import links
from patron.dispatch.repository import DispatchRepository
from patron.dispatch.schemas import CallIn, CallList, CallTask, Lease
from patron.journeys.schemas import SendStep
from patron.journeys.service import plan_of
from patron.kit.clock import utcnow
from patron.kit.errors import InvalidInput, NotFound
from patron.kit.settings import Settings, get_settings
from patron.loyalty.coupons import CouponService, new_code
from patron.models import (
    OPEN_CALL,
    CallOutcome,
    CallResult,
    Campaign,
    CampaignStatus,
    Channel,
    ConsentStatus,
    Event,
    IdentityKind,
    Message,
    MessageStatus,
)
from patron.segments.schemas import SCORE_TYPES


@dataclass(frozen=True)
class Rendered:
    """What rendering a claim gave: envelopes to send and rows skipped with their reason."""

    envelopes: list[Envelope]
    skipped: dict[int, str]


class DispatchService:
    """The outbox on one session."""

    def __init__(self, session: Session, *, settings: Settings | None = None) -> None:
        self.session = session
        self.settings = settings or get_settings()
        self.repo = DispatchRepository(session)

    # -- writing -------------------------------------------------------------------------

    def enqueue(self, campaign: Campaign, *, wave: int, at: datetime | None = None) -> int:
        """Write the outbox rows of one wave of a campaign's treatment group; returns how
        many. A coupon offer gets its codes here, one per recipient."""
        kind = ADDRESS_KIND.get(campaign.channel)
        rows = self.repo.wave_recipients(campaign.id, wave, kind)
        if not rows:
            return 0
        offer = Offer.model_validate(campaign.offer)
        moment = at or utcnow()
        count = len(rows)
        coupons: list[str | None] = [None] * count
        if offer.kind == "coupon":
            coupons = [new_code(offer.coupon_prefix or "") for _ in range(count)]
            # the codes become single-use coupons of the campaign's pool, for the tills
            CouponService(self.session).issue_for_campaign(
                campaign.id, campaign.name, discount_percent=offer.discount_percent,
                valid_days=offer.valid_days, at=moment,
                pairs=[(c, code) for (c, _), code in zip(rows, coupons, strict=True) if code],
            )  # fmt: skip
        self.repo.enqueue(
            {
                "campaign_id": [campaign.id] * count,
                "customer_id": [c for c, _ in rows],
                "channel": [campaign.channel.value] * count,
                "wave": [wave] * count,
                "address": [a for _, a in rows],
                "coupon": coupons,
                "status": [MessageStatus.QUEUED.value] * count,
                "attempts": [0] * count,
                "next_attempt_at": [moment] * count,
                "step_key": [""] * count,
                "created_at": [moment] * count,
            }
        )
        return count

    def release(self, campaign: Campaign, *, at: datetime | None = None) -> int:
        """Send the mass wave after the test wave: the rows are written now."""
        if campaign.status is not CampaignStatus.RUNNING:
            raise InvalidInput(f"campaign {campaign.id} is {campaign.status.value}, not running")
        if 1 not in self.repo.pending_waves(campaign.id):
            raise InvalidInput(f"campaign {campaign.id} has no wave waiting for release")
        count = self.enqueue(campaign, wave=1, at=at)
        CampaignRepository(self.session).record(
            campaign, actor="dispatch", action="release", changes={"wave": 1, "messages": count}
        )
        return count

    # -- pausing -------------------------------------------------------------------------

    def hold(self, campaign: Campaign) -> int:
        """Park a paused campaign's queued messages; those already with the transport go."""
        return self.repo.move_status(campaign.id, MessageStatus.QUEUED, MessageStatus.HELD)

    def hold_claimed(self, ids: Sequence[int], *, lease: Lease | None = None) -> None:
        """Give back claimed messages of a paused campaign, without counting the attempt."""
        self.repo.mark(
            ids, lease=lease, status=MessageStatus.HELD, lease_until=None, worker=None,
            attempts=Message.attempts - 1,
        )  # fmt: skip

    def unhold(self, campaign: Campaign, *, now: datetime) -> int:
        """Queue a resumed campaign's parked messages again, due now."""
        return self.repo.move_status(
            campaign.id, MessageStatus.HELD, MessageStatus.QUEUED, next_attempt_at=now
        )

    def drop_held(self, campaign: Campaign, *, now: datetime) -> int:
        """A paused campaign cancelled: its parked messages are final, skipped with why."""
        return self.repo.move_status(
            campaign.id, MessageStatus.HELD, MessageStatus.SKIPPED, reason="campaign cancelled",
            lease_until=None,
        )  # fmt: skip

    # -- sending -------------------------------------------------------------------------

    def render(
        self, messages: Sequence[Message], *, now: datetime, lease: Lease | None = None
    ) -> Rendered:
        """Envelopes for claimed messages. A message that cannot go (no or malformed
        address, a template failing on this customer's data) is skipped with the reason;
        it never stops the others. Messages deferred or held are given back only while
        still under ``lease``, when one is given."""
        campaigns = self.repo.campaigns(sorted({m.campaign_id for m in messages}))
        people = [m.customer_id for m in messages]
        customers = self.repo.customers(people)
        contacts = self.repo.contacts(people)
        scores = self.repo.newest_scores(people, until=now)
        envelopes: list[Envelope] = []
        skipped: dict[int, str] = {}
        base, secret = self.settings.public_url, self.settings.secret_key
        templates = {c.id: MessageTemplate.model_validate(c.message) for c in campaigns.values()}
        offers = {
            c.id: Offer.model_validate(c.offer).model_dump(mode="json") for c in campaigns.values()
        }
        # a journey's message is its step's, with the fact that fired the entry (a cart)
        journeys = {c.id: plan_of(c)[1] for c in campaigns.values() if c.trigger}
        fired = self.repo.entry_contexts([m.entry_id for m in messages if m.entry_id])
        # an unsubscribe or a bounce after the launch stops the messages still queued, and
        # so does consent withdrawn since the planning (by an import, a form, a reply)
        suppressed: set[tuple[int, str]] = set()
        consenting: set[tuple[int, str]] = set()
        for channel in {m.channel.value for m in messages}:
            suppressed |= {(c, channel) for c in self.repo.suppressed(people, channel)}
            consenting |= {(c, channel) for c in self.repo.consenting(people, channel, now=now)}
        held: list[int] = []
        deferred: dict[int, tuple[datetime, str]] = {}
        for message in messages:
            campaign = campaigns[message.campaign_id]
            template, offer = templates[campaign.id], offers[campaign.id]
            if message.step_key and campaign.id in journeys:
                step = journeys[campaign.id].step(message.step_key.split(":")[1].split("#")[0])
                if isinstance(step, SendStep):
                    template = step.message or template
                    offer = step.offer.model_dump(mode="json") if step.offer else offer
            address = message.address
            channel = message.channel
            if campaign.status is CampaignStatus.CANCELLED:
                skipped[message.id] = "campaign cancelled"
                continue
            if campaign.status is CampaignStatus.PAUSED:
                # claimed as the pause came in (or back from a retry): it waits with the rest
                held.append(message.id)
                continue
            if (message.customer_id, channel.value) in suppressed:
                skipped[message.id] = f"suppressed on {channel.value} since the launch"
                continue
            if (message.customer_id, channel.value) not in consenting:
                skipped[message.id] = f"no marketing consent on {channel.value} at send time"
                continue
            if not address:
                skipped[message.id] = f"no {channel.value} address"
                continue
            if channel is Channel.EMAIL:
                try:
                    check_email(address)
                except EmailNotValidError as exc:
                    skipped[message.id] = f"malformed address {address!r}: {exc}"
                    continue
            customer = customers[message.customer_id]
            if channel.value in self.settings.quiet_hours_channels:
                wake = self._quiet_until(customer.timezone, now)
                if wake is not None:
                    deferred[message.id] = wake
                    continue
            unsubscribe = links.unsubscribe_url(message.id, base=base, secret=secret)
            context = self._context(
                campaign, customer, contacts.get(message.customer_id, {}),
                scores.get(message.customer_id), offer=offer,
                coupon=message.coupon, unsubscribe=unsubscribe,
            )  # fmt: skip
            context["trigger"] = fired.get(message.entry_id or 0, {})
            try:
                body = render(template, context)
            except InvalidInput as exc:
                skipped[message.id] = f"template: {exc.message}"
                continue
            key = message_key(message.id, campaign_id=campaign.id, domain=_domain(template))
            if channel is not Channel.EMAIL:
                # a text message carries its words only; opting out is a reply (STOP) or
                # the messenger's own block, which the feedback webhooks record
                envelopes.append(
                    Envelope(
                        message_id=message.id, key=key, to=address, sender=template.sender,
                        subject=body.subject, text=body.text, channel=channel,
                    )
                )  # fmt: skip
                continue
            envelopes.append(
                Envelope(
                    message_id=message.id,
                    key=key,
                    to=address,
                    sender=template.sender,
                    subject=body.subject,
                    text=f"{body.text}\n\nUnsubscribe: {unsubscribe}\n",
                    html=links.track_html(body.html, message.id, base=base, secret=secret),
                    headers=(
                        ("List-Unsubscribe", f"<{unsubscribe}>"),
                        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
                        ("X-Patron-Campaign", str(campaign.id)),
                    ),
                )
            )
        self.defer(deferred, lease=lease)
        self.hold_claimed(held, lease=lease)
        return Rendered(envelopes=envelopes, skipped=skipped)

    def _context(
        self,
        campaign: Campaign,
        customer: Any,
        contacts: dict[str, str],
        score: Any,
        *,
        offer: dict[str, Any],
        coupon: str | None,
        unsubscribe: str,
    ) -> dict[str, Any]:
        profile: dict[str, Any] = {field: getattr(customer, field) for field in PROFILE_FIELDS}
        profile |= {
            "id": customer.id,
            "full_name": customer.full_name,
            "email": contacts.get("email"),
            "phone": contacts.get("phone"),
            "attributes": dict(customer.attributes),
        }
        values: dict[str, Any] = dict.fromkeys(SCORE_TYPES)
        offers: list[dict[str, Any]] = []
        if score is not None:
            values = {field: getattr(score, field) for field in SCORE_TYPES}
            offers = list((score.offers or {}).get("items", []))
        return {
            "customer": profile,
            "scores": values,
            "offers": offers,
            "offer": offer,
            "coupon": coupon,
            "campaign": {"id": campaign.id, "name": campaign.name, "goal": campaign.goal},
            "unsubscribe_url": unsubscribe,
        }

    def _quiet_until(self, zone: str | None, now: datetime) -> tuple[datetime, str] | None:
        """When the customer's quiet hours end, if ``now`` falls inside them, with the
        zone read; None when a message may go now."""
        start, end = self.settings.quiet_hours_start, self.settings.quiet_hours_end
        if start == end:
            return None
        name = zone or self.settings.default_timezone
        try:
            tz = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            name = self.settings.default_timezone
            tz = ZoneInfo(name)
        local = now.astimezone(tz)
        quiet = (start <= local.hour or local.hour < end) if start > end else (
            start <= local.hour < end
        )  # fmt: skip
        if not quiet:
            return None
        wake = local.replace(hour=end, minute=0, second=0, microsecond=0)
        if wake <= local:
            wake += timedelta(days=1)
        return wake.astimezone(now.tzinfo), name

    def defer(
        self, deferred: dict[int, tuple[datetime, str]], *, lease: Lease | None = None
    ) -> None:
        """Give back claimed messages that must wait (quiet hours), due again at the given
        time, without counting the attempt; the reason says until when and in which zone."""
        for message_id, (until, zone) in deferred.items():
            local = until.astimezone(ZoneInfo(zone))
            self.repo.mark(
                [message_id], lease=lease, status=MessageStatus.QUEUED, lease_until=None,
                worker=None, attempts=Message.attempts - 1, next_attempt_at=until,
                reason=f"quiet hours: waits until {local:%Y-%m-%d %H:%M} {zone}",
            )  # fmt: skip

    def handed_over(
        self, envelopes: Sequence[Envelope], *, lease: Lease, now: datetime
    ) -> set[int]:
        """Mark messages sent before the transport releases them (see channels.base).
        Returns the ids the transport must not release after all: a later claim took them
        when this one's lease ran out, and sends them itself."""
        marked = self.repo.mark_sent(
            {e.message_id: e.subject[:500] for e in envelopes}, lease=lease, at=now
        )
        return {e.message_id for e in envelopes} - marked

    def settle(
        self,
        outcomes: Sequence[Outcome],
        skipped: dict[int, str],
        *,
        lease: Lease,
        handed: Collection[int] = (),
        now: datetime,
    ) -> dict[str, int]:
        """Record what the transport said: temporary failures wait (60 s, 120 s, 240 s...
        by default) until the attempts run out; permanent ones are parked with the reason;
        a hard bounce suppresses the customer on the channel at once.

        A message is this claim's to settle while it is under ``lease``, or once this
        claim has marked it sent (``handed``: the provider may still refuse it, with a
        429 or at SMTP's final dot); one a later claim has taken over is left to that
        claim. Returns how many messages ended sent, queued for a retry, failed, skipped
        and withdrawn (not sent: taken over)."""
        tally = {"sent": 0, "retry": 0, "failed": 0, "skipped": 0, "withdrawn": 0}
        for message_id, reason in skipped.items():
            tally["skipped"] += self.repo.mark(
                [message_id], lease=lease, status=MessageStatus.SKIPPED, lease_until=None,
                reason=reason,
            )  # fmt: skip
        tally["sent"] = sum(1 for o in outcomes if o.result == "sent")
        tally["withdrawn"] = sum(1 for o in outcomes if o.result == "withdrawn")
        self.repo.set_provider_refs(
            {o.message_id: o.provider_ref for o in outcomes if o.provider_ref is not None}
        )
        for o in outcomes:
            if o.result == "sent" and o.reason:
                # marked sent at the handover; the reason says what was odd (a lost reply)
                self.repo.mark([o.message_id], reason=o.reason)
        troubled = {o.message_id: o for o in outcomes if o.result in ("retry", "failed")}
        handed = set(handed)
        campaigns = CampaignRepository(self.session)
        for message in self.repo.messages(list(troubled)) if troubled else []:
            outcome = troubled[message.id]
            # each write is conditional, so that a claim taking over since the read wins
            ours: dict[str, Any] = (
                {"was": MessageStatus.SENT} if message.id in handed else {"lease": lease}
            )
            values: dict[str, Any] = {"lease_until": None, "reason": outcome.reason}
            if outcome.result == "retry" and message.attempts < self.settings.max_attempts:
                wait = self.settings.retry_base_seconds * 2 ** (message.attempts - 1)
                # a provider that asked for a longer pause (HTTP 429) gets it
                wait = max(wait, outcome.retry_after or 0)
                values |= {"status": MessageStatus.QUEUED,
                           "next_attempt_at": now + timedelta(seconds=wait)}  # fmt: skip
                tally["retry"] += self.repo.mark([message.id], **ours, **values)
                continue
            values |= {"status": MessageStatus.FAILED, "sent_at": None}
            if outcome.result == "retry":
                values["reason"] = f"gave up after {message.attempts} attempts: {outcome.reason}"
            if outcome.hard_bounce:
                values["bounced_at"] = now
            if not self.repo.mark([message.id], **ours, **values):
                continue
            tally["failed"] += 1
            if outcome.hard_bounce:
                campaigns.suppress(message.customer_id, message.channel, reason="hard_bounce")
        return tally

    # -- housekeeping --------------------------------------------------------------------

    def housekeeping(self, *, now: datetime) -> list[int]:
        """Release mass waves whose review time has passed, and complete running
        campaigns whose every message is final; returns the campaigns completed."""
        completed: list[int] = []
        trail = CampaignRepository(self.session)
        for campaign in self.repo.running():
            if campaign.trigger:
                continue  # a triggered campaign ends with its trigger (patron.journeys)
            waiting = self.repo.pending_waves(campaign.id)
            if waiting:
                hours = Schedule.model_validate(campaign.schedule).test_review_hours
                launched = campaign.launched_at or now
                if (
                    0 not in waiting
                    and hours is not None
                    and now >= launched + timedelta(hours=hours)
                ):
                    self.release(campaign, at=now)
                continue
            if self.repo.unfinished(campaign.id) == 0:
                counts = self.repo.status_counts(campaign.id)
                campaign.status = CampaignStatus.COMPLETED
                campaign.finished_at = now
                trail.record(
                    campaign, actor="dispatch", action="complete",
                    changes={"status": {"from": "running", "to": "completed"}, "messages": counts},
                )  # fmt: skip
                completed.append(campaign.id)
        self.session.flush()
        return completed

    # -- feedback ------------------------------------------------------------------------

    def opened(self, message_id: int, *, now: datetime) -> None:
        message = self._message(message_id)
        if message.opened_at is None:
            message.opened_at = now

    def clicked(self, message_id: int, *, now: datetime) -> None:
        message = self._message(message_id)
        message.opened_at = message.opened_at or now  # a click proves the open
        if message.clicked_at is None:
            message.clicked_at = now

    def unsubscribed(self, message_id: int, *, now: datetime) -> None:
        """Withdraw the marketing consent for the channel and suppress, at once."""
        message = self._message(message_id)
        if message.unsubscribed_at is None:
            message.unsubscribed_at = now
        CustomerService(self.session).record_consent(
            message.customer_id,
            ConsentIn(channel=message.channel, status=ConsentStatus.WITHDRAWN, decided_at=now),
            source="unsubscribe",
        )
        CampaignRepository(self.session).suppress(
            message.customer_id, message.channel, reason="unsubscribed"
        )

    def complained(self, message_id: int, *, now: datetime) -> None:
        """A spam complaint: treated as an unsubscribe, and counted apart. A campaign whose
        complaints pass the set share of its sent messages is paused at once."""
        message = self._message(message_id)
        first = message.complained_at is None
        message.complained_at = message.complained_at or now
        self.unsubscribed(message_id, now=now)
        if first:
            self.session.flush()
            self._complaint_guard(message.campaign_id)

    def _complaint_guard(self, campaign_id: int) -> None:
        sent, complaints = self.repo.complaint_counts(campaign_id)
        limit = self.settings.complaint_rate_limit
        if sent < self.settings.complaint_min_sent or complaints <= limit * sent:
            return
        campaign = self.repo.campaigns([campaign_id])[campaign_id]
        if campaign.status is not CampaignStatus.RUNNING:
            return
        # campaigns sit above dispatch (they write the outbox); imported here, at the one
        # place dispatch needs to act on a campaign's state
        from patron.campaigns.service import CampaignService

        CampaignService(self.session).pause(
            campaign_id, actor="complaint-guard",
            reason=f"{complaints} complaints on {sent} sent messages "
            f"({complaints / sent:.2%}) passed the limit of {limit:.2%}",
        )  # fmt: skip

    def bounced(self, message_id: int, *, now: datetime, hard: bool) -> None:
        """A bounce reported after delivery (a DSN or a provider's webhook)."""
        message = self._message(message_id)
        message.bounced_at = message.bounced_at or now
        if hard:
            CampaignRepository(self.session).suppress(
                message.customer_id, message.channel, reason="hard_bounce"
            )

    def record_feedback(self, items: Sequence[Feedback], *, now: datetime) -> dict[str, int]:
        """What providers reported, in the neutral form of :mod:`patron.channels.feedback`:
        delivery and read receipts and late failures stamped on the message they name;
        replies recorded as events on the customer's timeline (``message.inbound``), and
        a stop word or the provider's opt-out withdraws the consent on that channel and
        suppresses it at once. A report naming no message we know, or a reply from an
        address no profile holds, is kept as far as it can be and counted as unmatched.
        Returns counts by what was done."""
        tally = {"delivered": 0, "read": 0, "failed": 0, "inbound": 0, "opt_out": 0,
                 "unmatched": 0}  # fmt: skip
        for item in items:
            if item.kind in ("delivered", "read", "failed"):
                message = self.repo.by_provider_ref(item.provider_ref or "")
                if message is None:
                    tally["unmatched"] += 1
                    continue
                self._receipt(message, item, now=now)
                tally[item.kind] += 1
                continue
            customer = self._sender(item)
            if customer is None:
                tally["unmatched"] += 1
            self.repo.add_event(
                Event(
                    customer_id=customer, type=f"message.{item.kind}", occurred_at=item.at,
                    properties={"channel": item.channel.value, "from": item.from_address,
                                "text": item.text},
                    source=item.channel.value,
                )
            )  # fmt: skip
            tally[item.kind] += 1
            if item.kind == "opt_out" and customer is not None:
                CustomerService(self.session).record_consent(
                    customer,
                    ConsentIn(channel=item.channel, status=ConsentStatus.WITHDRAWN,
                              decided_at=item.at),
                    source=f"{item.channel.value} reply",
                )  # fmt: skip
                CampaignRepository(self.session).suppress(
                    customer, item.channel, reason="opted out by reply"
                )
        return tally

    def _receipt(self, message: Message, item: Feedback, *, now: datetime) -> None:
        if item.kind == "delivered":
            message.delivered_at = message.delivered_at or item.at
        elif item.kind == "read":
            message.delivered_at = message.delivered_at or item.at
            message.read_at = message.read_at or item.at
            # a read receipt is the messenger's open
            message.opened_at = message.opened_at or item.at
        else:
            message.status = MessageStatus.FAILED
            message.reason = f"the provider reported it undelivered: {item.reason or 'no reason'}"
            message.bounced_at = message.bounced_at or item.at
            if item.hard:
                CampaignRepository(self.session).suppress(
                    message.customer_id, message.channel, reason="hard_bounce"
                )

    def _sender(self, item: Feedback) -> int | None:
        """The profile that holds the reply's address on its channel."""
        if not item.from_address:
            return None
        kind = IdentityKind.TELEGRAM if item.channel is Channel.TELEGRAM else IdentityKind.PHONE
        key = (kind, "", item.from_address)
        return CustomerRepository(self.session).owners([key]).get(key)

    # -- the call list -------------------------------------------------------------------

    def call_list(
        self, campaign_id: int, *, open_only: bool, limit: int, offset: int, now: datetime
    ) -> CallList:
        """A campaign's phone messages as operators' tasks, with the script rendered for
        each customer; ``open_only`` keeps those not called yet or to be called again."""
        campaign = self.repo.campaigns([campaign_id]).get(campaign_id)
        if campaign is None:
            raise NotFound(f"campaign {campaign_id} not found")
        messages = self.repo.call_messages(campaign_id)
        results = self.repo.call_results([m.id for m in messages])
        outcomes: dict[str, int] = {}
        wanted: list[Message] = []
        for message in messages:
            tried = results.get(message.id, [])
            latest = tried[-1].outcome.value if tried else "not_called"
            outcomes[latest] = outcomes.get(latest, 0) + 1
            if not open_only or not tried or tried[-1].outcome in OPEN_CALL:
                wanted.append(message)
        page = wanted[offset : offset + limit]
        people = [m.customer_id for m in page]
        customers = self.repo.customers(people)
        contacts = self.repo.contacts(people)
        scores = self.repo.newest_scores(people, until=now)
        template = MessageTemplate.model_validate(campaign.message)
        offer = Offer.model_validate(campaign.offer).model_dump(mode="json")
        tasks: list[CallTask] = []
        for message in page:
            customer, score = customers[message.customer_id], scores.get(message.customer_id)
            context = self._context(
                campaign, customer, contacts.get(message.customer_id, {}), score, offer=offer,
                coupon=message.coupon, unsubscribe="",
            )  # fmt: skip
            tried = results.get(message.id, [])
            tasks.append(
                CallTask(
                    message_id=message.id, customer_id=message.customer_id,
                    name=customer.full_name, phone=message.address or "",
                    script=render(template, context).text,
                    rfm_segment=score.rfm_segment if score else None,
                    clv=score.clv if score else None,
                    churn_risk=score.churn_risk if score else None,
                    offers=[str(o["item"]) for o in context["offers"][:3]],
                    calls=len(tried),
                    last_outcome=tried[-1].outcome if tried else None,
                    call_back_at=tried[-1].call_back_at if tried else None,
                )
            )  # fmt: skip
        return CallList(campaign_id=campaign_id, outcomes=outcomes, tasks=tasks)

    def record_call(
        self, message_id: int, call: CallIn, *, actor: str, now: datetime
    ) -> CallResult:
        """An operator's call: kept with the earlier ones, put on the customer's timeline
        (``call.outcome``) and on the message, where the campaign's report counts it: a
        conversation is the call's open, interest its click; a wrong number suppresses the
        phone channel for the customer."""
        message = self._message(message_id)
        if message.channel is not Channel.PHONE or message.status is not MessageStatus.SENT:
            raise InvalidInput(
                f"message {message_id} is not on a call list (a {message.channel.value} "
                f"message, {message.status.value})"
            )
        result = self.repo.add_call_result(
            CallResult(
                message_id=message.id, outcome=call.outcome, note=call.note,
                call_back_at=call.call_back_at, recorded_by=actor, recorded_at=now,
            )
        )  # fmt: skip
        self.repo.add_event(
            Event(
                customer_id=message.customer_id, type="call.outcome", occurred_at=now,
                properties={"campaign": message.campaign_id, "message": message.id,
                            "outcome": call.outcome.value, "note": call.note,
                            "operator": actor},
                source="call-centre",
            )
        )  # fmt: skip
        if call.outcome in (CallOutcome.REACHED, CallOutcome.INTERESTED, CallOutcome.DECLINED):
            message.opened_at = message.opened_at or now
        if call.outcome is CallOutcome.INTERESTED:
            message.clicked_at = message.clicked_at or now
        if call.outcome is CallOutcome.WRONG_NUMBER:
            message.bounced_at = message.bounced_at or now
            CampaignRepository(self.session).suppress(
                message.customer_id, Channel.PHONE, reason="wrong number"
            )
        return result

    def _message(self, message_id: int) -> Message:
        found = self.repo.messages([message_id])
        if not found:
            raise NotFound(f"message {message_id} not found")
        return found[0]


def _domain(template: MessageTemplate) -> str:
    _, _, domain = template.sender.rpartition("@")
    return domain.rstrip(">").strip() or "patron.local"
