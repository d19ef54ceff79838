"""SMS: through Twilio, or through any HTTP gateway described by configuration.

Most local SMS gateways take one HTTP request per message, each with its own URL, auth
header and body. :class:`HttpGatewaySms` is configured for one of them, not coded: the
method, URL, headers and a body template with placeholders (:data:`PLACEHOLDERS`), where
its reply's message id is (a dotted path into the JSON), which statuses and codes mean
what, and how its callbacks look and are signed.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qsl, quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator

from patron.channels.base import Envelope, Outcome
from patron.channels.feedback import Feedback, FeedbackKind, header, inbound_kind, same_secret
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
from patron.kit.clock import parse_datetime
from patron.kit.errors import InvalidInput
from patron.models.consent import Channel

__all__ = [
    "GatewayCallbacks",
    "GatewaySignature",
    "HttpGatewaySettings",
    "HttpGatewaySms",
    "TwilioSms",
    "gateway_feedback",
    "verify_gateway_signature",
]


class TwilioSms(TwilioMessaging):
    """SMS through Twilio's Messages resource (:mod:`patron.channels.twilio`)."""

    channel = Channel.SMS


# -- a configurable HTTP gateway ---------------------------------------------------------

PLACEHOLDERS = {
    "to": "the phone in E.164 (+79161234567)",
    "to_digits": "the phone's digits without the + (79161234567)",
    "sender": "the envelope's sender",
    "text": "the message text",
    "subject": "the message subject",
    "key": "the idempotency key, the same on every attempt",
    "message_id": "the outbox row's id",
}
_SINGLE_LINE = frozenset({"to", "to_digits", "key", "message_id"})
"""What a header may carry: a text with a line break would be no header at all."""
_PLACEHOLDER = re.compile(r"\{(\w+)\}")

Scalar = str | int | float | bool


def _placeholders(template: object) -> set[str]:
    """Every placeholder name in a template (a string, or JSON made of strings)."""
    if isinstance(template, str):
        return set(_PLACEHOLDER.findall(template))
    if isinstance(template, Mapping):
        return set().union(*(_placeholders(v) for v in template.values()))
    if isinstance(template, list):
        return set().union(*(_placeholders(v) for v in template))
    return set()


def _fill(template: object, values: Mapping[str, str | int], *, url: bool = False) -> Any:
    """The template with its placeholders filled; a string that is one placeholder
    alone takes the value itself (``"{message_id}"`` becomes a number in JSON)."""
    if isinstance(template, str):
        whole = _PLACEHOLDER.fullmatch(template)
        if whole and not url:
            return values[whole.group(1)]
        return _PLACEHOLDER.sub(
            lambda m: quote(str(values[m.group(1)]), safe="") if url else str(values[m.group(1)]),
            template,
        )
    if isinstance(template, Mapping):
        return {k: _fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, values) for v in template]
    return template


class GatewaySignature(BaseModel):
    """How a gateway signs its callbacks: an HMAC of the raw body in one header."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    header: str = "X-Signature"
    algorithm: Literal["sha1", "sha256", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = Field(default="", description="Before the digest, e.g. 'sha256='.")


class GatewayCallbacks(BaseModel):
    """How a gateway's delivery reports and inbound messages look.

    A JSON object (or a list of them), or a form. A report names the message at
    ``ref_path`` and its status at ``status_path``; ``statuses`` maps the gateway's
    statuses to ours (others report nothing). An item with no status and a text at
    ``text_path`` is an inbound message.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["json", "form"] = "json"
    ref_path: str = "id"
    status_path: str = "status"
    statuses: dict[str, FeedbackKind] = {"delivered": "delivered", "failed": "failed"}
    hard_statuses: frozenset[str] = Field(
        default=frozenset(), description="Statuses that mean the number cannot receive."
    )
    reason_path: str | None = None
    from_path: str = "from"
    text_path: str = "text"
    time_path: str | None = Field(
        default=None, description="Unix seconds or ISO 8601; none: when it arrived."
    )
    signature: GatewaySignature | None = None


