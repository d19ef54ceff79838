"""SMS: Twilio's Messages resource and a configured HTTP gateway, each against a local
server that answers as the provider documents."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from patron.channels.base import Outcome
from patron.channels.feedback import Feedback
from patron.channels.http import HttpSettings
from patron.channels.sms import (
    GatewayCallbacks,
    GatewaySignature,
    HttpGatewaySettings,
    HttpGatewaySms,
    TwilioSms,
    gateway_feedback,
    verify_gateway_signature,
)
from patron.channels.twilio import TwilioSettings
from patron.kit.errors import InvalidInput
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

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "twilio-auth-token-0123"
SERVICE = "MG" + "fedcba9876543210" * 2
CALLBACK = "https://crm.example.com/hooks/twilio/status"


def twilio_error(status: int, code: int, message: str) -> Reply:
    """An error body as Twilio's REST API writes it."""
    more = f"https://www.twilio.com/docs/errors/{code}"
    return Reply(status, {"code": code, "message": message, "more_info": more, "status": status})


class TwilioApi:
    """Twilio's Messages resource, with its documented test numbers: +15005550001 is
    invalid (21211), +15005550004 has replied STOP (21610), +15005550009 cannot take SMS
    (21614). +79160000429 meets the rate limit, +79160000500 a server error. A message's
    sid is made from its text, so that a test knows it."""

    def __call__(self, seen: Seen) -> Reply:
        assert seen.method == "POST"
        assert seen.path == f"/2010-04-01/Accounts/{SID}/Messages.json"
        if seen.basic_auth() != (SID, TOKEN):
            return twilio_error(401, 20003, "Authenticate")
        assert seen.headers["content-type"] == "application/x-www-form-urlencoded"
        form = seen.form()
        assert "From" in form or "MessagingServiceSid" in form
        match form["To"].removeprefix("whatsapp:"):
            case "+15005550001":
                return twilio_error(
                    400, 21211, f"The 'To' number {form['To']} is not a valid phone number."
                )
            case "+15005550004":
                return twilio_error(400, 21610, "Attempt to send to unsubscribed recipient")
            case "+15005550009":
                return twilio_error(400, 21614, "'To' number is not a valid mobile number")
            case "+79160000429":
                reply = twilio_error(429, 20429, "Too Many Requests")
                reply.headers["Retry-After"] = "7"
                return reply
            case "+79160000500":
                return twilio_error(500, 20500, "Internal Server Error")
        sid = sid_of(form["Body"])
        return Reply(
            201,
            {
                "sid": sid, "account_sid": SID, "to": form["To"], "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"), "body": form["Body"],
                "status": "accepted" if "MessagingServiceSid" in form else "queued",
                "error_code": None, "error_message": None, "direction": "outbound-api",
                "uri": f"/2010-04-01/Accounts/{SID}/Messages/{sid}.json",
            },
        )  # fmt: skip


def sid_of(text: str) -> str:
    return "SM" + hashlib.md5(text.encode()).hexdigest()


def message_of(seen: Seen) -> int:
    return int(seen.form()["Body"].split()[-1])


@pytest.fixture
def twilio(provider: Start, closing: Closer) -> tuple[ProviderServer, Callable[..., TwilioSms]]:
    """The fake Twilio and a maker of transports pointed at it."""
    server = provider(TwilioApi())

    def make(*, concurrency: int = 4, token: str = TOKEN, **fields: Any) -> TwilioSms:
        settings = TwilioSettings(
            account_sid=SID, auth_token=token, base_url=server.url,
            http=HttpSettings(concurrency=concurrency), **fields,
        )  # fmt: skip
        return closing(TwilioSms(settings, region="RU"))

    return server, make


