"""HTTP for journeys: a triggered campaign's per-step counts, and its entries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from patron.api.deps import PagingDep, Permission, SessionDep, require
from patron.campaigns.service import CampaignService
from patron.journeys.schemas import EntryOut, JourneyReport, StepDone
from patron.journeys.service import JourneyService
from patron.models import ApiKey

router = APIRouter(tags=["campaigns"])

Reader = Annotated[ApiKey, Depends(require(Permission.READ_CAMPAIGNS))]


@router.get("/campaigns/{campaign_id}/journey", response_model=JourneyReport)
def journey_report(*, campaign_id: int, session: SessionDep, _key: Reader) -> JourneyReport:
    """Entries by status, how many wait at each step, and what each step did."""
    campaign = CampaignService(session).get(campaign_id)
    return JourneyReport.model_validate(JourneyService(session).report(campaign))


@router.get("/campaigns/{campaign_id}/entries", response_model=list[EntryOut])
def journey_entries(
    *,
    campaign_id: int,
    session: SessionDep,
    paging: PagingDep,
    _key: Reader,
    customer_id: Annotated[int | None, Query()] = None,
) -> list[EntryOut]:
    """Entries in the order they came, each with its log of steps."""
    campaign = CampaignService(session).get(campaign_id)
    service = JourneyService(session)
    found: list[EntryOut] = []
    for entry in service.entries(
        campaign, customer_id=customer_id, limit=paging.limit, offset=paging.offset
    ):
        out = EntryOut.model_validate(entry)
        out.steps = [StepDone.model_validate(s) for s in service.steps_of(entry)]
        found.append(out)
    return found
