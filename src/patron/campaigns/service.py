"""Campaign logic: plan, change, schedule, launch (freezing the audience), cancel; preview
messages; keep the audit trail. It never commits; the request or task boundary does."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy.orm import Session

from patron.analytics.service import AnalyticsService
from patron.campaigns.groups import control_mask, first_wave_mask
from patron.campaigns.repository import REASONS, CampaignRepository
from patron.campaigns.schemas import (
    CampaignIn,
    CampaignUpdate,
    MessageTemplate,
    Offer,
    Schedule,
)
from patron.campaigns.templates import Rendered, check, render
from patron.customers.schemas import PROFILE_FIELDS
from patron.customers.service import CustomerService
from patron.dispatch.service import DispatchService
from patron.journeys.schemas import SegmentTrigger, single_send
from patron.journeys.service import JourneyService, check_plan, plan_of
from patron.kit.clock import utcnow
from patron.kit.errors import Conflict, InvalidInput, NotFound
from patron.kit.settings import get_settings
from patron.models import (
    Campaign,
    CampaignChange,
    CampaignRecipient,
    CampaignStatus,
    RecipientGroup,
)
from patron.segments.schemas import SCORE_TYPES, ConsentCondition
from patron.segments.service import SegmentService

TRANSITIONS: dict[str, tuple[frozenset[CampaignStatus], CampaignStatus]] = {
    "schedule": (frozenset({CampaignStatus.DRAFT}), CampaignStatus.SCHEDULED),
    "launch": (
        frozenset({CampaignStatus.DRAFT, CampaignStatus.SCHEDULED}),
        CampaignStatus.RUNNING,
    ),
    "pause": (frozenset({CampaignStatus.RUNNING}), CampaignStatus.PAUSED),
    "resume": (frozenset({CampaignStatus.PAUSED}), CampaignStatus.RUNNING),
    "cancel": (
        frozenset(
            {
                CampaignStatus.DRAFT,
                CampaignStatus.SCHEDULED,
                CampaignStatus.RUNNING,
                CampaignStatus.PAUSED,
            }
        ),
        CampaignStatus.CANCELLED,
    ),
}
"""Which states each action leaves from, and where it goes. Completion is not an action a
person takes: a campaign completes when every message has a final state."""

_EDITABLE = frozenset({CampaignStatus.DRAFT, CampaignStatus.SCHEDULED})


class CampaignService:
    """Campaigns on one session."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.repo = CampaignRepository(session)
        self.segments = SegmentService(session)

    # -- the plan ----------------------------------------------------------------------------

    def create(self, plan: CampaignIn, *, actor: str) -> Campaign:
        """Save a draft plan; its segment must exist and its templates must check."""
        if self.repo.by_name(plan.name) is not None:
            raise Conflict(f"a campaign named {plan.name!r} exists already")
        segment = self.segments.find(plan.segment)
        check(plan.message, plan.channel)
        if plan.trigger is not None:
            journey = plan.journey or single_send(plan.channel)
            check_plan(plan.trigger, journey, message=plan.message, channel=plan.channel)
            if isinstance(plan.trigger.on, SegmentTrigger):
                self.segments.find(plan.trigger.on.segment)
        campaign = self.repo.add(
            Campaign(
                name=plan.name,
                goal=plan.goal,
                kind=plan.kind,
                content_type=plan.content_type,
                segment_id=segment.id,
                channel=plan.channel,
                offer=plan.offer.model_dump(mode="json"),
                message=plan.message.model_dump(mode="json"),
                schedule=plan.schedule.model_dump(mode="json"),
                budget=plan.budget,
                currency=plan.currency or get_settings().default_currency,
                kpi=plan.kpi.model_dump(mode="json"),
                control_share=plan.control_share,
                test_share=plan.test_share,
                attribution_days=plan.attribution_days,
                cost_per_message=plan.cost_per_message,
                margin_rate=plan.margin_rate,
                trigger=plan.trigger.model_dump(mode="json") if plan.trigger else None,
                journey=plan.journey.model_dump(mode="json") if plan.journey else None,
                created_by=actor,
            )
        )

        self.repo.record(
            campaign, actor=actor, action="created", changes=plan.model_dump(mode="json")
        )
        return campaign

    def update(self, campaign_id: int, changes: CampaignUpdate, *, actor: str) -> Campaign:
        """Change a plan that has not launched; the trail keeps each field's old and new value."""
        campaign = self.get(campaign_id)
        if campaign.status not in _EDITABLE:
            raise Conflict(f"campaign {campaign.id} is {campaign.status.value}: its plan is fixed")
        given = changes.model_dump(mode="json", exclude_unset=True)
        diff: dict[str, Any] = {}
        for field, value in given.items():
            if field == "segment":
                segment = self.segments.find(value)
                old, new, target, stored = campaign.segment_id, segment.id, "segment_id", segment.id
            else:
                raw = getattr(changes, field)
                stored = raw if field in ("budget", "cost_per_message", "margin_rate") else value
                if field == "message":
                    check(
                        MessageTemplate.model_validate(value), changes.channel or campaign.channel
                    )
                old, new, target = _plain(getattr(campaign, field)), value, field
            if old != new:
                diff[target] = {"from": old, "to": new}
                setattr(campaign, target, stored)
        if campaign.trigger:
            spec, journey = plan_of(campaign)
            check_plan(spec, journey, message=MessageTemplate.model_validate(campaign.message),
                       channel=campaign.channel)  # fmt: skip
        elif campaign.journey:
            raise InvalidInput("a journey needs a 'trigger' to admit customers to it")
        if diff:
            campaign.updated_at = utcnow()
            self.repo.record(campaign, actor=actor, action="updated", changes=diff)
        self.session.flush()
        return campaign

    def get(self, campaign_id: int) -> Campaign:
        campaign = self.repo.get(campaign_id)
        if campaign is None:
            raise NotFound(f"campaign {campaign_id} not found")
        return campaign

    def find(self, name_or_id: str) -> Campaign:
        """A campaign by name, or by id when given digits that name none."""
        campaign = self.repo.by_name(name_or_id)
        if campaign is None and name_or_id.isdigit():
            campaign = self.repo.get(int(name_or_id))
        if campaign is None:
            raise NotFound(f"campaign {name_or_id!r} not found")
        return campaign

    def listing(
        self, *, status: CampaignStatus | None = None, limit: int = 50, offset: int = 0
    ) -> Sequence[Campaign]:
        return self.repo.listing(
            status=status.value if status else None, limit=limit, offset=offset
        )

    def trail(self, campaign: Campaign) -> Sequence[CampaignChange]:
        return self.repo.trail(campaign.id)

    # -- state -------------------------------------------------------------------------------

    def schedule(self, campaign_id: int, *, actor: str) -> Campaign:
        """Approve a draft to run on its schedule: the plan is checked once more."""
        campaign = self.get(campaign_id)
        check(MessageTemplate.model_validate(campaign.message), campaign.channel)
        when = Schedule.model_validate(campaign.schedule).runs(after=utcnow(), count=1)
        if not when:
            raise InvalidInput(f"campaign {campaign.id}'s schedule has no time left to run")
        campaign.next_run_at = when[0]
        self._move(campaign, "schedule", actor=actor, changes={"next_run": when[0].isoformat()})
        return campaign

    def cancel(self, campaign_id: int, *, actor: str, reason: str = "") -> Campaign:
        """Stop a campaign; a running one keeps its frozen audience for the record, and its
        messages not yet sent are skipped with the reason."""
        campaign = self.get(campaign_id)
        was = campaign.status
        self._move(campaign, "cancel", actor=actor, changes={"reason": reason})
        now = utcnow()
        campaign.finished_at = now
        campaign.next_run_at = None
        if was is CampaignStatus.PAUSED:
            DispatchService(self.session).drop_held(campaign, now=now)
        return campaign

    def pause(self, campaign_id: int, *, actor: str, reason: str = "") -> Campaign:
        """Stop sending a running campaign for now: its queued messages wait, and those
        already handed to a transport go. Nothing is decided again on resume."""
        campaign = self.get(campaign_id)
        self._move(campaign, "pause", actor=actor, changes={"reason": reason})
        held = DispatchService(self.session).hold(campaign)
        self.repo.record(campaign, actor=actor, action="hold", changes={"messages": held})
        return campaign

    def resume(self, campaign_id: int, *, actor: str) -> Campaign:
        """Send a paused campaign's waiting messages."""
        campaign = self.get(campaign_id)
        self._move(campaign, "resume", actor=actor, changes={})
        queued = DispatchService(self.session).unhold(campaign, now=utcnow())
        self.repo.record(campaign, actor=actor, action="requeue", changes={"messages": queued})
        return campaign

    # -- the scheduler ---------------------------------------------------------------------

    def due(self, *, now: datetime) -> list[int]:
        """Scheduled campaigns whose run time has come."""
        return self.repo.due(now=now)

    def run_due(self, campaign_id: int, *, now: datetime) -> Campaign | None:
        """Start one due run: a one-off campaign launches itself; a recurring one launches
        a copy of its plan as a run of its own (own audience, control group and report),
        and waits for its next cron time, or completes when none is left.

        Returns the campaign launched, or None when another scheduler took the run or the
        launch found no one to send to (the reason is on the trail)."""
        campaign = self.get(campaign_id)
        expected = campaign.next_run_at
        if campaign.status is not CampaignStatus.SCHEDULED or expected is None:
            return None
        plan = Schedule.model_validate(campaign.schedule)
        following = None
        if plan.recurring:
            later = plan.runs(after=max(now, expected) + timedelta(seconds=1), count=1)
            following = later[0] if later else None
        if not self.repo.take_run(campaign.id, expected=expected, following=following):
            return None
        self.session.refresh(campaign)
        target = self._run_of(campaign, expected) if plan.recurring else campaign
        try:
            # launch refuses before it writes anything, so the run and the trail stay
            launched = self.launch(target.id, actor="scheduler", at=now)
        except InvalidInput as exc:
            # a run with no one to send to is a fact for the marketer, not a crash
            if target is not campaign:
                self._move(target, "cancel", actor="scheduler", changes={"reason": exc.message})
                target.finished_at = now
            else:
                self._move(
                    campaign, "cancel", actor="scheduler",
                    changes={"reason": f"launch failed: {exc.message}"},
                )  # fmt: skip
                campaign.finished_at = now
            launched = None
        if plan.recurring and following is None and campaign.status is CampaignStatus.SCHEDULED:
            campaign.status = CampaignStatus.COMPLETED
            campaign.finished_at = now
            self.repo.record(
                campaign, actor="scheduler", action="complete",
                changes={"status": {"from": "scheduled", "to": "completed"},
                         "runs": len(self.repo.runs_of(campaign.id))},
            )  # fmt: skip
        self.session.flush()
        return launched

    def runs(self, campaign: Campaign) -> Sequence[Campaign]:
        return self.repo.runs_of(campaign.id)

    def _run_of(self, parent: Campaign, at: datetime) -> Campaign:
        """A recurring campaign's run at ``at``: its plan, sent once, named by its time."""
        zone = ZoneInfo(Schedule.model_validate(parent.schedule).timezone)
        label = f" · {at.astimezone(zone):%Y-%m-%d %H:%M}"
        schedule = Schedule.model_validate(parent.schedule).model_copy(
            update={"cron": None, "start_at": at, "end_at": None}
        )
        run = self.repo.add(
            Campaign(
                name=parent.name[: 160 - len(label)] + label,
                goal=parent.goal, kind=parent.kind, content_type=parent.content_type,
                segment_id=parent.segment_id, channel=parent.channel, offer=parent.offer,
                message=parent.message, schedule=schedule.model_dump(mode="json"),
                budget=parent.budget, currency=parent.currency, kpi=parent.kpi,
                control_share=parent.control_share, test_share=parent.test_share,
                attribution_days=parent.attribution_days,
                cost_per_message=parent.cost_per_message, margin_rate=parent.margin_rate,
                created_by="scheduler", parent_id=parent.id,
            )
        )  # fmt: skip
        self.repo.record(
            run, actor="scheduler", action="created",
            changes={"run_of": parent.id, "at": at.isoformat()},
        )  # fmt: skip
        self.repo.record(
            parent, actor="scheduler", action="run",
            changes={"run": run.id, "at": at.isoformat()},
        )  # fmt: skip
        return run

    def launch(self, campaign_id: int, *, actor: str, at: datetime | None = None) -> Campaign:
        """Freeze the audience and start the campaign.

        Every customer the segment selects now gets one row: left out with the first
        reason that applies (no address for the channel, no consent in force, suppressed,
        over the frequency cap), or held out as control by hashing, or treated; with a
        test share, treatment is split into the test wave (0) and the mass wave (1).
        Nothing is written when no one would be sent a message.
        """
        campaign = self.get(campaign_id)
        allowed, _ = TRANSITIONS["launch"]
        if campaign.status not in allowed:
            raise Conflict(f"campaign {campaign.id} is {campaign.status.value}: it cannot launch")
        if Schedule.model_validate(campaign.schedule).recurring:
            raise InvalidInput(
                f"campaign {campaign.id} is recurring: schedule it, and each run launches "
                "as a campaign of its own"
            )
        moment = at or utcnow()
        if campaign.trigger:
            return self._start_triggered(campaign, actor=actor, at=moment)
        message = MessageTemplate.model_validate(campaign.message)
        check(message, campaign.channel)
        segment = self.segments.get(campaign.segment_id)
        compiler = self.segments.repo.compiler(as_of=moment)
        selected = compiler.predicate(
            self.segments.rule_of(segment), where=f"segment {segment.name!r}"
        )
        consented = compiler.predicate(ConsentCondition(channel=campaign.channel))
        settings = get_settings()
        screened = self.repo.screen(
            selected,
            channel=campaign.channel,
            consented=consented,
            cap_messages=settings.frequency_cap_messages,
            cap_since=moment - timedelta(days=settings.frequency_cap_days),
            cap_all_channels=settings.frequency_cap_all_channels,
        )
        counts = dict.fromkeys(REASONS, 0)
        for _, reason in screened:
            if reason is not None:
                counts[reason] += 1
        if not screened:
            raise InvalidInput(
                f"campaign {campaign.id}: segment {segment.name!r} selects no one: nothing sent"
            )
        if all(reason is not None for _, reason in screened):
            worst = max(counts, key=lambda r: counts[r])
            raise InvalidInput(
                f"campaign {campaign.id}: all {len(screened):,} customers of segment "
                f"{segment.name!r} are left out ({_reasons(counts)}; mostly {worst} for "
                f"{campaign.channel.value}): nothing sent"
            )
        self._freeze(campaign, screened, moment)
        groups = self.repo.group_counts(campaign.id)
        campaign.audience = {
            "selected": len(screened),
            "excluded": counts,
            "control": sum(n for (g, _, _), n in groups.items() if g == RecipientGroup.CONTROL),
            "treatment": sum(n for (g, _, _), n in groups.items() if g == RecipientGroup.TREATMENT),
            "test_wave": groups.get((RecipientGroup.TREATMENT.value, 0, None), 0),
        }
        campaign.launched_at = moment
        # the messages are decided here, so they are written in this same transaction
        first_wave = 0 if campaign.test_share else 1
        queued = DispatchService(self.session).enqueue(campaign, wave=first_wave, at=moment)
        self._move(
            campaign, "launch", actor=actor,
            changes={"audience": campaign.audience, "queued": queued, "wave": first_wave},
        )  # fmt: skip
        return campaign

    def _start_triggered(self, campaign: Campaign, *, actor: str, at: datetime) -> Campaign:
        """A triggered campaign starts admitting: nothing is frozen or queued now; the
        trigger runner admits customers from this moment on, each with their own entry."""
        campaign.trigger_state = JourneyService(self.session).start_state(campaign, at=at)
        campaign.launched_at = at
        campaign.audience = {"triggered": True}
        self._move(campaign, "launch", actor=actor, changes={"trigger": campaign.trigger})
        return campaign

    def _freeze(
        self, campaign: Campaign, screened: list[tuple[int, str | None]], moment: datetime
    ) -> None:
        ids = np.fromiter((c for c, _ in screened), dtype=np.int64, count=len(screened))
        reasons = [r for _, r in screened]
        eligible = np.array([r is None for r in reasons], dtype=bool)
        control = eligible & control_mask(
            ids, campaign_id=campaign.id, share=campaign.control_share
        )
        treated = eligible & ~control
        wave: list[int | None] = [None] * len(ids)
        if campaign.test_share:
            first = first_wave_mask(ids, campaign_id=campaign.id, share=campaign.test_share)
            wave = [(0 if f else 1) if t else None for t, f in zip(treated, first, strict=True)]
        else:
            wave = [1 if t else None for t in treated]
        group = np.where(
            control, RecipientGroup.CONTROL.value,
            np.where(treated, RecipientGroup.TREATMENT.value, RecipientGroup.EXCLUDED.value),
        )  # fmt: skip
        self.repo.freeze(
            campaign.id,
            {
                "campaign_id": [campaign.id] * len(ids),
                "customer_id": ids.tolist(),
                "group": group.tolist(),
                "wave": wave,
                "reason": reasons,
                "frozen_at": [moment] * len(ids),
            },
        )

    def _move(
        self, campaign: Campaign, action: str, *, actor: str, changes: dict[str, Any]
    ) -> None:
        allowed, target = TRANSITIONS[action]
        if campaign.status not in allowed:
            raise Conflict(f"campaign {campaign.id} is {campaign.status.value}: it cannot {action}")
        changes = {"status": {"from": campaign.status.value, "to": target.value}, **changes}
        campaign.status = target
        campaign.updated_at = utcnow()
        self.repo.record(campaign, actor=actor, action=action, changes=changes)
        self.session.flush()

    # -- messages ----------------------------------------------------------------------------

    def recipients(
        self, campaign: Campaign, *, group: RecipientGroup | None = None, limit: int = 50,
        offset: int = 0,
    ) -> Sequence[CampaignRecipient]:  # fmt: skip
        return self.repo.recipients(
            campaign.id, group=group.value if group else None, limit=limit, offset=offset
        )

    def preview(self, campaign: Campaign, customer_id: int) -> Rendered:
        """The message as this customer would get it (with a sample coupon code)."""
        context = self.context(campaign, customer_id, coupon="PREVIEW-0000")
        return render(MessageTemplate.model_validate(campaign.message), context)

    def context(self, campaign: Campaign, customer_id: int, *, coupon: str) -> dict[str, Any]:
        """What a template sees for one customer: profile, contacts, newest scores and
        recommended offers, the campaign's offer and the coupon."""
        customers = CustomerService(self.session)
        person = customers.get_active(customer_id)
        contacts: dict[str, str] = {}
        for identity in sorted(customers.repo.identities_of(customer_id), key=lambda i: i.value):
            contacts.setdefault(identity.kind.value, identity.value)
        profile: dict[str, Any] = {field: getattr(person, field) for field in PROFILE_FIELDS}
        profile |= {
            "id": person.id,
            "full_name": person.full_name,
            "email": contacts.get("email"),
            "phone": contacts.get("phone"),
            "attributes": dict(person.attributes),
        }
        newest = AnalyticsService(self.session).scores_of(customer_id, limit=1)
        scores: dict[str, Any] = dict.fromkeys(SCORE_TYPES)
        offers: list[dict[str, Any]] = []
        if newest:
            score = newest[0]
            scores = {field: getattr(score, field) for field in SCORE_TYPES}
            offers = list((score.offers or {}).get("items", []))
        return {
            "customer": profile,
            "scores": scores,
            "offers": offers,
            "offer": Offer.model_validate(campaign.offer).model_dump(mode="json"),
            "coupon": coupon,
            "campaign": {"id": campaign.id, "name": campaign.name, "goal": campaign.goal},
            "unsubscribe_url": "",
            "trigger": {},
        }


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason} {n:,}" for reason, n in counts.items() if n)


def _plain(value: Any) -> Any:
    # the trail is JSON: enums as their values, money as text
    if isinstance(value, Decimal):
        return str(value)
    return getattr(value, "value", value)
