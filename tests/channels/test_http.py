"""What every HTTP channel shares: the rate limit, requests in flight, the handover, and
the outcome of each kind of reply or broken connection. Run through the configurable
gateway, the plainest of the HTTP transports, against a local server."""

from __future__ import annotations

import socket
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from py_vapid import Vapid02

from patron.channels.base import Envelope, Outcome, Transport
from patron.channels.http import HttpSettings, http_outcome, json_path, retry_after
from patron.channels.push import VapidSettings, WebPush
from patron.channels.sms import HttpGatewaySettings, HttpGatewaySms, TwilioSms
from patron.channels.telegram import TelegramBot, TelegramSettings
from patron.channels.twilio import TwilioSettings
from patron.channels.whatsapp import CloudWhatsApp, CloudWhatsAppSettings, TwilioWhatsApp
from patron.models.consent import Channel
from tests.fixtures.http_provider import (
    Closer,
    Reply,
    Seen,
    Start,
    envelope,
    handed_before_received,
    spaced,
)


def gateway(url: str, **http: Any) -> HttpGatewaySms:
    settings = HttpGatewaySettings(
        name="Gateway", url=f"{url}/send", body={"to": "{to}", "text": "{text}", "id": "{message_id}"},
        ref_path="id", http=HttpSettings(**http),
    )  # fmt: skip
    return HttpGatewaySms(settings, region="RU")


def accept(seen: Seen) -> Reply:
    return Reply(202, {"id": f"m{seen.json()['id']}"})


def message_of(seen: Seen) -> int:
    return int(seen.json()["id"])


def batch(count: int) -> list[Envelope]:
    return [envelope(n, f"+7916{n:07d}") for n in range(1, count + 1)]


def test_rate_limit_spaces_requests_as_the_server_sees_them(
    closing: Closer, provider: Start
) -> None:
    """Given 4 messages a second after a burst of 2, and 4 requests allowed in flight,
    when 14 messages go, then no second of the server's clock holds more than 6."""
    server = provider(accept)
    sms = closing(gateway(server.url, rate=4, burst=2, concurrency=4))
    outcomes = sms.deliver(batch(14), handing_over=server.handing_over)

    assert [o.result for o in outcomes] == ["sent"] * 14
    assert len(server.seen) == 14
    assert spaced([s.at for s in server.seen], window=1.0) <= 4 + 2
    handed_before_received(server, message_of)


def test_requests_are_in_flight_together(closing: Closer, provider: Start) -> None:
    """Given a server that holds each of the first 4 requests until all 4 have come, then
    4 requests in flight get them all through (one at a time would break the barrier)."""
    barrier = threading.Barrier(4, timeout=20)

    def respond(seen: Seen) -> Reply:
        if message_of(seen) <= 4:
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                return Reply(500, {"error": "requests came one at a time"})
        return accept(seen)

    server = provider(respond)
    sms = closing(gateway(server.url, concurrency=4))
    outcomes = sms.deliver(batch(8), handing_over=server.handing_over)

    assert outcomes == [Outcome(n, "sent", provider_ref=f"m{n}") for n in range(1, 9)]
    handed_before_received(server, message_of)


def test_connections_are_kept_between_batches(closing: Closer, provider: Start) -> None:
    """Given one request in flight, then two batches go over one connection."""
    server = provider(accept)
    sms = closing(gateway(server.url, concurrency=1))
    for first in (1, 3):
        pair = [envelope(first, "+79161234567"), envelope(first + 1, "+79161234568")]
        outcomes = sms.deliver(pair, handing_over=server.handing_over)
        assert [o.result for o in outcomes] == ["sent", "sent"]

    assert len(server.seen) == 4
    assert len({s.peer for s in server.seen}) == 1


def test_handover_failure_stops_the_batch_before_any_request(
    closing: Closer, provider: Start
) -> None:
    """Given the outbox cannot record the handover, then nothing is sent and the error
    reaches the worker."""
    server = provider(accept)
    sms = closing(gateway(server.url, concurrency=3))

    def broken(envelopes: Any) -> None:
        raise RuntimeError("database is locked")

    with pytest.raises(RuntimeError, match="database is locked"):
        sms.deliver(batch(5), handing_over=broken)
    assert server.seen == []


def test_messages_ready_together_share_one_handover(closing: Closer, provider: Start) -> None:
    """Given 5 requests in flight, then the first 5 messages are handed over in one call,
    and every message is handed over exactly once."""
    server = provider(accept)
    calls: list[list[int]] = []

    def handing_over(envelopes: Any) -> None:
        calls.append([e.message_id for e in envelopes])
        server.handing_over(envelopes)

    sms = closing(gateway(server.url, concurrency=5))
    outcomes = sms.deliver(batch(12), handing_over=handing_over)

    assert [o.result for o in outcomes] == ["sent"] * 12
    assert calls[0] == [1, 2, 3, 4, 5]
    assert sorted(n for call in calls for n in call) == list(range(1, 13))
    handed_before_received(server, message_of)


