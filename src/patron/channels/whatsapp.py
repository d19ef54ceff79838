"""WhatsApp: through Twilio's Messages resource, or through Meta's Cloud API.

Cloud API protocol: ``POST {base_url}/{version}/{phone_number_id}/messages`` with a bearer
token and JSON ``{"messaging_product": "whatsapp", "to", "type": "text", "text": {"body"}}``;
replies ``{"messages": [{"id": "wamid..."}]}`` or ``{"error": {"message", "type", "code",
"error_data": {"details"}}}``. Statuses and inbound messages come to a webhook signed
with ``X-Hub-Signature-256``.
https://developers.facebook.com/docs/whatsapp/cloud-api/reference/messages
https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes
https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components
https://developers.facebook.com/docs/graph-api/webhooks/getting-started#validate-payloads
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from patron.channels.base import Envelope, Outcome
from patron.channels.feedback import Feedback, FeedbackKind, inbound_kind, same_secret
from patron.channels.http import (
    HttpSettings,
    HttpTransport,
    e164,
    http_outcome,
    json_body,
    json_path,
    retry_after,
)
from patron.channels.twilio import TwilioMessaging
from patron.models.consent import Channel

HARD_CODES = frozenset({131026, 131050})
"""131026: the number cannot receive (not on WhatsApp, an old app, terms not accepted);
131050: the customer stopped marketing messages from us."""

TEMPORARY_CODES = frozenset({1, 2, 4, 80007, 130429, 131000, 131016, 131048, 131056})
"""Unknown or service errors, and the rate limits: of the API (4, 80007), of the number's
throughput (130429), spam (131048) and of one sender-recipient pair (131056)."""

SIGNATURE_HEADER = "X-Hub-Signature-256"


class TwilioWhatsApp(TwilioMessaging):
    """WhatsApp through Twilio's Messages resource (:mod:`patron.channels.twilio`):
    ``To`` and ``From`` as ``whatsapp:+E164``."""

    channel = Channel.WHATSAPP
    address_prefix = "whatsapp:"


class CloudWhatsAppSettings(BaseModel):
    """A WhatsApp Business number on Meta's Cloud API."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    access_token: SecretStr
    phone_number_id: str = Field(pattern=r"^\d+$")
    version: str = Field(default="v21.0", pattern=r"^v\d+\.\d+$")
    base_url: str = "https://graph.facebook.com"
    http: HttpSettings = HttpSettings()


class CloudWhatsApp(HttpTransport):
    """Text messages through the Cloud API (see the module docstring).

    Free text reaches only a customer who wrote to us in the last 24 hours; beyond that
    Meta refuses with 131047 and the message fails with that reason. 131026 and 131050
    fail hard; the rate limits (130429, 131048, 131056) are retried.
    """

    channel = Channel.WHATSAPP
    provider = "WhatsApp"

    def __init__(self, settings: CloudWhatsAppSettings, *, region: str = "RU") -> None:
        token = settings.access_token.get_secret_value()
        super().__init__(settings.http, headers={"Authorization": f"Bearer {token}"})
        self.settings = settings
        self.region = region
        base = settings.base_url.rstrip("/")
        self._url = f"{base}/{settings.version}/{settings.phone_number_id}/messages"

    def request(self, client: httpx.AsyncClient, envelope: Envelope) -> httpx.Request:
        payload = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": e164(envelope.to, region=self.region),
            "type": "text",
            "text": {"body": envelope.text},
        }
        return client.build_request("POST", self._url, json=payload)

    def verdict(self, envelope: Envelope, response: httpx.Response) -> Outcome:
        body = json_body(response)
        error = json_path(body, "error")
        error = error if isinstance(error, Mapping) else {}
        code = error.get("code")
        detail = error.get("message") or response.text[:200]
        details = json_path(error, "error_data.details")
        if details and str(details) not in str(detail):
            detail = f"{detail} ({details})"
        ref = json_path(body, "messages.0.id")
        return http_outcome(
            envelope, response.status_code, provider=self.provider,
            ref=None if ref is None else str(ref), code=code, detail=str(detail),
            wait=retry_after(response.headers.get("Retry-After")),
            hard=code in HARD_CODES, temporary=code in TEMPORARY_CODES,
        )  # fmt: skip


def verify_cloud_signature(body: bytes, signature: str | None, *, app_secret: str) -> bool:
    """Whether a webhook's ``X-Hub-Signature-256`` is ``sha256=`` and the hex HMAC-SHA256
    of its raw body, keyed with the app secret."""
    digest = hmac.new(app_secret.encode(), body, "sha256").hexdigest()
    return same_secret(signature, f"sha256={digest}")


def cloud_challenge(params: Mapping[str, str], *, verify_token: str) -> str | None:
    """The ``hub.challenge`` to echo when Meta checks a webhook URL with our verify
    token; ``None`` for any other request."""
    if params.get("hub.mode") != "subscribe":
        return None
    if not same_secret(params.get("hub.verify_token"), verify_token):
        return None
    return params.get("hub.challenge")


def cloud_feedback(payload: Mapping[str, Any], *, received_at: datetime) -> list[Feedback]:
    """A Cloud API webhook's statuses and inbound messages as :class:`Feedback`.

    ``sent`` statuses report nothing; a failed one gives the first error's code, title and
    details. An inbound text, button or list reply is inbound, a stop word an opt-out.
    """
    found: list[Feedback | None] = []
    for entry in _items(payload.get("entry")):
        for change in _items(entry.get("changes")):
            value = change.get("value")
            if not isinstance(value, Mapping):
                continue
            found.extend(_status(s, received_at) for s in _items(value.get("statuses")))
            found.extend(_message(m, received_at) for m in _items(value.get("messages")))
    return [f for f in found if f is not None]


def _status(status: Mapping[str, Any], received_at: datetime) -> Feedback | None:
    kind: FeedbackKind
    match status.get("status"):
        case "delivered":
            kind = "delivered"
        case "read":
            kind = "read"
        case "failed":
            kind = "failed"
        case _:
            return None
    at = _when(status, received_at)
    ref = str(status.get("id"))
    if kind != "failed":
        return Feedback(Channel.WHATSAPP, kind, at, provider_ref=ref)
    error = next(iter(_items(status.get("errors"))), {})
    code = error.get("code")
    reason = f"WhatsApp error {code}: {error.get('title') or error.get('message')}"
    details = json_path(error, "error_data.details")
    if details:
        reason += f" ({details})"
    return Feedback(
        Channel.WHATSAPP, "failed", at, provider_ref=ref, reason=reason, hard=code in HARD_CODES
    )


def _message(message: Mapping[str, Any], received_at: datetime) -> Feedback:
    text = (
        json_path(message, "text.body")
        or json_path(message, "button.text")
        or json_path(message, "interactive.button_reply.title")
        or json_path(message, "interactive.list_reply.title")
    )
    text = str(text) if text is not None else None
    sender = message.get("from")
    return Feedback(
        Channel.WHATSAPP, inbound_kind(text), _when(message, received_at),
        provider_ref=message.get("id"), from_address=f"+{sender}" if sender else None, text=text,
    )  # fmt: skip


def _items(value: object) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _when(item: Mapping[str, Any], default: datetime) -> datetime:
    stamp = item.get("timestamp")
    if isinstance(stamp, str) and stamp.isdigit():
        return datetime.fromtimestamp(int(stamp), UTC)
    return default
