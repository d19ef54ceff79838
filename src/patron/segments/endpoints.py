"""HTTP for segments: save rules, count them live, build members, read history, export."""

from __future__ import annotations

import io
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from patron.api.deps import PagingDep, Permission, SessionDep, require
from patron.api.idempotency import IdempotencyDep
from patron.models import ApiKey, Segment
from patron.segments.schemas import (
    BuildOut,
    ChangeOut,
    CountOut,
    MemberOut,
    MoveOut,
    PreviewIn,
    ReplicaOut,
    SegmentIn,
    SegmentOut,
    SegmentUpdate,
)
from patron.segments.service import MoveBy, SegmentService

router = APIRouter(tags=["segments"])

Reader = Annotated[ApiKey, Depends(require(Permission.READ_SEGMENTS))]
Writer = Annotated[ApiKey, Depends(require(Permission.WRITE_SEGMENTS))]


def segment_service(session: SessionDep) -> SegmentService:
    """The segment service on the request's session."""
    return SegmentService(session)


ServiceDep = Annotated[SegmentService, Depends(segment_service)]


def segment_out(service: SegmentService, segment: Segment) -> SegmentOut:
    """A segment with the size and time of its newest build."""
    out = SegmentOut.model_validate(segment)
    build = service.latest_build(segment)
    if build is not None:
        out.members, out.built_at = build.members, build.built_at
    return out


class DuplicateIn(BaseModel):
    """The name of the copy."""

    name: str = Field(min_length=1, max_length=120)


@router.post("/segments/preview", response_model=CountOut)
def preview(*, body: PreviewIn, service: ServiceDep, _key: Reader) -> CountOut:
    """Count a rule without saving it: the live count of the segment editor."""
    return service.count(body.rule, as_of=body.as_of)


@router.get("/segments/replica", response_model=ReplicaOut)
def replica(*, service: ServiceDep, _key: Reader) -> ReplicaOut:
    """The segment replica that live counts read while it is fresh (made and renewed by
    ``patron segment refresh``, imports and analyses)."""
    state, fresh = service.replica_state()
    if state is None:
        return ReplicaOut(exists=False, fresh=False)
    return ReplicaOut(
        exists=True,
        fresh=fresh,
        refreshed_at=state.refreshed_at,
        score_run=state.score_run,
        rows=state.rows,
        seconds=state.seconds,
    )


@router.post("/segments", status_code=201, response_model=SegmentOut)
def create_segment(
    *, body: SegmentIn, service: ServiceDep, key: Writer, retry: IdempotencyDep
) -> JSONResponse:
    """Save a segment. Its rule is checked: named segments must exist, with no circle."""

    def action() -> tuple[int, BaseModel]:
        return 201, segment_out(service, service.create(body, actor=key.name))

    return retry.run(body=body, action=action, required=False)


@router.get("/segments", response_model=list[SegmentOut])
def list_segments(*, service: ServiceDep, paging: PagingDep, _key: Reader) -> list[SegmentOut]:
    """Saved segments by name, with their newest build."""
    found = service.listing(limit=paging.limit, offset=paging.offset)
    return [segment_out(service, s) for s in found]


@router.get("/segments/moves", response_model=list[MoveOut])
def moves(
    *,
    service: ServiceDep,
    _key: Reader,
    before: Annotated[datetime, Query(description="The earlier date.")],
    after: Annotated[datetime, Query(description="The later date.")],
    by: Annotated[
        MoveBy | None, Query(description="A score to group by (from the analysis runs).")
    ] = None,
    segments: Annotated[
        list[str] | None, Query(description="Segments to group by, in priority order.")
    ] = None,
    within: Annotated[
        str | None, Query(description="Only the members of this segment on `before`.")
    ] = None,
) -> list[MoveOut]:
    """How many customers moved from each group on ``before`` to each group on ``after``:
    between spend bands, RFM segments, lifecycle stages, or saved segments."""
    return service.moves(before=before, after=after, by=by, segments=segments or (), within=within)


