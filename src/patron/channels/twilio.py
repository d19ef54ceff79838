"""Twilio Programmable Messaging: the Messages resource that sends SMS and WhatsApp alike.

Protocol: ``POST {base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json`` with HTTP
Basic auth (AccountSid, AuthToken) and a form of ``To``, ``From`` and/or
``MessagingServiceSid``, ``Body`` and ``StatusCallback``; 201 with the message's ``sid``,
errors as ``{"code", "message", "more_info", "status"}``.
https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource
https://www.twilio.com/docs/api/errors

Status callbacks and inbound messages are form posts signed with ``X-Twilio-Signature``:
https://www.twilio.com/docs/messaging/guides/outbound-message-status-in-status-callbacks
https://www.twilio.com/docs/usage/webhooks/webhooks-security
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from patron.channels.base import Envelope, Outcome
from patron.channels.feedback import Feedback, FeedbackKind, inbound_kind, same_secret
from patron.channels.http import (
    HttpSettings,
    HttpTransport,
    e164,
    http_outcome,
    json_body,
    retry_after,
)
from patron.models.consent import Channel

_WHATSAPP = "whatsapp:"

HARD_CODES = frozenset({21211, 21610, 21614, 63024})
"""Refusals that mean the address cannot receive: 21211 invalid 'To' number, 21610 the
recipient replied STOP, 21614 'To' is not a mobile number, 63024 invalid WhatsApp
recipient."""

LATE_HARD_CODES = HARD_CODES | {30005, 30006}
"""Delivery failures reported later that mean the same: 30005 unknown handset, 30006
landline or unreachable carrier."""

RATE_CODES = frozenset({20429})
"""Too many requests, sometimes sent with another HTTP status than 429."""


class TwilioSettings(BaseModel):
    """A Twilio account and the sender it sends from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
    auth_token: SecretStr
    sender: str | None = Field(
        default=None,
        description="From: a number in E.164, a short code or an alphanumeric sender id.",
    )
    messaging_service_sid: str | None = Field(default=None, pattern=r"^MG[0-9a-fA-F]{32}$")
    status_callback: str | None = Field(
        default=None, description="Where Twilio posts delivery statuses."
    )
    base_url: str = "https://api.twilio.com"
    http: HttpSettings = HttpSettings()

    @model_validator(mode="after")
    def _has_sender(self) -> TwilioSettings:
        if self.sender is None and self.messaging_service_sid is None:
            raise ValueError("set a sender or a messaging_service_sid")
        return self


class TwilioMessaging(HttpTransport):
    """Messages through Twilio's Messages resource (see the module docstring).

    ``To`` is the envelope's phone in E.164 (numbers without a country code are read in
    ``region``), ``From`` the account's sender: an envelope's sender is the campaign's
    email-style name, which no SMS network takes. The SMS and WhatsApp transports differ
    only in the channel and the ``whatsapp:`` prefix of both addresses.
    """

    provider = "Twilio"
    address_prefix: ClassVar[str] = ""

    def __init__(self, settings: TwilioSettings, *, region: str = "RU") -> None:
        token = settings.auth_token.get_secret_value()
        super().__init__(settings.http, auth=httpx.BasicAuth(settings.account_sid, token))
        self.settings = settings
        self.region = region
        base = settings.base_url.rstrip("/")
        self._url = f"{base}/2010-04-01/Accounts/{settings.account_sid}/Messages.json"

    def request(self, client: httpx.AsyncClient, envelope: Envelope) -> httpx.Request:
        s = self.settings
        to = e164(envelope.to.removeprefix(_WHATSAPP), region=self.region)
        form = {"To": f"{self.address_prefix}{to}", "Body": envelope.text}
        if s.sender is not None:
            form["From"] = f"{self.address_prefix}{s.sender.removeprefix(_WHATSAPP)}"
        if s.messaging_service_sid is not None:
            form["MessagingServiceSid"] = s.messaging_service_sid
        if s.status_callback is not None:
            form["StatusCallback"] = s.status_callback
        return client.build_request("POST", self._url, data=form)

    def verdict(self, envelope: Envelope, response: httpx.Response) -> Outcome:
        body = json_body(response)
        body = body if isinstance(body, dict) else {}
        code = body.get("code")
        return http_outcome(
            envelope, response.status_code, provider=self.provider,
            ref=body.get("sid"), code=code, detail=body.get("message") or response.text[:200],
            wait=retry_after(response.headers.get("Retry-After")),
            hard=code in HARD_CODES, temporary=code in RATE_CODES,
        )  # fmt: skip


def twilio_signature(
    url: str, params: Mapping[str, str] | Iterable[tuple[str, str]], *, auth_token: str
) -> str:
    """``X-Twilio-Signature``: base64 HMAC-SHA1, keyed with the auth token, of the full URL
    followed by each POST parameter's name and value, sorted by name."""
    pairs = params.items() if isinstance(params, Mapping) else params
    data = url + "".join(f"{name}{value}" for name, value in sorted(pairs))
    digest = hmac.new(auth_token.encode(), data.encode(), "sha1").digest()
    return base64.b64encode(digest).decode()


def verify_twilio_signature(
    url: str,
    params: Mapping[str, str] | Iterable[tuple[str, str]],
    signature: str | None,
    *,
    auth_token: str,
) -> bool:
    """Whether a webhook came from Twilio: ``url`` exactly as Twilio called it (scheme,
    host, path and query), ``params`` the form it posted."""
    return same_secret(signature, twilio_signature(url, params, auth_token=auth_token))


def twilio_feedback(params: Mapping[str, str], *, received_at: datetime) -> list[Feedback]:
    """A status callback or an inbound message, SMS or WhatsApp, as :class:`Feedback`.

    Statuses on the way (queued, sent...) report nothing; ``OptOutType=STOP`` (Twilio's
    Advanced Opt-Out) or a stop word makes an inbound message an opt-out.
    """
    sender = params.get("From", "")
    channel = Channel.WHATSAPP if sender.startswith(_WHATSAPP) else Channel.SMS
    status = params.get("MessageStatus") or params.get("SmsStatus")
    ref = params.get("MessageSid") or params.get("SmsSid")
    if "Body" in params and status in (None, "received", "receiving"):
        text = params["Body"]
        stop = params.get("OptOutType", "").upper() == "STOP"
        kind: FeedbackKind = "opt_out" if stop else inbound_kind(text)
        return [
            Feedback(
                channel, kind, received_at, provider_ref=ref,
                from_address=sender.removeprefix(_WHATSAPP) or None, text=text,
            )
        ]  # fmt: skip
    if status == "delivered":
        return [Feedback(channel, "delivered", received_at, provider_ref=ref)]
    if status == "read":
        return [Feedback(channel, "read", received_at, provider_ref=ref)]
    if status in ("failed", "undelivered"):
        code = params.get("ErrorCode")
        reason = f"Twilio {status}" + (f", error {code}" if code else "")
        if params.get("ErrorMessage"):
            reason += f": {params['ErrorMessage']}"
        hard = code is not None and code.isdigit() and int(code) in LATE_HARD_CODES
        return [
            Feedback(channel, "failed", received_at, provider_ref=ref, reason=reason, hard=hard)
        ]
    return []