def test_twilio_sends_a_form_with_basic_auth_and_returns_the_sid(
    twilio: tuple[ProviderServer, Callable[..., TwilioSms]],
) -> None:
    """Given numbers written in several ways, when they are sent, then Twilio gets each
    in E.164 with our sender, text and status callback, after its handover."""
    server, make = twilio
    sms = make(sender="+15005550006", status_callback=CALLBACK)
    envelopes = [envelope(1, "8 (916) 123-45-67"), envelope(2, "+1 415 555 2671")]

    outcomes = sms.deliver(envelopes, handing_over=server.handing_over)

    assert outcomes == [
        Outcome(1, "sent", provider_ref=sid_of("Hello 1")),
        Outcome(2, "sent", provider_ref=sid_of("Hello 2")),
    ]
    forms = sorted((s.form() for s in server.seen), key=lambda f: f["Body"])
    assert forms == [
        {
            "To": "+79161234567",
            "Body": "Hello 1",
            "From": "+15005550006",
            "StatusCallback": CALLBACK,
        },
        {
            "To": "+14155552671",
            "Body": "Hello 2",
            "From": "+15005550006",
            "StatusCallback": CALLBACK,
        },
    ]
    handed_before_received(server, message_of)
    assert sms.channel is Channel.SMS


def test_twilio_refusals_fail_alone_and_the_rest_go_on(
    twilio: tuple[ProviderServer, Callable[..., TwilioSms]],
) -> None:
    """Given a batch with Twilio's documented bad numbers, a phone that is no phone and a
    server error among good ones, then each gets its own outcome and the good ones go."""
    server, make = twilio
    sms = make(messaging_service_sid=SERVICE, concurrency=3)
    envelopes = [
        envelope(1, "+79161234567"),
        envelope(2, "+15005550001"),
        envelope(3, "+15005550004"),
        envelope(4, "12345"),
        envelope(5, "+15005550009"),
        envelope(6, "+79160000500"),
        envelope(7, "+79161234568"),
    ]

    outcomes = sms.deliver(envelopes, handing_over=server.handing_over)

    assert outcomes == [
        Outcome(1, "sent", provider_ref=sid_of("Hello 1")),
        Outcome(
            2, "failed",
            "Twilio error 21211 (HTTP 400): The 'To' number +15005550001 is not a valid phone number.",
            hard_bounce=True,
        ),
        Outcome(
            3, "failed",
            "Twilio error 21610 (HTTP 400): Attempt to send to unsubscribed recipient",
            hard_bounce=True,
        ),
        Outcome(4, "failed", "Twilio: not a valid phone number for region RU: '12345'"),
        Outcome(
            5, "failed", "Twilio error 21614 (HTTP 400): 'To' number is not a valid mobile number",
            hard_bounce=True,
        ),
        Outcome(6, "retry", "Twilio error 20500 (HTTP 500): Internal Server Error"),
        Outcome(7, "sent", provider_ref=sid_of("Hello 7")),
    ]  # fmt: skip
    assert sorted(message_of(s) for s in server.seen) == [1, 2, 3, 5, 6, 7]
    assert sorted(e.message_id for _, e in server.handed) == [1, 2, 3, 5, 6, 7]
    assert all(s.form()["MessagingServiceSid"] == SERVICE for s in server.seen)
    assert all("From" not in s.form() for s in server.seen)
    handed_before_received(server, message_of)


def test_twilio_rate_limit_holds_back_the_rest_of_the_batch(
    twilio: tuple[ProviderServer, Callable[..., TwilioSms]],
) -> None:
    """Given Twilio answers 429 with Retry-After: 7, then that message is retried after 7
    seconds, and the messages after it are retried without a request."""
    server, make = twilio
    sms = make(sender="+15005550006", concurrency=1)

    first, *rest = sms.deliver(
        [envelope(1, "+79160000429"), envelope(2, "+79161234567"), envelope(3, "+79161234568")],
        handing_over=server.handing_over,
    )

    assert first == Outcome(
        1, "retry", "Twilio error 20429 (HTTP 429): Too Many Requests", retry_after=7.0
    )
    for number, outcome in enumerate(rest, start=2):
        assert outcome.message_id == number
        assert (outcome.result, outcome.reason) == (
            "retry", "Twilio asked to wait (HTTP 429); not sent",
        )  # fmt: skip
        assert outcome.retry_after is not None and 0 < outcome.retry_after <= 7
    assert [message_of(s) for s in server.seen] == [1]
    assert [e.message_id for _, e in server.handed] == [1]


