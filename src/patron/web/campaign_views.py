"""Campaign pages: the list, the planner (the eight questions, one step at a time, with a
live preview for a chosen customer), one campaign with its launch, pause and cancel, its
report against the control group, and a triggered campaign's journey."""

from __future__ import annotations

from typing import Annotated, Any, get_args

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError

from patron.api.deps import ROLE_PERMISSIONS, Permission
from patron.api.errors import validation_body
from patron.campaigns.schemas import CampaignIn, KpiMetric
from patron.campaigns.service import CampaignService
from patron.campaigns.templates import render
from patron.dispatch.repository import DispatchRepository
from patron.journeys.service import JourneyService
from patron.kit.errors import InvalidInput, PatronError
from patron.measure.service import MeasureService
from patron.models import Campaign, CampaignKind, Channel, ContentType
from patron.models.message import FINAL
from patron.segments.service import SegmentService
from patron.web.service import WebService, Who
from patron.web.views import SessionDep, _check_csrf, _page, needs, router

Viewer = Annotated[Who, Depends(needs(Permission.READ_CAMPAIGNS))]
Planner = Annotated[Who, Depends(needs(Permission.WRITE_CAMPAIGNS))]
Launcher = Annotated[Who, Depends(needs(Permission.LAUNCH_CAMPAIGNS))]

KPI_METRICS = list(get_args(KpiMetric))
_FINAL = {s.value for s in FINAL}


def _choices(session: Any) -> dict[str, Any]:
    return {
        "kinds": [k.value for k in CampaignKind],
        "content_types": [c.value for c in ContentType],
        "channels": [c.value for c in Channel],
        "segments": [s.name for s in SegmentService(session).listing(limit=500)],
        "metrics": KPI_METRICS,
    }


def _plan(form: dict[str, str]) -> CampaignIn:
    """The plan from the planner's fields; an error names the field as the form labels it."""
    offer: dict[str, Any] = {"kind": form.get("offer_kind") or "none"}
    for field in ("discount_percent", "points", "coupon_prefix", "gift", "cost"):
        if form.get(field):
            offer[field] = form[field]
    schedule: dict[str, Any] = {"timezone": form.get("timezone") or "Europe/Moscow"}
    if form.get("start_at"):
        schedule["start_at"] = form["start_at"]
    data: dict[str, Any] = {
        "name": form.get("name", ""),
        "goal": form.get("goal", ""),
        "kind": form.get("kind", ""),
        "content_type": form.get("content_type", ""),
        "segment": form.get("segment", ""),
        "channel": form.get("channel") or "email",
        "offer": offer,
        "schedule": schedule,
        "message": {
            "subject": form.get("subject", ""),
            "html": form.get("html", ""),
            "text": form.get("text", ""),
        },
        "budget": form.get("budget") or "0",
        "currency": form.get("currency") or None,
        "kpi": {"metric": form.get("kpi_metric", ""), "expected": form.get("kpi_expected") or "0"},
        "control_share": float(form.get("control_percent") or 10) / 100,
        "cost_per_message": form.get("cost_per_message") or "0",
    }
    if form.get("test_percent"):
        data["test_share"] = float(form["test_percent"]) / 100
    try:
        return CampaignIn.model_validate(data)
    except ValidationError as exc:
        summary = validation_body(exc.errors())["error"].removeprefix("invalid request: ")
        raise InvalidInput(summary) from None


async def _form(request: Request) -> dict[str, str]:
    return {k: str(v) for k, v in (await request.form()).items()}


@router.get("/campaigns", response_class=HTMLResponse)
def campaigns(*, request: Request, session: SessionDep, who: Viewer) -> HTMLResponse:
    found = CampaignService(session).listing(status=None, limit=200, offset=0)
    return _page(request, "campaigns.html", who, campaigns=found)


@router.get("/campaigns/new", response_class=HTMLResponse)
def planner(*, request: Request, session: SessionDep, who: Planner) -> HTMLResponse:
    return _page(request, "campaign_new.html", who, form={}, **_choices(session))


