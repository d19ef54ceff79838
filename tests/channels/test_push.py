"""Web push against a local server playing the push service: it checks the VAPID token,
decrypts the aes128gcm body with the subscription's private key made here, and answers
as RFC 8030 says (201, 404/410 for a gone subscription, 429 with Retry-After)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import http_ece
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

from patron.channels.base import Outcome
from patron.channels.http import HttpSettings
from patron.channels.push import MAX_PAYLOAD, VapidSettings, WebPush
from patron.models.consent import Channel
from tests.fixtures.http_provider import (
    Closer,
    ProviderServer,
    Reply,
    Seen,
    Start,
    envelope,
    handed_before_received,
)

SUBJECT = "mailto:crm@shop.example.com"


def payload_size(message_id: int, text: str) -> int:
    """Bytes of the notification JSON the transport makes for ``envelope(message_id)``."""
    key = envelope(message_id, "").key
    return len(json.dumps({"title": "A gift for you", "body": text, "tag": key}).encode())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


@dataclass
class Browser:
    """What a browser keeps for one subscription: its key pair and auth secret."""

    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth: bytes = field(default_factory=lambda: bytes(range(16)))

    def subscription(self, endpoint: str) -> str:
        """``PushSubscription.toJSON()``, as the site's page posts it to us."""
        keys = {"p256dh": b64(point(self.key)), "auth": b64(self.auth)}
        return json.dumps({"endpoint": endpoint, "expirationTime": None, "keys": keys})

    def read(self, body: bytes) -> Any:
        """Decrypt a push message as the browser does."""
        plain = http_ece.decrypt(
            body, private_key=self.key, auth_secret=self.auth, version="aes128gcm"
        )
        return json.loads(plain)


class PushService:
    """RFC 8030's push resource, under ``/push/{name}``: ``ok`` takes the message,
    ``gone`` answers 410, ``missing`` 404, ``busy`` 429 with Retry-After: 30."""

    def __init__(self, browser: Browser, vapid_public: str) -> None:
        self.browser = browser
        self.vapid_public = vapid_public
        self.origin = ""
        self.payloads: list[Any] = []

    def __call__(self, seen: Seen) -> Reply:
        assert seen.method == "POST" and seen.path.startswith("/push/")
        scheme, _, params = seen.headers["authorization"].partition(" ")
        parts = dict(p.split("=", 1) for p in params.split(","))
        if scheme != "vapid" or parts.get("k") != self.vapid_public:
            return Reply(401, b"")
        if not Vapid02.verify(seen.headers["authorization"]):
            return Reply(403, b"")
        claims = json.loads(unb64(parts["t"].split(".")[1]))
        assert claims["aud"] == self.origin and claims["sub"] == SUBJECT
        assert time.time() < claims["exp"] <= time.time() + 24 * 3600
        assert seen.headers["content-encoding"] == "aes128gcm"
        assert seen.headers["content-type"] == "application/octet-stream"
        assert (seen.headers["ttl"], seen.headers["urgency"]) == ("3600", "high")
        assert len(seen.headers["topic"]) <= 32
        self.payloads.append(self.browser.read(seen.body))
        match seen.path.removeprefix("/push/"):
            case "gone":
                return Reply(410, b"")
            case "missing":
                return Reply(404, b"")
            case "busy":
                return Reply(429, b"", headers={"Retry-After": "30"})
        return Reply(201, b"", headers={"Location": f"{self.origin}/m/{len(self.payloads)}"})


@pytest.fixture
def push(
    provider: Start, closing: Closer
) -> tuple[ProviderServer, PushService, Browser, Callable[..., WebPush]]:
    """A browser's subscription, the push service it points at, and a maker of
    transports with a VAPID key the service knows."""
    browser = Browser()
    vapid = Vapid02()
    vapid.generate_keys()
    service = PushService(browser, b64(point(vapid.private_key)))
    server = provider(service)
    service.origin = server.url

    def make(*, pem: bool = False, concurrency: int = 1) -> WebPush:
        raw = vapid.private_key.private_numbers().private_value.to_bytes(32, "big")
        key = vapid.private_pem().decode() if pem else b64(raw)
        settings = VapidSettings(
            private_key=key, subject=SUBJECT, ttl=3600, urgency="high", allow_http=True,
            endpoint_hosts=frozenset({"127.0.0.1", "push.example.com"}),
            http=HttpSettings(concurrency=concurrency),
        )  # fmt: skip
        return closing(WebPush(settings))

    return server, service, browser, make


def test_push_encrypts_for_the_subscription_and_signs_with_vapid(
    push: tuple[ProviderServer, PushService, Browser, Callable[..., WebPush]],
) -> None:
    """Given a browser's subscription, when a message goes, then the push service gets a
    VAPID-signed request whose body the browser decrypts to the notification."""
    server, service, browser, make = push
    web = make()
    message = envelope(1, browser.subscription(f"{server.url}/push/ok"), channel=Channel.PUSH,
                       text="Скидка 10% до воскресенья")  # fmt: skip

    outcomes = web.deliver([message], handing_over=server.handing_over)

    assert outcomes == [Outcome(1, "sent", provider_ref=f"{server.url}/m/1")]
    assert service.payloads == [
        {"title": "A gift for you", "body": "Скидка 10% до воскресенья", "tag": message.key}
    ]
    handed_before_received(server, lambda seen: 1)