def test_twilio_refusing_our_credentials_is_retried(
    twilio: tuple[ProviderServer, Callable[..., TwilioSms]],
) -> None:
    """Given a wrong auth token, then messages wait for an operator to fix it."""
    server, make = twilio
    sms = make(sender="+15005550006", token="wrong-token")

    outcomes = sms.deliver([envelope(1, "+79161234567")], handing_over=server.handing_over)

    assert outcomes == [Outcome(1, "retry", "Twilio error 20003 (HTTP 401): Authenticate")]


def test_twilio_settings_need_a_sender() -> None:
    with pytest.raises(ValidationError, match="set a sender or a messaging_service_sid"):
        TwilioSettings(account_sid=SID, auth_token=TOKEN)
    with pytest.raises(ValidationError, match="account_sid"):
        TwilioSettings(account_sid="AC123", auth_token=TOKEN, sender="+15005550006")


# -- a configured HTTP gateway -----------------------------------------------------------

GATEWAY_TOKEN = "gw-secret-token"


class JsonGateway:
    """A gateway in the style of many local ones: bearer auth, a JSON body, and 200 for
    every answer with ``status`` saying ok or error."""

    def __call__(self, seen: Seen) -> Reply:
        assert (seen.method, seen.path) == ("POST", "/api/v2/sms")
        if seen.headers.get("authorization") != f"Bearer {GATEWAY_TOKEN}":
            return Reply(
                401, {"status": "error", "error": {"code": "AUTH", "message": "bad token"}}
            )
        body = seen.json()
        assert seen.headers["idempotency-key"] == f"<patron.c1.m{body['ref']}@shop.example.com>"
        assert set(body) == {"phone", "from", "message", "ref", "options"}
        assert isinstance(body["ref"], int) and body["options"] == {"translit": False}
        match body["phone"]:
            case "79160000001":
                error = {"code": "NUMBER_INVALID", "message": "number does not exist"}
                return Reply(200, {"status": "error", "error": error})
            case "79160000002":
                error = {"code": "THROTTLED", "message": "slow down"}
                return Reply(200, {"status": "error", "error": error})
            case "79160000003":
                return Reply(
                    400, {"status": "error", "error": {"code": "TEXT", "message": "empty"}}
                )
            case "79160000429":
                return Reply(429, {"status": "error"}, headers={"Retry-After": "12"})
            case "79160000503":
                return Reply(503, b"<html>busy</html>", headers={"Content-Type": "text/html"})
        return Reply(200, {"status": "ok", "data": {"id": f"gw-{body['ref']}", "parts": 1}})


def json_gateway(url: str, **http: Any) -> HttpGatewaySettings:
    return HttpGatewaySettings(
        name="SMS Center", url=f"{url}/api/v2/sms",
        headers={"Authorization": f"Bearer {GATEWAY_TOKEN}", "Idempotency-Key": "{key}"},
        body={
            "phone": "{to_digits}", "from": "SHOP", "message": "{text}", "ref": "{message_id}",
            "options": {"translit": False},
        },
        ok_path="status", ok_values=("ok",), ref_path="data.id",
        error_code_path="error.code", error_message_path="error.message",
        hard_codes=frozenset({"NUMBER_INVALID"}), temporary_codes=frozenset({"THROTTLED"}),
        http=HttpSettings(**http),
    )  # fmt: skip


def gateway_message_of(seen: Seen) -> int:
    return int(seen.json()["ref"])