class HttpGatewaySettings(BaseModel):
    """One HTTP SMS gateway: its request template and how to read its replies.

    ``url``, ``headers`` and ``body`` may hold placeholders (:data:`PLACEHOLDERS`), URL
    values percent-encoded, header values limited to single-line ones. A reply is
    accepted when its status is in ``success_status`` and, if ``ok_path`` is set, the
    value there is one of ``ok_values`` (for gateways that answer 200 to a refusal).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="SMS gateway", description="The gateway in reasons.")
    method: Literal["GET", "POST", "PUT"] = "POST"
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)
    body_format: Literal["json", "form", "none"] = "json"
    body: dict[str, Any] = Field(default_factory=dict)
    success_status: frozenset[int] = frozenset({200, 201, 202})
    ok_path: str | None = None
    ok_values: tuple[Scalar, ...] = (True,)
    ref_path: str | None = Field(default=None, description="The message id in the reply.")
    error_code_path: str | None = None
    error_message_path: str | None = None
    hard_codes: frozenset[str] = Field(
        default=frozenset(), description="Error codes that mean the number cannot receive."
    )
    temporary_codes: frozenset[str] = Field(
        default=frozenset(), description="Error codes that pass (a rate limit, a busy line)."
    )
    callbacks: GatewayCallbacks = GatewayCallbacks()
    http: HttpSettings = HttpSettings()

    @model_validator(mode="after")
    def _templates(self) -> HttpGatewaySettings:
        unknown = (
            _placeholders(self.url) | _placeholders(self.headers) | _placeholders(self.body)
        ) - PLACEHOLDERS.keys()
        if unknown:
            raise ValueError(
                f"unknown placeholders {sorted(unknown)}; known: {sorted(PLACEHOLDERS)}"
            )
        multiline = _placeholders(self.headers) - _SINGLE_LINE
        if multiline:
            raise ValueError(
                f"headers may not hold {sorted(multiline)}: only {sorted(_SINGLE_LINE)}"
            )
        if self.body and (self.body_format == "none" or self.method == "GET"):
            raise ValueError("a body needs body_format json or form and a method other than GET")
        if self.body_format == "form" and not all(
            isinstance(v, Scalar) for v in self.body.values()
        ):
            raise ValueError("a form body takes plain values, not lists or objects")
        return self


class HttpGatewaySms(HttpTransport):
    """SMS through a configured HTTP gateway (:class:`HttpGatewaySettings`).

    The protocol is the gateway's own, as configured; the mapping of replies is
    :func:`patron.channels.http.http_outcome`'s, refined by ``hard_codes`` and
    ``temporary_codes``. The ``{key}`` placeholder lets a gateway that deduplicates on it
    take a retried message once.
    """

    channel = Channel.SMS

    def __init__(self, settings: HttpGatewaySettings, *, region: str = "RU") -> None:
        super().__init__(settings.http)
        self.provider = settings.name
        self.settings = settings
        self.region = region

    def request(self, client: httpx.AsyncClient, envelope: Envelope) -> httpx.Request:
        s = self.settings
        to = e164(envelope.to, region=self.region)
        values: dict[str, str | int] = {
            "to": to, "to_digits": to.removeprefix("+"), "sender": envelope.sender,
            "text": envelope.text, "subject": envelope.subject, "key": envelope.key,
            "message_id": envelope.message_id,
        }  # fmt: skip
        url = _fill(s.url, values, url=True)
        headers = {k: str(_fill(v, values)) for k, v in s.headers.items()}
        if s.body_format == "json" and s.body:
            return client.build_request(s.method, url, headers=headers, json=_fill(s.body, values))
        if s.body_format == "form" and s.body:
            form = {k: str(v) for k, v in _fill(s.body, values).items()}
            return client.build_request(s.method, url, headers=headers, data=form)
        return client.build_request(s.method, url, headers=headers)

    def verdict(self, envelope: Envelope, response: httpx.Response) -> Outcome:
        s = self.settings
        body = json_body(response)
        accepted = response.status_code in s.success_status and (
            s.ok_path is None or json_path(body, s.ok_path) in s.ok_values
        )
        code = json_path(body, s.error_code_path) if s.error_code_path else None
        detail = json_path(body, s.error_message_path) if s.error_message_path else None
        ref = json_path(body, s.ref_path) if s.ref_path else None
        return http_outcome(
            envelope, response.status_code, provider=self.provider,
            ref=None if ref is None else str(ref),
            code=None if code is None else str(code),
            detail=str(detail) if detail is not None else response.text[:200],
            wait=retry_after(response.headers.get("Retry-After")),
            hard=str(code) in s.hard_codes, temporary=str(code) in s.temporary_codes,
            accepted=accepted,
        )  # fmt: skip


def verify_gateway_signature(
    body: bytes, headers: Mapping[str, str], *, signature: GatewaySignature, secret: str
) -> bool:
    """Whether a callback carries the gateway's HMAC of its raw body."""
    digest = hmac.new(secret.encode(), body, signature.algorithm).digest()
    text = digest.hex() if signature.encoding == "hex" else base64.b64encode(digest).decode()
    return same_secret(header(headers, signature.header), signature.prefix + text)


