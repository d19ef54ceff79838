"""Twilio's webhooks: the request signature and the status and inbound callbacks."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime

import pytest

from patron.channels.feedback import Feedback
from patron.channels.twilio import twilio_feedback, twilio_signature, verify_twilio_signature
from patron.models.consent import Channel

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

# the worked example of Twilio's "Webhooks security" guide
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
DOC_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_twilio_signature_matches_the_documented_example() -> None:
    assert twilio_signature(DOC_URL, DOC_PARAMS, auth_token="12345") == DOC_SIGNATURE
    assert verify_twilio_signature(DOC_URL, DOC_PARAMS, DOC_SIGNATURE, auth_token="12345")


def test_twilio_signature_takes_the_parameters_in_any_order() -> None:
    shuffled = list(reversed(DOC_PARAMS.items()))
    assert verify_twilio_signature(DOC_URL, shuffled, DOC_SIGNATURE, auth_token="12345")


@pytest.mark.parametrize(
    ("url", "params", "signature", "token"),
    [
        (DOC_URL, {**DOC_PARAMS, "Digits": "9999"}, DOC_SIGNATURE, "12345"),
        ("https://mycompany.com/myapp.php?foo=1&bar=3", DOC_PARAMS, DOC_SIGNATURE, "12345"),
        (DOC_URL, DOC_PARAMS, DOC_SIGNATURE, "54321"),
        (DOC_URL, DOC_PARAMS, DOC_SIGNATURE[:-1], "12345"),
        (DOC_URL, DOC_PARAMS, None, "12345"),
    ],
)
def test_twilio_signature_rejects_anything_else(
    url: str, params: dict[str, str], signature: str | None, token: str
) -> None:
    assert not verify_twilio_signature(url, params, signature, auth_token=token)


def test_twilio_signature_of_a_status_callback_computed_independently() -> None:
    """Given a status callback, the signature equals HMAC-SHA1 over the URL and the sorted
    name-value pairs, computed here by hand."""
    url = "https://crm.example.com/hooks/twilio/status"
    params = {"MessageStatus": "delivered", "MessageSid": "SM1", "AccountSid": "AC1"}
    data = url + "AccountSidAC1" + "MessageSidSM1" + "MessageStatusdelivered"
    expected = base64.b64encode(hmac.new(b"tok", data.encode(), hashlib.sha1).digest()).decode()
    assert verify_twilio_signature(url, params, expected, auth_token="tok")


def test_status_callbacks() -> None:
    delivered = {"MessageSid": "SM1", "MessageStatus": "delivered", "SmsStatus": "delivered",
                 "To": "+79161234567", "From": "+15005550006", "AccountSid": "AC1"}  # fmt: skip
    undelivered = {"MessageSid": "SM2", "MessageStatus": "undelivered", "ErrorCode": "30006",
                   "To": "+79161234567", "From": "+15005550006"}  # fmt: skip
    failed = {"MessageSid": "SM3", "MessageStatus": "failed", "ErrorCode": "30003",
              "ErrorMessage": "Unreachable destination handset"}  # fmt: skip
    read = {"MessageSid": "SM4", "MessageStatus": "read", "From": "whatsapp:+15005550006"}
    sent = {"MessageSid": "SM5", "MessageStatus": "sent"}

    assert twilio_feedback(delivered, received_at=NOW) == [
        Feedback(Channel.SMS, "delivered", NOW, provider_ref="SM1")
    ]
    assert twilio_feedback(undelivered, received_at=NOW) == [
        Feedback(
            Channel.SMS, "failed", NOW, provider_ref="SM2", reason="Twilio undelivered, error 30006",
            hard=True,
        )
    ]  # fmt: skip
    assert twilio_feedback(failed, received_at=NOW) == [
        Feedback(
            Channel.SMS, "failed", NOW, provider_ref="SM3",
            reason="Twilio failed, error 30003: Unreachable destination handset",
        )
    ]  # fmt: skip
    assert twilio_feedback(read, received_at=NOW) == [
        Feedback(Channel.WHATSAPP, "read", NOW, provider_ref="SM4")
    ]
    assert twilio_feedback(sent, received_at=NOW) == []


@pytest.mark.parametrize(
    ("body", "extra", "kind"),
    [
        ("When does the sale end?", {}, "inbound"),
        ("STOP", {"OptOutType": "STOP"}, "opt_out"),
        ("  stop ", {}, "opt_out"),
        ("Unsubscribe", {}, "opt_out"),
        ("СТОП", {}, "opt_out"),
        (" отписаться\n", {}, "opt_out"),
        ("please stop", {}, "inbound"),
        ("Stop them all", {"OptOutType": "STOP"}, "opt_out"),
    ],
)
def test_inbound_messages(body: str, extra: dict[str, str], kind: str) -> None:
    params = {"MessageSid": "SM9", "SmsStatus": "received", "From": "+79161234567",
              "To": "+15005550006", "Body": body, "NumMedia": "0", **extra}  # fmt: skip
    assert twilio_feedback(params, received_at=NOW) == [
        Feedback(
            Channel.SMS, kind, NOW, provider_ref="SM9", from_address="+79161234567",  # type: ignore[arg-type]
            text=body,
        )
    ]  # fmt: skip


def test_inbound_whatsapp_through_twilio() -> None:
    params = {"MessageSid": "SM8", "From": "whatsapp:+79161234567", "To": "whatsapp:+15005550006",
              "Body": "Hi", "ProfileName": "Anna", "WaId": "79161234567"}  # fmt: skip
    assert twilio_feedback(params, received_at=NOW) == [
        Feedback(
            Channel.WHATSAPP, "inbound", NOW, provider_ref="SM8", from_address="+79161234567",
            text="Hi",
        )
    ]  # fmt: skip