def test_push_outcomes(
    push: tuple[ProviderServer, PushService, Browser, Callable[..., WebPush]],
) -> None:
    """Given subscriptions that are gone, missing, throttled, malformed, too small for the
    text or not on a push service, then each gets its own outcome and the good one goes."""
    server, service, browser, make = push
    web = make(pem=True)
    wrong_keys = json.dumps(
        {"endpoint": f"{server.url}/push/ok", "keys": {"p256dh": "AAAA", "auth": "AAAA"}}
    )
    envelopes = [
        envelope(1, browser.subscription(f"{server.url}/push/gone"), channel=Channel.PUSH),
        envelope(2, browser.subscription(f"{server.url}/push/missing"), channel=Channel.PUSH),
        envelope(3, '{"endpoint": "nowhere"}', channel=Channel.PUSH),
        envelope(4, wrong_keys, channel=Channel.PUSH),
        envelope(
            5,
            browser.subscription(f"{server.url}/push/ok"),
            channel=Channel.PUSH,
            text="x" * MAX_PAYLOAD,
        ),
        envelope(6, browser.subscription(f"{server.url}/push/ok"), channel=Channel.PUSH),
        envelope(
            8, browser.subscription("http://169.254.169.254/latest/meta-data"), channel=Channel.PUSH
        ),
        envelope(9, browser.subscription("https://[::1]:8443/push/x"), channel=Channel.PUSH),
        envelope(7, browser.subscription(f"{server.url}/push/busy"), channel=Channel.PUSH),
    ]

    outcomes = web.deliver(envelopes, handing_over=server.handing_over)

    gone = "the subscription has expired or was withdrawn"
    assert outcomes == [
        Outcome(1, "failed", f"Web push refused (HTTP 410): {gone}", hard_bounce=True),
        Outcome(2, "failed", f"Web push refused (HTTP 404): {gone}", hard_bounce=True),
        Outcome(
            3, "failed",
            "Web push: not a push subscription: endpoint: String should match pattern "
            "'^https?://[^/]+'; keys: Field required",
        ),
        Outcome(4, "failed", "Web push: the subscription's keys are not a P-256 key and a 16-byte secret"),
        Outcome(5, "failed", f"Web push: the notification is {payload_size(5, 'x' * MAX_PAYLOAD)} bytes; push takes {MAX_PAYLOAD}"),
        Outcome(6, "sent", provider_ref=f"{server.url}/m/3"),
        Outcome(8, "failed", "Web push: 169.254.169.254 is not a push service we send to"),
        Outcome(9, "failed", "Web push: ::1 is not a push service we send to"),
        Outcome(7, "retry", "Web push refused (HTTP 429)", retry_after=30.0),
    ]  # fmt: skip
    assert [p["body"] for p in service.payloads] == ["Hello 1", "Hello 2", "Hello 6", "Hello 7"]
    assert sorted(e.message_id for _, e in server.handed) == [1, 2, 6, 7]


def test_the_largest_notification_that_fits_is_sent(
    push: tuple[ProviderServer, PushService, Browser, Callable[..., WebPush]],
) -> None:
    """Given a text that makes the payload exactly MAX_PAYLOAD bytes, then it goes in
    one 4,096-byte body."""
    server, service, browser, make = push
    web = make()
    filler = MAX_PAYLOAD - payload_size(1, "")
    message = envelope(1, browser.subscription(f"{server.url}/push/ok"), channel=Channel.PUSH,
                       text="x" * filler)  # fmt: skip

    (outcome,) = web.deliver([message], handing_over=server.handing_over)

    assert outcome.result == "sent"
    assert len(server.seen[0].body) == 4096
    assert service.payloads[0]["body"] == "x" * filler


def test_plain_http_endpoints_are_refused_unless_allowed(closing: Closer) -> None:
    """Given the default settings, then an http:// endpoint fails before any request."""
    vapid = Vapid02()
    vapid.generate_keys()
    web = closing(WebPush(VapidSettings(private_key=vapid.private_pem().decode(), subject=SUBJECT)))
    endpoint = "http://push.example.com/push/x"
    handed: list[int] = []
    outcomes = web.deliver(
        [envelope(1, Browser().subscription(endpoint), channel=Channel.PUSH)],
        handing_over=lambda es: handed.extend(e.message_id for e in es),
    )

    assert outcomes == [
        Outcome(1, "failed", f"Web push: a push endpoint must be https: {endpoint!r}")
    ]
    assert handed == []


def test_an_endpoint_that_is_no_url_fails_alone(
    push: tuple[ProviderServer, PushService, Browser, Callable[..., WebPush]],
) -> None:
    server, _, browser, make = push
    web = make()
    broken = f"{server.url}/push/a\nb"

    outcomes = web.deliver(
        [envelope(1, browser.subscription(broken), channel=Channel.PUSH),
         envelope(2, browser.subscription(f"{server.url}/push/ok"), channel=Channel.PUSH)],
        handing_over=server.handing_over,
    )  # fmt: skip

    at = len(server.url) + len("/push/a")
    assert outcomes == [
        Outcome(1, "failed", f"Web push: Invalid non-printable ASCII character in URL, '\\n' at position {at}."),
        Outcome(2, "sent", provider_ref=f"{server.url}/m/1"),
    ]  # fmt: skip