def test_gateway_fills_its_template_and_reads_each_answer(closing: Closer, provider: Start) -> None:
    """Given a gateway that answers 200 with a status, then ok is sent with its id, a bad
    number fails hard, a throttle, 429 and 503 are retried, other errors fail."""
    server = provider(JsonGateway())
    sms = closing(HttpGatewaySms(json_gateway(server.url, concurrency=1), region="RU"))
    envelopes = [
        envelope(1, "+7 916 123-45-67", text="Привет, Анна! Скидка 10%"),
        envelope(2, "+79160000001"),
        envelope(3, "+79160000002"),
        envelope(4, "+79160000003"),
        envelope(5, "+79160000503"),
        envelope(6, "+79160000429"),
    ]
    outcomes = sms.deliver(envelopes, handing_over=server.handing_over)

    assert outcomes == [
        Outcome(1, "sent", provider_ref="gw-1"),
        Outcome(
            2,
            "failed",
            "SMS Center error NUMBER_INVALID (HTTP 200): number does not exist",
            hard_bounce=True,
        ),
        Outcome(3, "retry", "SMS Center error THROTTLED (HTTP 200): slow down"),
        Outcome(4, "failed", "SMS Center error TEXT (HTTP 400): empty"),
        Outcome(5, "retry", "SMS Center refused (HTTP 503): <html>busy</html>"),
        Outcome(6, "retry", 'SMS Center refused (HTTP 429): {"status": "error"}', retry_after=12.0),
    ]
    assert server.seen[0].json() == {
        "phone": "79161234567", "from": "SHOP", "message": "Привет, Анна! Скидка 10%", "ref": 1,
        "options": {"translit": False},
    }  # fmt: skip
    assert [gateway_message_of(s) for s in server.seen] == [1, 2, 3, 4, 5, 6]
    handed_before_received(server, gateway_message_of)


def test_gateway_get_request_encodes_the_url(closing: Closer, provider: Start) -> None:
    """Given a gateway taking GET parameters, then the phone's + and the Cyrillic text
    arrive percent-encoded and read back exactly."""

    def respond(seen: Seen) -> Reply:
        return Reply(200, {"id": 77}) if seen.path == "/send" else Reply(404)

    server = provider(respond)
    settings = HttpGatewaySettings(
        method="GET", url=f"{server.url}/send?login=shop&to={{to}}&msg={{text}}&id={{message_id}}",
        body_format="none", ref_path="id",
    )  # fmt: skip
    sms = closing(HttpGatewaySms(settings, region="RU"))
    outcomes = sms.deliver(
        [envelope(5, "89161234567", text="Скидка 10% & подарок")],
        handing_over=server.handing_over,
    )

    assert outcomes == [Outcome(5, "sent", provider_ref="77")]
    (seen,) = server.seen
    assert seen.query == (
        "login=shop&to=%2B79161234567&msg=%D0%A1%D0%BA%D0%B8%D0%B4%D0%BA%D0%B0%2010%25%20%26%20"
        "%D0%BF%D0%BE%D0%B4%D0%B0%D1%80%D0%BE%D0%BA&id=5"
    )


