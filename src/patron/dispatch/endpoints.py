"""HTTP for feedback: the open pixel, click redirects and unsubscribe (public, signed
links), and bounce or complaint reports from providers (API key)."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from html import escape
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from pydantic import BaseModel

from patron.api.deps import Permission, SessionDep, require
from patron.channels.config import ChannelsConfig, load_channels
from patron.channels.sms import gateway_feedback, verify_gateway_signature
from patron.channels.telegram import link_url, parse_start, telegram_feedback, verify_webhook
from patron.channels.twilio import twilio_feedback, verify_twilio_signature
from patron.channels.whatsapp import cloud_challenge, cloud_feedback, verify_cloud_signature
from patron.customers.schemas import ConsentIn, IdentityIn
from patron.customers.service import CustomerService
from patron.dispatch import links
from patron.dispatch.schemas import CallIn, CallList, CallOut
from patron.dispatch.service import DispatchService
from patron.kit.clock import utcnow
from patron.kit.errors import Forbidden, InvalidInput, NotFound
from patron.kit.settings import get_settings
from patron.models import ApiKey, Channel, ConsentStatus, IdentityKind

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


# -- provider webhooks ----------------------------------------------------------------------

hooks = APIRouter(tags=["webhooks"])
"""Providers' delivery reports and customers' replies: no API key, the provider's own
signature instead, checked before anything is read."""


def _channels() -> ChannelsConfig:
    return load_channels(get_settings().channels_file)


def _called_url(request: Request) -> str:
    # the URL as the provider called it: behind a proxy that is the public address
    query = f"?{request.url.query}" if request.url.query else ""
    return f"{get_settings().public_url.rstrip('/')}{request.url.path}{query}"


class HookOut(BaseModel):
    """What a webhook call recorded."""

    delivered: int = 0
    read: int = 0
    failed: int = 0
    inbound: int = 0
    opt_out: int = 0
    unmatched: int = 0
    linked: int = 0


@hooks.post("/webhooks/twilio/{channel}", response_model=HookOut)
async def twilio_hook(
    *, channel: Literal["sms", "whatsapp"], request: Request, service: ServiceDep
) -> HookOut:
    """Twilio's status callbacks and inbound messages (form posts, X-Twilio-Signature)."""
    config = _channels()
    section = config.sms if channel == "sms" else config.whatsapp
    settings = section.twilio if section is not None else None
    if settings is None:
        raise NotFound(f"{channel} does not go through Twilio here")
    # Twilio posts application/x-www-form-urlencoded, which the standard library reads
    form = parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True)
    signature = request.headers.get("X-Twilio-Signature")
    token = settings.auth_token.get_secret_value()
    if not verify_twilio_signature(_called_url(request), form, signature, auth_token=token):
        raise Forbidden(f"webhooks/twilio/{channel}: the X-Twilio-Signature does not match")
    items = twilio_feedback(dict(form), received_at=utcnow())
    return HookOut(**service.record_feedback(items, now=utcnow()))


@hooks.post("/webhooks/telegram", response_model=HookOut)
async def telegram_hook(*, request: Request, service: ServiceDep) -> HookOut:
    """The bot's updates: ``/start TOKEN`` from a deep link ties the chat to its customer
    as an identity; other messages are replies (``/stop`` opts out)."""
    config = _channels().telegram
    if config is None:
        raise NotFound("Telegram is not configured here")
    secret = config.webhook_secret.get_secret_value()
    if not verify_webhook(dict(request.headers), secret):
        raise Forbidden("webhooks/telegram: the X-Telegram-Bot-Api-Secret-Token does not match")
    update = await _json(request, "webhooks/telegram")
    now = utcnow()
    link = parse_start(update, secret=secret, now=now)
    if link is not None:
        customers = CustomerService(service.session)
        customers.add_identity(
            link.customer_id,
            IdentityIn(kind=IdentityKind.TELEGRAM, value=str(link.chat_id)),
            source="telegram",
        )
        # pressing Start on our bot from our own link is the customer asking to hear from it
        customers.record_consent(
            link.customer_id,
            ConsentIn(channel=Channel.TELEGRAM, status=ConsentStatus.GRANTED, decided_at=now),
            source="telegram /start",
        )
        return HookOut(linked=1)
    return HookOut(**service.record_feedback(telegram_feedback(update, received_at=now), now=now))


