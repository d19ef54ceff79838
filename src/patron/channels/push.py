"""Web push: a notification encrypted for one browser subscription, sent with VAPID.

Protocol: ``POST`` to the subscription's ``endpoint`` (RFC 8030) with a body encrypted
for its ``p256dh`` key and ``auth`` secret as ``Content-Encoding: aes128gcm`` (RFC 8291,
RFC 8188), ``TTL``, ``Urgency`` and ``Topic`` headers, and ``Authorization: vapid
t=<JWT>,k=<our public key>`` (RFC 8292); 201 with the message's ``Location``, 404 or 410
when the subscription is gone, 429 with ``Retry-After``.
https://datatracker.ietf.org/doc/html/rfc8030#section-5
https://datatracker.ietf.org/doc/html/rfc8291
https://datatracker.ietf.org/doc/html/rfc8292

The encryption is ``http_ece`` and the VAPID token ``py_vapid``, the two libraries
``pywebpush`` is made of; ``pywebpush`` itself only adds sending through ``requests`` or
``aiohttp``, where this transport sends through the shared httpx client like every other
channel, with its concurrency and rate limit.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from urllib.parse import urlsplit

import http_ece
import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid, VapidException
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from patron.channels.base import Envelope, Outcome
from patron.channels.http import BadInput, HttpSettings, HttpTransport, http_outcome, retry_after
from patron.models.consent import Channel

MAX_PAYLOAD = 3993
"""Bytes of plaintext that fit the 4,096-byte body push services take, once encrypted
(86 bytes of header, 16 of tag, 1 of padding delimiter)."""
_TOKEN_LIFE = 12 * 3600  # RFC 8292 allows at most 24 hours


class PushKeys(BaseModel):
    """A subscription's keys, base64url as the browser gives them."""

    p256dh: str
    auth: str


class PushSubscription(BaseModel):
    """What ``PushSubscription.toJSON()`` gives in the browser: the envelope's ``to``."""

    endpoint: str = Field(pattern=r"^https?://[^/]+")
    keys: PushKeys


class VapidSettings(BaseModel):
    """Our VAPID key pair and contact, and how long push services keep a message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    private_key: SecretStr = Field(
        description="The VAPID private key: PEM, or base64url of the raw 32 bytes or DER."
    )
    subject: str = Field(
        pattern=r"^(mailto:|https://)", description="A mailto: or https: contact for push services."
    )
    ttl: int = Field(default=86_400, ge=0, le=2_419_200, description="Seconds kept offline.")
    urgency: str = Field(default="normal", pattern=r"^(very-low|low|normal|high)$")
    endpoint_hosts: frozenset[str] | None = Field(
        default=None,
        description="The push services we send to, by host or parent domain "
        "(fcm.googleapis.com, push.services.mozilla.com, push.apple.com...); none: any.",
    )
    allow_http: bool = Field(
        default=False, description="Take http:// endpoints: a push service on this machine."
    )
    http: HttpSettings = HttpSettings()


class WebPush(HttpTransport):
    """Web push notifications (see the module docstring).

    A subscription comes from a browser, so from anyone: its endpoint must be https (unless
    ``allow_http``) and, with ``endpoint_hosts``, on a known push service, so that no one
    can point our requests at a host of their choosing.

    The payload is JSON ``{"title": subject, "body": text, "tag": key}`` for the site's
    service worker to show; ``tag`` lets it replace a repeated notification instead of
    showing it twice, and ``Topic`` (from the key) lets the push service replace one it
    still holds. 404 and 410 fail hard: the subscription has expired or been withdrawn.
    """

    channel = Channel.PUSH
    provider = "Web push"

    def __init__(self, settings: VapidSettings) -> None:
        super().__init__(settings.http)
        self.settings = settings
        key = settings.private_key.get_secret_value().strip()
        self._vapid = (
            Vapid.from_pem(key.encode()) if key.startswith("-----") else Vapid.from_string(key)
        )

    def request(self, client: httpx.AsyncClient, envelope: Envelope) -> httpx.Request:
        try:
            subscription = PushSubscription.model_validate_json(envelope.to)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise BadInput(f"not a push subscription: {problems}") from None
        payload = json.dumps(
            {"title": envelope.subject, "body": envelope.text, "tag": envelope.key},
            ensure_ascii=False,
        ).encode()
        if len(payload) > MAX_PAYLOAD:
            raise BadInput(f"the notification is {len(payload)} bytes; push takes {MAX_PAYLOAD}")
        origin = self._origin(subscription.endpoint)
        claims = {
            "aud": origin,
            "sub": self.settings.subject,
            "exp": int(time.time()) + _TOKEN_LIFE,
        }
        try:
            token = self._vapid.sign(claims)
        except VapidException as exc:
            raise BadInput(f"no VAPID token for {origin}: {exc}") from None
        headers = {
            **token,
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(self.settings.ttl),
            "Urgency": self.settings.urgency,
            "Topic": _topic(envelope.key),
        }
        body = encrypt(payload, subscription.keys)
        return client.build_request("POST", subscription.endpoint, headers=headers, content=body)

    def _origin(self, endpoint: str) -> str:
        """The endpoint's scheme and host, once it is one we may send to."""
        parts = urlsplit(endpoint)
        if parts.scheme != "https" and not (parts.scheme == "http" and self.settings.allow_http):
            raise BadInput(f"a push endpoint must be https: {endpoint!r}")
        host = (parts.hostname or "").lower()
        allowed = self.settings.endpoint_hosts
        if allowed is not None and not any(host == h or host.endswith(f".{h}") for h in allowed):
            raise BadInput(f"{host} is not a push service we send to")
        return f"{parts.scheme}://{parts.netloc}"

    def verdict(self, envelope: Envelope, response: httpx.Response) -> Outcome:
        status = response.status_code
        gone = status in (404, 410)
        detail = "the subscription has expired or was withdrawn" if gone else response.text[:200]
        return http_outcome(
            envelope, status, provider=self.provider, ref=response.headers.get("Location"),
            detail=detail or None, wait=retry_after(response.headers.get("Retry-After")),
            hard=gone,
        )  # fmt: skip


def encrypt(payload: bytes, keys: PushKeys) -> bytes:
    """``payload`` as an ``aes128gcm`` body for the subscription's keys (RFC 8291), from a
    key pair made for this message alone."""
    try:
        receiver = _unb64(keys.p256dh)
        auth = _unb64(keys.auth)
    except (binascii.Error, ValueError):
        raise BadInput("the subscription's keys are not base64url") from None
    if len(receiver) != 65 or receiver[0] != 4 or len(auth) != 16:
        raise BadInput("the subscription's keys are not a P-256 key and a 16-byte secret")
    try:
        body: bytes = http_ece.encrypt(
            payload, private_key=ec.generate_private_key(ec.SECP256R1()), dh=receiver,
            auth_secret=auth, version="aes128gcm",
        )  # fmt: skip
    except ValueError as exc:  # a point that is not on the curve
        raise BadInput(f"the subscription's key is not usable: {exc}") from None
    return body


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _topic(key: str) -> str:
    """A ``Topic`` from the message key: at most 32 base64url characters (RFC 8030 5.4)."""
    return base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()[:24]).decode()