@router.post("/campaigns/preview", response_model=None)
async def preview(*, request: Request, session: SessionDep, who: Viewer) -> Response:
    """The message as the chosen customer would get it, from the plan as it stands."""
    form = await _form(request)
    _check_csrf(request, form.get("csrf", ""))
    try:
        plan = _plan(form | {"name": form.get("name") or "preview", "goal": "preview"})
        customer = int(form.get("preview_customer") or 0)
        # an unsaved plan: a campaign object that is never added to the session
        draft = Campaign(
            id=0, name=plan.name, goal=plan.goal, offer=plan.offer.model_dump(mode="json")
        )
        context = CampaignService(session).context(draft, customer, coupon="PREVIEW-0000")
        body = render(plan.message, context)
    except (PatronError, ValueError) as exc:
        message = exc.message if isinstance(exc, PatronError) else str(exc)
        return JSONResponse({"error": message}, status_code=422)
    return JSONResponse({"subject": body.subject, "text": body.text, "html": body.html})


@router.post("/campaigns", response_model=None)
async def create(*, request: Request, session: SessionDep, who: Planner) -> Response:
    form = await _form(request)
    _check_csrf(request, form.get("csrf", ""))
    try:
        campaign = CampaignService(session).create(_plan(form), actor=who.username)
    except PatronError as exc:
        return _page(
            request,
            "campaign_new.html",
            who,
            status=exc.status,
            error=exc.message,
            form=form,
            **_choices(session),
        )
    WebService(session).record(
        who.username, "campaign.create", target=f"campaign:{campaign.id}", name=campaign.name
    )
    session.commit()
    return RedirectResponse(f"/ui/campaigns/{campaign.id}", status_code=303)


@router.get("/campaigns/{campaign_id}", response_class=HTMLResponse)
def campaign(
    *, request: Request, session: SessionDep, who: Viewer, campaign_id: int
) -> HTMLResponse:
    found = CampaignService(session).get(campaign_id)
    report = None
    if found.launched_at is not None:
        report = MeasureService(session).report(found)
    journey = JourneyService(session).report(found) if found.trigger else None
    can_launch = Permission.LAUNCH_CAMPAIGNS in _permissions(who)
    counts = DispatchRepository(session).status_counts(found.id)
    sending = {
        "total": sum(counts.values()),
        "final": sum(n for status, n in counts.items() if status in _FINAL),
    }
    return _page(
        request,
        "campaign.html",
        who,
        campaign=found,
        report=report,
        journey=journey,
        can_launch=can_launch,
        trail=CampaignService(session).trail(found),
        sending=sending,
    )


def _permissions(who: Who) -> frozenset[Permission]:
    return ROLE_PERMISSIONS[who.role]


@router.get("/campaigns/{campaign_id}/progress", response_model=None)
def progress(*, session: SessionDep, who: Viewer, campaign_id: int) -> Response:
    """How far sending has got, for the page's progress bar."""
    found = CampaignService(session).get(campaign_id)
    counts = DispatchRepository(session).status_counts(found.id)
    total = sum(counts.values())
    final = sum(n for status, n in counts.items() if status in _FINAL)
    return JSONResponse({"status": found.status.value, "total": total, "final": final,
                         "counts": counts})  # fmt: skip


@router.post("/campaigns/{campaign_id}/{action}", response_model=None)
def act(
    *,
    request: Request,
    session: SessionDep,
    who: Launcher,
    campaign_id: int,
    action: str,
    csrf: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
) -> Response:
    """Launch, pause, resume or cancel; each is on the campaign's trail and the audit log."""
    _check_csrf(request, csrf)
    service = CampaignService(session)
    if action == "launch":
        done = service.launch(campaign_id, actor=who.username)
    elif action == "pause":
        done = service.pause(campaign_id, actor=who.username, reason=reason)
    elif action == "resume":
        done = service.resume(campaign_id, actor=who.username)
    elif action == "cancel":
        done = service.cancel(campaign_id, actor=who.username, reason=reason)
    else:
        raise InvalidInput(f"unknown action {action!r}: launch, pause, resume or cancel")
    WebService(session).record(
        who.username,
        f"campaign.{action}",
        target=f"campaign:{done.id}",
        status=done.status.value,
        reason=reason,
    )
    session.commit()
    return RedirectResponse(f"/ui/campaigns/{campaign_id}", status_code=303)
