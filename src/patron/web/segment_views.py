"""Segment pages: the list, the builder with its live count, one segment (count, builds,
membership over time, the spend-band migration), duplicate and export."""

from __future__ import annotations

import io
import json
from typing import Annotated, Any

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from patron.analytics.service import AnalyticsService
from patron.api.deps import Permission
from patron.kit.errors import InvalidInput, PatronError
from patron.models import RunStatus
from patron.segments.schemas import PROFILE_TYPES, SCORE_TYPES, SegmentIn, parse_rule
from patron.segments.service import SegmentService
from patron.web.service import WebService, Who
from patron.web.views import SessionDep, _check_csrf, _page, needs, router

Viewer = Annotated[Who, Depends(needs(Permission.READ_SEGMENTS))]
Editor = Annotated[Who, Depends(needs(Permission.WRITE_SEGMENTS))]

FIELDS: dict[str, list[str]] = {
    "profile": sorted(PROFILE_TYPES),
    "score": list(SCORE_TYPES),
    "orders": [
        "spend",
        "orders",
        "returns",
        "average_order",
        "days_since_last",
        "days_since_first",
    ],
}
"""What the builder offers, grouped by kind; the server validates the rule either way."""


def _rule(text: str) -> Any:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"rule: not JSON ({exc.msg} at column {exc.colno})") from None
    return parse_rule(data)


@router.get("/segments", response_class=HTMLResponse)
def segments(*, request: Request, session: SessionDep, who: Viewer) -> HTMLResponse:
    service = SegmentService(session)
    rows = [(s, service.latest_build(s)) for s in service.listing(limit=500)]
    return _page(request, "segments.html", who, rows=rows)


@router.get("/segments/new", response_class=HTMLResponse)
def segment_form(*, request: Request, who: Editor) -> HTMLResponse:
    return _page(request, "segment_new.html", who, fields=FIELDS, name="", rule="")


@router.post("/segments/count", response_model=None)
def live_count(
    *,
    request: Request,
    session: SessionDep,
    who: Viewer,
    rule: Annotated[str, Form()],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """The count of the rule as it stands in the builder (JSON for the page's script)."""
    _check_csrf(request, csrf)
    try:
        counted = SegmentService(session).count(_rule(rule))
    except PatronError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    return JSONResponse({"customers": counted.customers, "seconds": counted.seconds})


@router.post("/segments", response_model=None)
def save_segment(
    *,
    request: Request,
    session: SessionDep,
    who: Editor,
    name: Annotated[str, Form(max_length=120)],
    rule: Annotated[str, Form()],
    description: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    _check_csrf(request, csrf)
    try:
        segment = SegmentService(session).create(
            SegmentIn(name=name, description=description, rule=_rule(rule)), actor=who.username
        )
    except PatronError as exc:
        return _page(
            request,
            "segment_new.html",
            who,
            status=exc.status,
            error=exc.message,
            fields=FIELDS,
            name=name,
            rule=rule,
        )
    WebService(session).record(
        who.username, "segment.create", target=f"segment:{segment.id}", name=name, rule=segment.rule
    )
    session.commit()
    return RedirectResponse(f"/ui/segments/{segment.id}", status_code=303)


@router.get("/segments/{segment_id}", response_class=HTMLResponse)
def segment(*, request: Request, session: SessionDep, who: Viewer, segment_id: int) -> HTMLResponse:
    service = SegmentService(session)
    found = service.get(segment_id)
    counted = service.count(service.rule_of(found))
    builds = list(service.builds(found, limit=52))
    return _page(
        request,
        "segment.html",
        who,
        segment=found,
        count=counted,
        builds=builds,
        rule=json.dumps(found.rule, indent=2, ensure_ascii=False),
        **_migration(session, found.name),
    )


def _migration(session: Session, segment: str) -> dict[str, Any]:
    """The spend-band migration of the segment's members between the two newest analysis
    runs: where the members of the first date were by spend band then, and at the second."""
    runs = [r for r in AnalyticsService(session).runs(limit=20) if r.status is RunStatus.COMPLETED]
    if len(runs) < 2:
        return {"moves": None}
    after, before = runs[0].as_of, runs[1].as_of
    if before >= after:
        return {"moves": None}
    try:
        moves = SegmentService(session).moves(
            before=before, after=after, by="spend_band", within=segment
        )
    except PatronError:
        # no membership recorded on the first date: there is nothing to follow yet
        return {"moves": None}
    rows = sorted({m.before or "none" for m in moves})
    cols = sorted({m.after or "none" for m in moves})
    cells = {(m.before or "none", m.after or "none"): m.customers for m in moves}
    return {"moves": {"rows": rows, "cols": cols, "cells": cells, "before": before,
                      "after": after}}  # fmt: skip


@router.post("/segments/{segment_id}/duplicate", response_model=None)
def duplicate(
    *,
    request: Request,
    session: SessionDep,
    who: Editor,
    segment_id: int,
    name: Annotated[str, Form(max_length=120)],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    _check_csrf(request, csrf)
    copy = SegmentService(session).duplicate(segment_id, name=name, actor=who.username)
    WebService(session).record(
        who.username, "segment.duplicate", target=f"segment:{copy.id}", source=segment_id
    )
    session.commit()
    return RedirectResponse(f"/ui/segments/{copy.id}", status_code=303)


@router.post("/segments/{segment_id}/build", response_model=None)
def build(
    *,
    request: Request,
    session: SessionDep,
    who: Editor,
    segment_id: int,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Record today's membership: a point on the chart of membership over time."""
    _check_csrf(request, csrf)
    service = SegmentService(session)
    done = service.build(service.get(segment_id))
    WebService(session).record(
        who.username, "segment.build", target=f"segment:{segment_id}", members=done.members
    )
    session.commit()
    return RedirectResponse(f"/ui/segments/{segment_id}", status_code=303)


@router.get("/segments/{segment_id}/export.csv", response_model=None)
def export(*, request: Request, session: SessionDep, who: Viewer, segment_id: int) -> Response:
    service = SegmentService(session)
    found = service.get(segment_id)
    out = io.StringIO()
    service.export(service.rule_of(found), out)
    WebService(session).record(who.username, "segment.export", target=f"segment:{segment_id}")
    session.commit()
    disposition = f'attachment; filename="segment-{segment_id}.csv"'
    return Response(
        out.getvalue(), media_type="text/csv", headers={"Content-Disposition": disposition}
    )
