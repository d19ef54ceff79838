"""HTTP for campaigns: plan, change, schedule, launch, cancel, preview, audience, trail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from patron.api.deps import PagingDep, Permission, SessionDep, require
from patron.api.idempotency import IdempotencyDep
from patron.campaigns.schemas import CampaignIn, CampaignOut, CampaignUpdate, ChangeOut, PreviewOut
from patron.campaigns.service import CampaignService
from patron.measure.service import CampaignReport, MeasureService
from patron.models import ApiKey, CampaignStatus, Channel, RecipientGroup

router = APIRouter(tags=["campaigns"])

Reader = Annotated[ApiKey, Depends(require(Permission.READ_CAMPAIGNS))]
Planner = Annotated[ApiKey, Depends(require(Permission.WRITE_CAMPAIGNS))]
Launcher = Annotated[ApiKey, Depends(require(Permission.LAUNCH_CAMPAIGNS))]


def campaign_service(session: SessionDep) -> CampaignService:
    """The campaign service on the request's session."""
    return CampaignService(session)


ServiceDep = Annotated[CampaignService, Depends(campaign_service)]


class CancelIn(BaseModel):
    """Why a campaign is stopped."""

    reason: str = Field(default="", max_length=500)


class RecipientOut(BaseModel):
    """One customer of a frozen audience."""

    model_config = {"from_attributes": True}

    customer_id: int
    group: RecipientGroup
    wave: int | None
    reason: str | None


class SuppressionIn(BaseModel):
    """Stop marketing to a customer on a channel."""

    customer_id: int
    channel: Channel
    reason: str = Field(default="manual", min_length=1, max_length=32)


@router.post("/campaigns", status_code=201, response_model=CampaignOut)
def create_campaign(
    *, body: CampaignIn, service: ServiceDep, key: Planner, retry: IdempotencyDep
) -> JSONResponse:
    """Save a campaign plan as a draft; its templates are checked now."""

    def action() -> tuple[int, BaseModel]:
        return 201, CampaignOut.model_validate(service.create(body, actor=key.name))

    return retry.run(body=body, action=action, required=False)


@router.get("/campaigns", response_model=list[CampaignOut])
def list_campaigns(
    *,
    service: ServiceDep,
    paging: PagingDep,
    _key: Reader,
    status: Annotated[CampaignStatus | None, Query(description="Only in this state.")] = None,
) -> list[CampaignOut]:
    """Campaigns, newest first."""
    found = service.listing(status=status, limit=paging.limit, offset=paging.offset)
    return [CampaignOut.model_validate(c) for c in found]


@router.get("/campaigns/{campaign_id}", response_model=CampaignOut)
def get_campaign(*, campaign_id: int, service: ServiceDep, _key: Reader) -> CampaignOut:
    """One campaign with its plan, state and audience counts."""
    return CampaignOut.model_validate(service.get(campaign_id))


@router.patch("/campaigns/{campaign_id}", response_model=CampaignOut)
def update_campaign(
    *, campaign_id: int, body: CampaignUpdate, service: ServiceDep, key: Planner
) -> CampaignOut:
    """Change a plan that has not launched."""
    return CampaignOut.model_validate(service.update(campaign_id, body, actor=key.name))


@router.post("/campaigns/{campaign_id}/schedule", response_model=CampaignOut)
def schedule_campaign(*, campaign_id: int, service: ServiceDep, key: Launcher) -> CampaignOut:
    """Approve a draft to run on its schedule."""
    return CampaignOut.model_validate(service.schedule(campaign_id, actor=key.name))


@router.post("/campaigns/{campaign_id}/launch", response_model=CampaignOut)
def launch_campaign(*, campaign_id: int, service: ServiceDep, key: Launcher) -> CampaignOut:
    """Freeze the audience (control group and test wave included) and start."""
    return CampaignOut.model_validate(service.launch(campaign_id, actor=key.name))


@router.post("/campaigns/{campaign_id}/cancel", response_model=CampaignOut)
def cancel_campaign(
    *, campaign_id: int, body: CancelIn, service: ServiceDep, key: Launcher
) -> CampaignOut:
    """Stop a campaign."""
    return CampaignOut.model_validate(
        service.cancel(campaign_id, actor=key.name, reason=body.reason)
    )


@router.post("/campaigns/{campaign_id}/pause", response_model=CampaignOut)
def pause_campaign(
    *, campaign_id: int, body: CancelIn, service: ServiceDep, key: Launcher
) -> CampaignOut:
    """Hold the messages not yet sent until the campaign is resumed."""
    return CampaignOut.model_validate(
        service.pause(campaign_id, actor=key.name, reason=body.reason)
    )


@router.post("/campaigns/{campaign_id}/resume", response_model=CampaignOut)
def resume_campaign(*, campaign_id: int, service: ServiceDep, key: Launcher) -> CampaignOut:
    """Send a paused campaign's waiting messages."""
    return CampaignOut.model_validate(service.resume(campaign_id, actor=key.name))


@router.get("/campaigns/{campaign_id}/runs", response_model=list[CampaignOut])
def campaign_runs(*, campaign_id: int, service: ServiceDep, _key: Reader) -> list[CampaignOut]:
    """A recurring campaign's runs, oldest first."""
    return [CampaignOut.model_validate(r) for r in service.runs(service.get(campaign_id))]


@router.get("/campaigns/{campaign_id}/trail", response_model=list[ChangeOut])
def campaign_trail(*, campaign_id: int, service: ServiceDep, _key: Reader) -> list[ChangeOut]:
    """Who changed what, and when, oldest first."""
    return [ChangeOut.model_validate(c) for c in service.trail(service.get(campaign_id))]


@router.get("/campaigns/{campaign_id}/recipients", response_model=list[RecipientOut])
def campaign_recipients(
    *,
    campaign_id: int,
    service: ServiceDep,
    paging: PagingDep,
    _key: Reader,
    group: Annotated[RecipientGroup | None, Query(description="Only this group.")] = None,
) -> list[RecipientOut]:
    """The frozen audience by customer id: group, wave, and why a customer was left out."""
    rows = service.recipients(
        service.get(campaign_id), group=group, limit=paging.limit, offset=paging.offset
    )
    return [RecipientOut.model_validate(r) for r in rows]


@router.get("/campaigns/{campaign_id}/preview", response_model=PreviewOut)
def preview_message(
    *,
    campaign_id: int,
    service: ServiceDep,
    _key: Reader,
    customer_id: Annotated[int, Query(description="Render the message for this customer.")],
) -> PreviewOut:
    """The message as one customer would get it."""
    rendered = service.preview(service.get(campaign_id), customer_id)
    return PreviewOut(
        customer_id=customer_id, subject=rendered.subject, html=rendered.html, text=rendered.text
    )


@router.get("/campaigns/{campaign_id}/report", response_model=CampaignReport)
def campaign_report(*, campaign_id: int, service: ServiceDep, _key: Reader) -> CampaignReport:
    """What the campaign earned against its control group: per group size, delivery,
    opens, clicks, conversions and revenue; the incremental effect with 95% intervals;
    cost, incremental profit, ROI, and the KPI planned against actual."""
    return MeasureService(service.session).report(service.get(campaign_id))


@router.post("/suppressions", status_code=201)
def suppress(*, body: SuppressionIn, service: ServiceDep, _key: Planner) -> dict[str, object]:
    """Stop all marketing to a customer on a channel (kept until lifted)."""
    row = service.repo.suppress(body.customer_id, body.channel, reason=body.reason)
    return {"id": row.id, "customer_id": row.customer_id, "channel": row.channel.value}