def test_a_message_the_handover_refuses_is_never_requested(
    closing: Closer, provider: Start
) -> None:
    """Given the handover refuses messages 2 and 5 (a later claim took them over), then
    the provider never sees them, their outcome is withdrawn, and the rest go."""
    server = provider(accept)

    def handing_over(envelopes: Any) -> set[int]:
        server.handing_over(envelopes)
        return {e.message_id for e in envelopes} & {2, 5}

    sms = closing(gateway(server.url, concurrency=3))
    outcomes = sms.deliver(batch(6), handing_over=handing_over)

    assert [o.result for o in outcomes] == [
        "sent", "withdrawn", "sent", "sent", "withdrawn", "sent"
    ]  # fmt: skip
    assert sorted(message_of(seen) for seen in server.seen) == [1, 3, 4, 6]
    handed_before_received(server, message_of)


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_provider_is_retried(closing: Closer) -> None:
    """Given nothing listens on the gateway's port, then the message is retried: it
    cannot have been accepted."""
    handed: list[int] = []
    sms = closing(gateway(f"http://127.0.0.1:{unused_port()}", connect_timeout=5))
    (outcome,) = sms.deliver(
        [envelope(1, "+79161234567")],
        handing_over=lambda es: handed.extend(e.message_id for e in es),
    )

    assert (outcome.result, outcome.hard_bounce) == ("retry", False)
    assert outcome.reason is not None
    assert outcome.reason.startswith("Gateway not reached: ConnectError")
    assert handed == [1]


@pytest.mark.parametrize("lost_reply", ["retry", "sent"])
def test_a_reply_lost_after_the_request_follows_the_setting(
    closing: Closer, provider: Start, lost_reply: str
) -> None:
    """Given the gateway drops the connection after reading the request, then the message
    is retried or counted sent as configured, and says why."""
    server = provider(lambda seen: Reply(drop=True))
    sms = closing(gateway(server.url, lost_reply=lost_reply))
    outcomes = sms.deliver([envelope(1, "+79161234567")], handing_over=server.handing_over)

    assert outcomes == [
        Outcome(
            1, lost_reply,  # type: ignore[arg-type]
            "Gateway reply lost: RemoteProtocolError: Server disconnected without sending a "
            "response.",
        )
    ]  # fmt: skip
    assert len(server.seen) == 1


# -- the shared mapping ------------------------------------------------------------------

ONE = envelope(9, "+79161234567")


@pytest.mark.parametrize(
    ("status", "options", "expected"),
    [
        (201, {"ref": "r1"}, Outcome(9, "sent", provider_ref="r1")),
        (
            200,
            {"accepted": False, "code": "E1", "detail": "no"},
            Outcome(9, "failed", "P error E1 (HTTP 200): no"),
        ),
        (
            400,
            {"code": 7, "detail": "bad", "hard": True},
            Outcome(9, "failed", "P error 7 (HTTP 400): bad", hard_bounce=True),
        ),
        (400, {"code": 7, "temporary": True}, Outcome(9, "retry", "P error 7 (HTTP 400)")),
        (401, {}, Outcome(9, "retry", "P refused (HTTP 401)")),
        (404, {"detail": "gone"}, Outcome(9, "failed", "P refused (HTTP 404): gone")),
        (408, {}, Outcome(9, "retry", "P refused (HTTP 408)")),
        (429, {"wait": 3.0}, Outcome(9, "retry", "P refused (HTTP 429)", retry_after=3.0)),
        (502, {"detail": "bad gateway"}, Outcome(9, "retry", "P refused (HTTP 502): bad gateway")),
    ],
)
def test_http_outcome(status: int, options: dict[str, Any], expected: Outcome) -> None:
    assert http_outcome(ONE, status, provider="P", **options) == expected


def test_retry_after_reads_seconds_and_dates() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert retry_after("120") == 120.0
    assert retry_after("Mon, 23 Nov 2026 12:00:30 GMT", now=now) == 30.0
    assert retry_after("Mon, 23 Nov 2026 11:00:00 GMT", now=now) == 0.0
    assert retry_after("soon") is None
    assert retry_after(None) is None


def test_json_path() -> None:
    data = {"messages": [{"id": "wamid.1"}], "result": {"message_id": 5}}
    assert json_path(data, "messages.0.id") == "wamid.1"
    assert json_path(data, "result.message_id") == 5
    assert json_path(data, "messages.3.id") is None
    assert json_path(data, "result.message_id.x") is None
    assert json_path(None, "id") is None


def test_every_http_channel_is_a_transport(closing: Closer) -> None:
    """Each provider's transport follows the Protocol the worker routes by (mypy checks
    the assignment) and names its channel; none touches the network until it sends."""
    sid = "AC" + "0" * 32
    vapid = Vapid02()
    vapid.generate_keys()
    transports: list[Transport] = [
        TwilioSms(TwilioSettings(account_sid=sid, auth_token="t", sender="+15005550006")),
        HttpGatewaySms(HttpGatewaySettings(url="https://gw.example.com/send")),
        TelegramBot(TelegramSettings(token="1:x")),
        TwilioWhatsApp(TwilioSettings(account_sid=sid, auth_token="t", sender="+14155238886")),
        CloudWhatsApp(CloudWhatsAppSettings(access_token="t", phone_number_id="1")),
        WebPush(VapidSettings(private_key=vapid.private_pem().decode(), subject="mailto:a@b.c")),
    ]
    for transport in transports:
        closing(transport)

    assert [t.channel for t in transports] == [
        Channel.SMS, Channel.SMS, Channel.TELEGRAM, Channel.WHATSAPP, Channel.WHATSAPP,
        Channel.PUSH,
    ]  # fmt: skip
    assert [t.deliver([], handing_over=lambda es: None) for t in transports] == [[]] * 6
