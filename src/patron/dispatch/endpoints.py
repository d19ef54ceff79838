"""HTTP for feedback: the open pixel, click redirects and unsubscribe (public, signed
links), and bounce or complaint reports from providers (API key)."""

from __future__ import annotations

import base64
from html import escape
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel

from patron.api.deps import Permission, SessionDep, require
from patron.dispatch import links
from patron.dispatch.service import DispatchService
from patron.kit.clock import utcnow
from patron.kit.settings import get_settings
from patron.models import ApiKey

public = APIRouter(tags=["tracking"], include_in_schema=False)
"""Routes recipients reach from a message: no API key, a signed link instead."""
router = APIRouter(tags=["dispatch"])

_PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


def dispatch_service(session: SessionDep) -> DispatchService:
    """The dispatch service on the request's session."""
    return DispatchService(session)


ServiceDep = Annotated[DispatchService, Depends(dispatch_service)]


@public.get("/t/o/{token}.gif")
def open_pixel(*, token: str, service: ServiceDep) -> Response:
    """Record the first open; always answer with the pixel, even for an unknown token."""
    try:
        service.opened(links.message_of(token, secret=get_settings().secret_key), now=utcnow())
    except Exception:
        service.session.rollback()
    return Response(_PIXEL, media_type="image/gif", headers={"Cache-Control": "no-store"})


@public.get("/t/c/{token}")
def click(
    *,
    token: str,
    service: ServiceDep,
    u: Annotated[str, Query(description="The target URL.")],
    s: Annotated[str, Query(description="The link's signature.")],
) -> RedirectResponse:
    """Record the click and send the reader on; an unsigned target is refused (404)."""
    message_id = links.check_click(token, u, s, secret=get_settings().secret_key)
    service.clicked(message_id, now=utcnow())
    return RedirectResponse(u, status_code=302)


_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{title}</title></head><body><main><h1>{title}</h1>{body}</main></body></html>"""


@public.get("/u/{token}", response_class=HTMLResponse)
def unsubscribe_page(*, token: str) -> HTMLResponse:
    """A confirmation page: link scanners follow GET links, so only the POST unsubscribes."""
    links.message_of(token, secret=get_settings().secret_key)
    form = (
        f'<form method="post" action="{escape(token)}"><input type="hidden" '
        'name="List-Unsubscribe" value="One-Click"><button type="submit">'
        "Unsubscribe</button></form>"
    )
    return HTMLResponse(_PAGE.format(title="Unsubscribe from these messages?", body=form))


@public.post("/u/{token}", response_class=HTMLResponse)
def unsubscribe(*, token: str, service: ServiceDep) -> HTMLResponse:
    """One-click unsubscribe (RFC 8058): the consent is withdrawn and the customer
    suppressed on the channel at once."""
    service.unsubscribed(links.message_of(token, secret=get_settings().secret_key), now=utcnow())
    return HTMLResponse(_PAGE.format(title="You are unsubscribed", body=""))


class FeedbackIn(BaseModel):
    """What a provider reported about a delivered message."""

    kind: Literal["hard_bounce", "soft_bounce", "complaint"]


@router.post("/messages/{message_id}/feedback", status_code=204)
def feedback(
    *,
    message_id: int,
    body: FeedbackIn,
    service: ServiceDep,
    _key: Annotated[ApiKey, Depends(require(Permission.WRITE_CAMPAIGNS))],
) -> Response:
    """A bounce or spam complaint reported by a provider; a hard bounce or a complaint
    suppresses the customer on the channel at once."""
    now = utcnow()
    if body.kind == "complaint":
        service.complained(message_id, now=now)
    else:
        service.bounced(message_id, now=now, hard=body.kind == "hard_bounce")
    return Response(status_code=204)
