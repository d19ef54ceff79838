"""WhatsApp: Meta's Cloud API and Twilio's WhatsApp addresses against local servers that
answer as each documents; the Cloud API's webhook signature, challenge and payloads."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from patron.channels.base import Outcome
from patron.channels.feedback import Feedback
from patron.channels.http import HttpSettings
from patron.channels.twilio import TwilioSettings
from patron.channels.whatsapp import (
    CloudWhatsApp,
    CloudWhatsAppSettings,
    TwilioWhatsApp,
    cloud_challenge,
    cloud_feedback,
    verify_cloud_signature,
)
from patron.models.consent import Channel
from tests.fixtures.http_provider import (
    Closer,
    Reply,
    Seen,
    Start,
    envelope,
    handed_before_received,
)

ACCESS_TOKEN = "EAAG-cloud-api-token"
PHONE_ID = "106540352242922"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def graph_error(code: int, message: str, details: str, *, status: int = 400) -> Reply:
    """A Graph API error as the Cloud API writes it."""
    error = {
        "message": message, "type": "OAuthException", "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": details},
        "fbtrace_id": "AbCdEf123",
    }  # fmt: skip
    return Reply(status, {"error": error})


def cloud_api(seen: Seen) -> Reply:
    """The messages endpoint: +79160000026 cannot receive (131026), +79160000047 is past
    the 24-hour window (131047), +79160000429 meets the throughput limit (130429)."""
    assert (seen.method, seen.path) == ("POST", f"/v21.0/{PHONE_ID}/messages")
    if seen.headers.get("authorization") != f"Bearer {ACCESS_TOKEN}":
        return graph_error(190, "Invalid OAuth access token.", "", status=401)
    body = seen.json()
    to = body["to"]
    assert body == {
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": to,
        "type": "text", "text": {"body": body["text"]["body"]},
    }  # fmt: skip
    match to:
        case "+79160000026":
            return graph_error(131026, "(#131026) Message Undeliverable.", "Message Undeliverable.")
        case "+79160000047":
            return graph_error(
                131047, "(#131047) Re-engagement message",
                "Message failed to send because more than 24 hours have passed since the "
                "customer last replied to this number.",
            )  # fmt: skip
        case "+79160000429":
            return graph_error(
                130429, "(#130429) Rate limit hit", "Cloud API message throughput has been reached."
            )
    wamid = f"wamid.HBgL{to.removeprefix('+')}FQIAERgS"
    return Reply(
        200,
        {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to.removeprefix("+")}],
            "messages": [{"id": wamid}],
        },
    )


def test_cloud_api_sends_text_and_reads_each_error(closing: Closer, provider: Start) -> None:
    server = provider(cloud_api)
    settings = CloudWhatsAppSettings(
        access_token=ACCESS_TOKEN, phone_number_id=PHONE_ID, base_url=server.url,
        http=HttpSettings(concurrency=1),
    )  # fmt: skip
    whatsapp = closing(CloudWhatsApp(settings, region="RU"))
    envelopes = [
        envelope(1, "8 916 123-45-67", channel=Channel.WHATSAPP),
        envelope(2, "+79160000026", channel=Channel.WHATSAPP),
        envelope(3, "+79160000047", channel=Channel.WHATSAPP),
        envelope(4, "not a phone", channel=Channel.WHATSAPP),
        envelope(5, "+79160000429", channel=Channel.WHATSAPP),
    ]
    outcomes = whatsapp.deliver(envelopes, handing_over=server.handing_over)

    assert outcomes == [
        Outcome(1, "sent", provider_ref="wamid.HBgL79161234567FQIAERgS"),
        Outcome(2, "failed", "WhatsApp error 131026 (HTTP 400): (#131026) Message Undeliverable.", hard_bounce=True),
        Outcome(
            3, "failed",
            "WhatsApp error 131047 (HTTP 400): (#131047) Re-engagement message (Message failed to "
            "send because more than 24 hours have passed since the customer last replied to this "
            "number.)",
        ),
        Outcome(4, "failed", "WhatsApp: not a phone number: 'not a phone'"),
        Outcome(
            5, "retry",
            "WhatsApp error 130429 (HTTP 400): (#130429) Rate limit hit (Cloud API message "
            "throughput has been reached.)",
        ),
    ]  # fmt: skip
    assert server.seen[0].json()["text"] == {"body": "Hello 1"}
    handed_before_received(server, lambda seen: int(seen.json()["text"]["body"].split()[-1]))


def test_cloud_api_refusing_the_token_is_retried(closing: Closer, provider: Start) -> None:
    server = provider(cloud_api)
    settings = CloudWhatsAppSettings(
        access_token="expired", phone_number_id=PHONE_ID, base_url=server.url
    )
    whatsapp = closing(CloudWhatsApp(settings))
    outcomes = whatsapp.deliver([envelope(1, "+79161234567")], handing_over=server.handing_over)

    assert outcomes == [
        Outcome(1, "retry", "WhatsApp error 190 (HTTP 401): Invalid OAuth access token.")
    ]


def test_twilio_whatsapp_prefixes_both_addresses(closing: Closer, provider: Start) -> None:
    sid = "AC" + "0123456789abcdef" * 2

    def respond(seen: Seen) -> Reply:
        assert seen.basic_auth() == (sid, "token")
        form = seen.form()
        if form["To"] == "whatsapp:+15005550001":
            return Reply(
                400, {"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400}
            )
        return Reply(201, {"sid": "SM" + "1" * 32, "status": "queued", "to": form["To"]})

    server = provider(respond)
    settings = TwilioSettings(
        account_sid=sid, auth_token="token", sender="whatsapp:+14155238886", base_url=server.url,
        http=HttpSettings(concurrency=1),
    )  # fmt: skip
    whatsapp = closing(TwilioWhatsApp(settings, region="RU"))
    outcomes = whatsapp.deliver(
        [envelope(1, "+79161234567", channel=Channel.WHATSAPP), envelope(2, "+15005550001")],
        handing_over=server.handing_over,
    )

    assert outcomes == [
        Outcome(1, "sent", provider_ref="SM" + "1" * 32),
        Outcome(2, "failed", "Twilio error 21211 (HTTP 400): Invalid 'To' Phone Number", hard_bounce=True),
    ]  # fmt: skip
    assert server.seen[0].form() == {
        "To": "whatsapp:+79161234567", "From": "whatsapp:+14155238886", "Body": "Hello 1"
    }  # fmt: skip
    assert whatsapp.channel is Channel.WHATSAPP


# -- the Cloud API's webhook -------------------------------------------------------------


def test_cloud_signature() -> None:
    """Given the HMAC computed here by hand, then the payload is accepted; a changed body,
    another secret, a missing prefix or no header is not."""
    body = b'{"object":"whatsapp_business_account","entry":[]}'
    digest = hmac.new(b"app-secret", body, hashlib.sha256).hexdigest()

    assert verify_cloud_signature(body, f"sha256={digest}", app_secret="app-secret")
    assert not verify_cloud_signature(body + b"\n", f"sha256={digest}", app_secret="app-secret")
    assert not verify_cloud_signature(body, f"sha256={digest}", app_secret="other-secret")
    assert not verify_cloud_signature(body, digest, app_secret="app-secret")
    assert not verify_cloud_signature(body, None, app_secret="app-secret")


def test_cloud_challenge() -> None:
    params = {
        "hub.mode": "subscribe",
        "hub.verify_token": "my-verify",
        "hub.challenge": "1158201444",
    }
    assert cloud_challenge(params, verify_token="my-verify") == "1158201444"
    assert cloud_challenge(params, verify_token="other") is None
    assert cloud_challenge({**params, "hub.mode": "unsubscribe"}, verify_token="my-verify") is None


def webhook(value: dict[str, Any]) -> dict[str, Any]:
    """A ``messages`` webhook as Meta posts it."""
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_ID},
        **value,
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"value": value, "field": "messages"}]}],
    }


def test_cloud_statuses() -> None:
    payload = webhook(
        {
            "statuses": [
                {"id": "wamid.A", "status": "sent", "timestamp": "1795428000", "recipient_id": "79161234567"},
                {"id": "wamid.A", "status": "delivered", "timestamp": "1795428060", "recipient_id": "79161234567"},
                {"id": "wamid.A", "status": "read", "timestamp": "1795428120", "recipient_id": "79161234567"},
                {
                    "id": "wamid.B", "status": "failed", "timestamp": "1795428000",
                    "recipient_id": "79160000026",
                    "errors": [{"code": 131026, "title": "Message undeliverable",
                                "message": "Message undeliverable",
                                "error_data": {"details": "Message Undeliverable."}}],
                },
                {
                    "id": "wamid.C", "status": "failed", "timestamp": "1795428000",
                    "recipient_id": "79160000047",
                    "errors": [{"code": 131047, "title": "Re-engagement message"}],
                },
            ]
        }
    )  # fmt: skip

    def at(seconds: int) -> datetime:
        return datetime.fromtimestamp(seconds, UTC)

    assert cloud_feedback(payload, received_at=NOW) == [
        Feedback(Channel.WHATSAPP, "delivered", at(1795428060), provider_ref="wamid.A"),
        Feedback(Channel.WHATSAPP, "read", at(1795428120), provider_ref="wamid.A"),
        Feedback(
            Channel.WHATSAPP, "failed", at(1795428000), provider_ref="wamid.B",
            reason="WhatsApp error 131026: Message undeliverable (Message Undeliverable.)", hard=True,
        ),
        Feedback(
            Channel.WHATSAPP, "failed", at(1795428000), provider_ref="wamid.C",
            reason="WhatsApp error 131047: Re-engagement message",
        ),
    ]  # fmt: skip


def test_cloud_inbound_messages() -> None:
    payload = webhook(
        {
            "contacts": [{"profile": {"name": "Anna"}, "wa_id": "79161234567"}],
            "messages": [
                {"from": "79161234567", "id": "wamid.IN1", "timestamp": "1795428000",
                 "type": "text", "text": {"body": "Hello, is the sale on?"}},
                {"from": "79161234567", "id": "wamid.IN2", "timestamp": "1795428001",
                 "type": "text", "text": {"body": " Stop "}},
                {"from": "79161234568", "id": "wamid.IN3", "timestamp": "1795428002",
                 "type": "button", "button": {"payload": "STOP", "text": "Отписаться"}},
            ],
        }
    )  # fmt: skip
    assert cloud_feedback(json.loads(json.dumps(payload)), received_at=NOW) == [
        Feedback(
            Channel.WHATSAPP, "inbound", datetime.fromtimestamp(1795428000, UTC),
            provider_ref="wamid.IN1", from_address="+79161234567", text="Hello, is the sale on?",
        ),
        Feedback(
            Channel.WHATSAPP, "opt_out", datetime.fromtimestamp(1795428001, UTC),
            provider_ref="wamid.IN2", from_address="+79161234567", text=" Stop ",
        ),
        Feedback(
            Channel.WHATSAPP, "opt_out", datetime.fromtimestamp(1795428002, UTC),
            provider_ref="wamid.IN3", from_address="+79161234568", text="Отписаться",
        ),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "payload", [{}, {"entry": "x"}, webhook({"statuses": [{"status": "sent"}]})]
)
def test_cloud_payloads_with_nothing_to_report(payload: dict[str, Any]) -> None:
    assert cloud_feedback(payload, received_at=NOW) == []