@hooks.get("/webhooks/whatsapp", response_class=PlainTextResponse)
def whatsapp_challenge(request: Request) -> str:
    """The Cloud API's subscription check: echo the challenge to our verify token."""
    config = _channels().whatsapp
    if config is None or config.verify_token is None:
        raise NotFound("the WhatsApp Cloud API is not configured here")
    answer = cloud_challenge(
        dict(request.query_params), verify_token=config.verify_token.get_secret_value()
    )
    if answer is None:
        raise Forbidden("webhooks/whatsapp: hub.verify_token does not match")
    return answer


@hooks.post("/webhooks/whatsapp", response_model=HookOut)
async def whatsapp_hook(*, request: Request, service: ServiceDep) -> HookOut:
    """The Cloud API's statuses and messages (X-Hub-Signature-256 over the raw body)."""
    config = _channels().whatsapp
    if config is None or config.app_secret is None:
        raise NotFound("the WhatsApp Cloud API is not configured here")
    body = await request.body()
    signature = request.headers.get("X-Hub-Signature-256")
    if not verify_cloud_signature(body, signature, app_secret=config.app_secret.get_secret_value()):
        raise Forbidden("webhooks/whatsapp: the X-Hub-Signature-256 does not match")
    payload = await _json(request, "webhooks/whatsapp")
    now = utcnow()
    return HookOut(**service.record_feedback(cloud_feedback(payload, received_at=now), now=now))


@hooks.post("/webhooks/sms-gateway", response_model=HookOut)
async def gateway_hook(*, request: Request, service: ServiceDep) -> HookOut:
    """A configured SMS gateway's delivery reports and inbound messages."""
    config = _channels().sms
    gateway = config.gateway if config is not None else None
    if config is None or gateway is None:
        raise NotFound("no SMS gateway is configured here")
    body = await request.body()
    signature = gateway.callbacks.signature
    if signature is not None:
        if config.callback_secret is None:
            raise Forbidden(
                "webhooks/sms-gateway: the gateway signs, but no callback_secret is set"
            )
        secret = config.callback_secret.get_secret_value()
        if not verify_gateway_signature(
            body, dict(request.headers), signature=signature, secret=secret
        ):
            raise Forbidden(f"webhooks/sms-gateway: the {signature.header} does not match")
    now = utcnow()
    items = gateway_feedback(
        body, callbacks=gateway.callbacks, received_at=now, region=get_settings().default_region
    )
    return HookOut(**service.record_feedback(items, now=now))


async def _json(request: Request, where: str) -> dict[str, Any]:
    try:
        data = json.loads(await request.body())
    except ValueError as exc:
        raise InvalidInput(f"{where}: the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{where}: the body is not a JSON object")
    return data


# -- the call list --------------------------------------------------------------------------


@router.get("/campaigns/{campaign_id}/calls", response_model=CallList)
def call_list(
    *,
    campaign_id: int,
    service: ServiceDep,
    _key: Annotated[ApiKey, Depends(require(Permission.READ_CAMPAIGNS))],
    open_only: Annotated[bool, Query(alias="open", description="Only those to call")] = True,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> CallList:
    """The operators' list: whom to call, the script, and what to know about them."""
    return service.call_list(
        campaign_id, open_only=open_only, limit=limit, offset=offset, now=utcnow()
    )


@router.post("/calls/{message_id}", status_code=201, response_model=CallOut)
def record_call(
    *,
    message_id: int,
    body: CallIn,
    service: ServiceDep,
    key: Annotated[ApiKey, Depends(require(Permission.WRITE_CAMPAIGNS))],
) -> CallOut:
    """An operator's call and what it came to."""
    return CallOut.model_validate(
        service.record_call(message_id, body, actor=key.name, now=utcnow())
    )


class TelegramLinkOut(BaseModel):
    """The deep link that ties a customer's Telegram chat to their profile."""

    url: str
    expires_at: datetime


@router.get("/customers/{customer_id}/telegram-link", response_model=TelegramLinkOut)
def telegram_link(
    *,
    customer_id: int,
    service: ServiceDep,
    _key: Annotated[ApiKey, Depends(require(Permission.WRITE_CUSTOMERS))],
    days: Annotated[int, Query(ge=1, le=90, description="How long the link works")] = 7,
) -> TelegramLinkOut:
    """A signed link to the bot for this customer (to put in an email, a receipt, a QR)."""
    config = _channels().telegram
    if config is None:
        raise NotFound("Telegram is not configured here")
    CustomerService(service.session).get_active(customer_id)
    expires = utcnow() + timedelta(days=days)
    url = link_url(config.bot_username, customer_id,
                   secret=config.webhook_secret.get_secret_value(), expires=expires)  # fmt: skip
    return TelegramLinkOut(url=url, expires_at=expires)