@router.get("/segments/{segment_id}", response_model=SegmentOut)
def get_segment(*, segment_id: int, service: ServiceDep, _key: Reader) -> SegmentOut:
    """One segment with its rule and newest build."""
    return segment_out(service, service.get(segment_id))


@router.patch("/segments/{segment_id}", response_model=SegmentOut)
def update_segment(
    *, segment_id: int, body: SegmentUpdate, service: ServiceDep, _key: Writer
) -> SegmentOut:
    """Rename a segment, describe it, or change its rule."""
    return segment_out(service, service.update(segment_id, body))


@router.post("/segments/{segment_id}/duplicate", status_code=201, response_model=SegmentOut)
def duplicate_segment(
    *, segment_id: int, body: DuplicateIn, service: ServiceDep, key: Writer
) -> SegmentOut:
    """Save a copy of a segment under a new name."""
    return segment_out(service, service.duplicate(segment_id, name=body.name, actor=key.name))


@router.delete("/segments/{segment_id}", response_model=SegmentOut)
def archive_segment(*, segment_id: int, service: ServiceDep, _key: Writer) -> SegmentOut:
    """Archive a segment: gone from listings and rules, its history kept."""
    return segment_out(service, service.archive(segment_id))


@router.get("/segments/{segment_id}/count", response_model=CountOut)
def count_segment(
    *,
    segment_id: int,
    service: ServiceDep,
    _key: Reader,
    as_of: Annotated[datetime | None, Query(description="Count as of then (default: now).")] = None,
) -> CountOut:
    """The live count of a saved segment's rule."""
    segment = service.get(segment_id)
    return service.count(service.rule_of(segment), as_of=as_of)


@router.post("/segments/{segment_id}/build", status_code=201, response_model=BuildOut)
def build_segment(*, segment_id: int, service: ServiceDep, _key: Writer) -> BuildOut:
    """Materialise the members now; who entered and left is recorded."""
    return BuildOut.model_validate(service.build(service.get(segment_id)))


@router.get("/segments/{segment_id}/builds", response_model=list[BuildOut])
def list_builds(
    *, segment_id: int, service: ServiceDep, _key: Reader, limit: Annotated[int, Query(ge=1)] = 100
) -> list[BuildOut]:
    """Builds newest first: the segment's size over time."""
    return [
        BuildOut.model_validate(b) for b in service.builds(service.get(segment_id), limit=limit)
    ]


@router.get("/segments/{segment_id}/members", response_model=list[MemberOut])
def list_members(
    *,
    segment_id: int,
    service: ServiceDep,
    paging: PagingDep,
    _key: Reader,
    on: Annotated[
        datetime | None, Query(description="Members on this date (default: the last build).")
    ] = None,
) -> list[MemberOut]:
    """Materialised members by customer id, with when each entered."""
    rows = service.members(service.get(segment_id), on=on, limit=paging.limit, offset=paging.offset)
    return [MemberOut(customer_id=c, entered_at=e) for c, e in rows]


@router.get("/segments/{segment_id}/changes", response_model=list[ChangeOut])
def list_changes(
    *,
    segment_id: int,
    service: ServiceDep,
    paging: PagingDep,
    _key: Reader,
    since: Annotated[datetime, Query(description="From this moment (included).")],
    until: Annotated[datetime | None, Query(description="To this moment (excluded).")] = None,
) -> list[ChangeOut]:
    """Who entered and who left the segment between two moments, in time order."""
    rows = service.changes(
        service.get(segment_id), since=since, until=until, limit=paging.limit, offset=paging.offset
    )
    return [ChangeOut.model_validate({"customer_id": c, "change": k, "at": a}) for c, k, a in rows]


@router.get("/segments/{segment_id}/export.csv", response_class=StreamingResponse)
def export_segment(*, segment_id: int, service: ServiceDep, _key: Reader) -> StreamingResponse:
    """The customers the rule selects now, as CSV: id, names, city, email, phone."""
    segment = service.get(segment_id)
    out = io.StringIO()
    service.export(service.rule_of(segment), out)
    return StreamingResponse(
        iter([out.getvalue()]),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="segment-{segment.id}.csv"'},
    )