def test_gateway_form_body(closing: Closer, provider: Start) -> None:
    server = provider(lambda seen: Reply(201, {"message": {"uuid": "u-1"}}))
    settings = HttpGatewaySettings(
        url=f"{server.url}/messages", body_format="form",
        body={"to": "{to}", "text": "{text}", "sender": "Shop", "flash": 0},
        ref_path="message.uuid",
    )  # fmt: skip
    sms = closing(HttpGatewaySms(settings, region="RU"))
    outcomes = sms.deliver([envelope(1, "+79161234567")], handing_over=server.handing_over)

    assert outcomes == [Outcome(1, "sent", provider_ref="u-1")]
    assert server.seen[0].form() == {
        "to": "+79161234567", "text": "Hello 1", "sender": "Shop", "flash": "0"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"body": {"to": "{phone}"}}, r"unknown placeholders \['phone'\]"),
        ({"headers": {"X-Text": "{text}"}}, r"headers may not hold \['text'\]"),
        ({"method": "GET", "body": {"to": "{to}"}}, "a body needs body_format json or form"),
        ({"body_format": "form", "body": {"to": ["{to}"]}}, "a form body takes plain values"),
        ({"url": "ftp://gateway"}, "url"),
    ],
)
def test_gateway_settings_are_checked(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        HttpGatewaySettings.model_validate({"url": "https://gw.example.com/send", **fields})


# -- the gateway's callbacks -------------------------------------------------------------

CALLBACKS = GatewayCallbacks(
    ref_path="message.id", status_path="message.state",
    statuses={"DELIVRD": "delivered", "UNDELIV": "failed", "REJECTD": "failed"},
    hard_statuses=frozenset({"REJECTD"}), reason_path="message.error",
    from_path="message.from", text_path="message.text", time_path="message.at",
    signature=GatewaySignature(header="X-Gateway-Signature", prefix="sha256="),
)  # fmt: skip
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_gateway_reports_and_inbound_messages() -> None:
    body = json.dumps(
        [
            {"message": {"id": "gw-1", "state": "DELIVRD", "at": 1795428000}},
            {"message": {"id": "gw-2", "state": "UNDELIV", "error": "absent subscriber"}},
            {"message": {"id": "gw-3", "state": "REJECTD", "at": "2026-11-23T14:00:00+03:00"}},
            {"message": {"id": "gw-4", "state": "ENROUTE"}},
            {"message": {"id": "in-1", "from": "89161234567", "text": " СТОП "}},
            {"message": {"id": "in-2", "from": "ShopInfo", "text": "Спасибо"}},
        ]
    ).encode()

    assert gateway_feedback(body, callbacks=CALLBACKS, received_at=NOW) == [
        Feedback(Channel.SMS, "delivered", datetime(2026, 11, 23, 10, 0, tzinfo=UTC), provider_ref="gw-1"),
        Feedback(Channel.SMS, "failed", NOW, provider_ref="gw-2", reason="UNDELIV: absent subscriber"),
        Feedback(Channel.SMS, "failed", datetime(2026, 11, 23, 11, 0, tzinfo=UTC), provider_ref="gw-3", reason="REJECTD", hard=True),
        Feedback(Channel.SMS, "opt_out", NOW, provider_ref="in-1", from_address="+79161234567", text=" СТОП "),
        Feedback(Channel.SMS, "inbound", NOW, provider_ref="in-2", from_address="ShopInfo", text="Спасибо"),
    ]  # fmt: skip


def test_gateway_callback_that_is_not_json() -> None:
    with pytest.raises(InvalidInput, match="the gateway's callback is not json"):
        gateway_feedback(b"<html>", callbacks=CALLBACKS, received_at=NOW)


def test_gateway_form_callbacks() -> None:
    callbacks = GatewayCallbacks(format="form", ref_path="msgid", status_path="status")
    body = b"msgid=77&status=delivered"
    assert gateway_feedback(body, callbacks=callbacks, received_at=NOW) == [
        Feedback(Channel.SMS, "delivered", NOW, provider_ref="77")
    ]


def test_gateway_signature() -> None:
    """Given the HMAC computed here by hand, then the callback is accepted; a changed body,
    another secret or no header is not."""
    body = b'{"message": {"id": "gw-1", "state": "DELIVRD"}}'
    good = "sha256=" + hmac.new(b"gw-hook-secret", body, hashlib.sha256).hexdigest()
    signature = CALLBACKS.signature
    assert signature is not None

    assert verify_gateway_signature(
        body, {"x-gateway-signature": good}, signature=signature, secret="gw-hook-secret"
    )
    assert not verify_gateway_signature(
        body + b" ", {"X-Gateway-Signature": good}, signature=signature, secret="gw-hook-secret"
    )
    assert not verify_gateway_signature(
        body, {"X-Gateway-Signature": good}, signature=signature, secret="another-secret"
    )
    assert not verify_gateway_signature(body, {}, signature=signature, secret="gw-hook-secret")
    base64_sha1 = GatewaySignature(header="X-Sig", algorithm="sha1", encoding="base64")
    digest = base64.b64encode(hmac.new(b"k", body, hashlib.sha1).digest()).decode()
    assert verify_gateway_signature(body, {"X-Sig": digest}, signature=base64_sha1, secret="k")