def gateway_feedback(
    body: bytes, *, callbacks: GatewayCallbacks, received_at: datetime, region: str = "RU"
) -> list[Feedback]:
    """A gateway's delivery reports and inbound messages as :class:`Feedback`.

    A sender's phone is given in E.164 when it reads as one (numbers without a country
    code in ``region``), else as the gateway wrote it. A body that is not what
    ``callbacks.format`` says raises :class:`InvalidInput`.
    """
    c = callbacks
    try:
        if c.format == "form":
            parsed: object = dict(parse_qsl(body.decode(), keep_blank_values=True))
        else:
            parsed = json.loads(body)
    except ValueError as exc:  # JSON or UTF-8 that does not decode
        raise InvalidInput(f"the gateway's callback is not {c.format}: {exc}") from None
    items = parsed if isinstance(parsed, list) else [parsed]
    found: list[Feedback] = []
    for item in items:
        status = json_path(item, c.status_path)
        text = json_path(item, c.text_path)
        ref = json_path(item, c.ref_path)
        at = _time(json_path(item, c.time_path), received_at) if c.time_path else received_at
        ref_text = None if ref is None else str(ref)
        if status is None and isinstance(text, str):
            sender = json_path(item, c.from_path)
            found.append(
                Feedback(
                    Channel.SMS, inbound_kind(text), at, provider_ref=ref_text,
                    from_address=_phone(sender, region), text=text,
                )
            )  # fmt: skip
            continue
        kind = c.statuses.get(str(status))
        if kind is None:
            continue
        reason = None
        if kind == "failed":
            detail = json_path(item, c.reason_path) if c.reason_path else None
            reason = f"{status}" + (f": {detail}" if detail is not None else "")
        hard = kind == "failed" and str(status) in c.hard_statuses
        found.append(
            Feedback(Channel.SMS, kind, at, provider_ref=ref_text, reason=reason, hard=hard)
        )
    return found


def _phone(raw: object, region: str) -> str | None:
    if raw is None:
        return None
    try:
        return e164(str(raw), region=region)
    except ValueError:
        return str(raw)


def _time(raw: object, default: datetime) -> datetime:
    """Unix seconds, or ISO 8601; anything else is the default."""
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return datetime.fromtimestamp(raw, UTC)
    if isinstance(raw, str) and raw.strip():
        if raw.strip().isdigit():
            return datetime.fromtimestamp(int(raw), UTC)
        try:
            return parse_datetime(raw)
        except ValueError:
            return default
    return default
