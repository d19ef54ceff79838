"""Telegram: the Bot API's sendMessage against a local server that answers as Telegram
documents, the deep link that ties a chat to a customer, and the webhook's updates."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from patron.channels.base import Outcome
from patron.channels.feedback import Feedback
from patron.channels.http import HttpSettings
from patron.channels.telegram import (
    TelegramBot,
    TelegramLink,
    TelegramSettings,
    link_token,
    link_url,
    parse_start,
    telegram_feedback,
    verify_webhook,
)
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

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SECRET = "a-test-secret-of-enough-length"


def failure(status: int, description: str, **parameters: int) -> Reply:
    """An error as the Bot API writes it."""
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return Reply(status, body)


def bot_api(seen: Seen) -> Reply:
    """sendMessage: chat 111 and 112 exist, 403 has blocked the bot, 404 does not exist,
    429 meets the flood limit, 500 a server error; a wrong token is 401."""
    if seen.path != f"/bot{TOKEN}/sendMessage":
        return failure(401, "Unauthorized") if seen.path.endswith("/sendMessage") else Reply(404)
    assert seen.method == "POST" and seen.headers["content-type"] == "application/json"
    body = seen.json()
    assert isinstance(body["chat_id"], int) and isinstance(body["text"], str)
    match body["chat_id"]:
        case 403:
            return failure(403, "Forbidden: bot was blocked by the user")
        case 404:
            return failure(400, "Bad Request: chat not found")
        case 429:
            return failure(429, "Too Many Requests: retry after 5", retry_after=5)
        case 500:
            return failure(500, "Internal Server Error")
    if len(body["text"]) > 4096:
        return failure(400, "Bad Request: message is too long")
    chat = {"id": body["chat_id"], "first_name": "Anna", "type": "private"}
    result = {
        "message_id": 1000 + int(body["text"].split()[-1]),
        "from": {"id": 123456789, "is_bot": True, "first_name": "Shop", "username": "shop_bot"},
        "chat": chat, "date": 1795435200, "text": body["text"],
    }  # fmt: skip
    return Reply(200, {"ok": True, "result": result})


def message_of(seen: Seen) -> int:
    return int(seen.json()["text"].split()[-1])


@pytest.fixture
def telegram(provider: Start, closing: Closer) -> tuple[ProviderServer, Callable[..., TelegramBot]]:
    """The fake Bot API and a maker of bots pointed at it."""
    server = provider(bot_api)

    def make(*, token: str = TOKEN, **fields: Any) -> TelegramBot:
        settings = TelegramSettings(
            token=token, base_url=server.url, http=HttpSettings(concurrency=1), **fields
        )
        return closing(TelegramBot(settings))

    return server, make


def test_send_message_and_each_documented_error(
    telegram: tuple[ProviderServer, Callable[..., TelegramBot]],
) -> None:
    """Given chats that exist, have blocked the bot, do not exist, a chat id that is no
    id and a server error, then each message gets its own outcome; the blocked and the
    missing chat fail hard."""
    server, make = telegram
    bot = make(parse_mode="HTML")
    envelopes = [
        envelope(1, "111", channel=Channel.TELEGRAM),
        envelope(2, "403", channel=Channel.TELEGRAM),
        envelope(3, "404", channel=Channel.TELEGRAM),
        envelope(4, "@anna", channel=Channel.TELEGRAM),
        envelope(5, "500", channel=Channel.TELEGRAM),
        envelope(6, "112", channel=Channel.TELEGRAM, text="x" * 4097 + " 6"),
        envelope(7, "112", channel=Channel.TELEGRAM),
    ]

    outcomes = bot.deliver(envelopes, handing_over=server.handing_over)

    assert outcomes == [
        Outcome(1, "sent", provider_ref="1001"),
        Outcome(2, "failed", "Telegram error 403 (HTTP 403): Forbidden: bot was blocked by the user", hard_bounce=True),
        Outcome(3, "failed", "Telegram error 400 (HTTP 400): Bad Request: chat not found", hard_bounce=True),
        Outcome(4, "failed", "Telegram: not a Telegram chat id: '@anna'"),
        Outcome(5, "retry", "Telegram error 500 (HTTP 500): Internal Server Error"),
        Outcome(6, "failed", "Telegram error 400 (HTTP 400): Bad Request: message is too long"),
        Outcome(7, "sent", provider_ref="1007"),
    ]  # fmt: skip
    assert server.seen[0].json() == {"chat_id": 111, "text": "Hello 1", "parse_mode": "HTML"}
    assert [message_of(s) for s in server.seen] == [1, 2, 3, 5, 6, 7]
    handed_before_received(server, message_of)


def test_flood_limit_waits_retry_after(
    telegram: tuple[ProviderServer, Callable[..., TelegramBot]],
) -> None:
    server, make = telegram
    bot = make()

    first, second = bot.deliver(
        [
            envelope(1, "429", channel=Channel.TELEGRAM),
            envelope(2, "111", channel=Channel.TELEGRAM),
        ],
        handing_over=server.handing_over,
    )

    assert first == Outcome(
        1,
        "retry",
        "Telegram error 429 (HTTP 429): Too Many Requests: retry after 5",
        retry_after=5.0,
    )
    assert (second.result, second.reason) == (
        "retry",
        "Telegram asked to wait (HTTP 429); not sent",
    )
    assert len(server.seen) == 1


def test_a_wrong_token_is_retried(
    telegram: tuple[ProviderServer, Callable[..., TelegramBot]],
) -> None:
    server, make = telegram
    bot = make(token="42:wrong")

    outcomes = bot.deliver([envelope(1, "111")], handing_over=server.handing_over)

    assert outcomes == [Outcome(1, "retry", "Telegram error 401 (HTTP 401): Unauthorized")]


# -- linking a chat ----------------------------------------------------------------------


def start_update(text: str, *, chat_type: str = "private", chat_id: int = 555) -> dict[str, Any]:
    """An Update as Telegram posts it when a customer presses Start."""
    return {
        "update_id": 10000,
        "message": {
            "message_id": 1,
            "from": {"id": chat_id, "is_bot": False, "first_name": "Anna", "username": "anna_k",
                     "language_code": "ru"},
            "chat": {"id": chat_id, "first_name": "Anna", "username": "anna_k", "type": chat_type},
            "date": 1795435200,
            "text": text,
            "entities": [{"offset": 0, "length": 6, "type": "bot_command"}],
        },
    }  # fmt: skip


def test_deep_link_round_trip() -> None:
    """Given a link made for customer 42, when the customer presses Start in chat 555,
    then the update names customer 42 and chat 555."""
    url = link_url("@shop_bot", 42, secret=SECRET, expires=NOW + timedelta(days=30))
    parts = urlsplit(url)
    (token,) = parse_qs(parts.query)["start"]

    assert (parts.scheme, parts.netloc, parts.path) == ("https", "t.me", "/shop_bot")
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", token)
    assert parse_start(start_update(f"/start {token}"), secret=SECRET, now=NOW) == TelegramLink(
        42, 555, "anna_k"
    )


def test_the_longest_customer_id_still_fits() -> None:
    token = link_token(2**63 - 1, secret=SECRET, expires=datetime(2100, 1, 1, tzinfo=UTC))
    assert len(token) <= 64 and re.fullmatch(r"[A-Za-z0-9_-]+", token)


@pytest.mark.parametrize(
    ("make_text", "problem"),
    [
        (lambda t: f"/start {t.replace('42_', '43_', 1)}", "not one of ours"),
        (lambda t: f"/start {t[:-2]}", "not one of ours"),
        (lambda t: f"/start x{t}", "not one of ours"),
        (lambda t: f"/start {link_token(42, secret='another-secret', expires=NOW + timedelta(days=1))}", "not one of ours"),
        (lambda t: f"/start {link_token(42, secret=SECRET, expires=NOW - timedelta(seconds=1))}", "expired"),
    ],
)  # fmt: skip
def test_a_forged_or_expired_link_is_refused(make_text: Callable[[str], str], problem: str) -> None:
    token = link_token(42, secret=SECRET, expires=NOW + timedelta(days=1))
    with pytest.raises(InvalidInput, match=problem):
        parse_start(start_update(make_text(token)), secret=SECRET, now=NOW)


@pytest.mark.parametrize(
    "update",
    [
        start_update("/start"),
        start_update("hello"),
        start_update("/start 42_abc_def", chat_type="group"),
        {"update_id": 1, "edited_message": {}},
    ],
)
def test_updates_that_are_not_a_link(update: dict[str, Any]) -> None:
    assert parse_start(update, secret=SECRET, now=NOW) is None


def test_verify_webhook() -> None:
    assert verify_webhook({"X-Telegram-Bot-Api-Secret-Token": "hook-secret_1"}, "hook-secret_1")
    assert verify_webhook({"x-telegram-bot-api-secret-token": "hook-secret_1"}, "hook-secret_1")
    assert not verify_webhook({"X-Telegram-Bot-Api-Secret-Token": "guess"}, "hook-secret_1")
    assert not verify_webhook({}, "hook-secret_1")


# -- updates as feedback -----------------------------------------------------------------

AT = datetime.fromtimestamp(1795435200, UTC)


@pytest.mark.parametrize(
    ("text", "kind"),
    [("When is the sale?", "inbound"), ("/stop", "opt_out"), ("Стоп", "opt_out")],
)
def test_private_messages(text: str, kind: str) -> None:
    assert telegram_feedback(start_update(text), received_at=NOW) == [
        Feedback(Channel.TELEGRAM, kind, AT, provider_ref="1", from_address="555", text=text)  # type: ignore[arg-type]
    ]


def test_blocking_the_bot_is_an_opt_out() -> None:
    update = {
        "update_id": 10001,
        "my_chat_member": {
            "chat": {"id": 555, "first_name": "Anna", "type": "private"},
            "from": {"id": 555, "is_bot": False, "first_name": "Anna"},
            "date": 1795435200,
            "old_chat_member": {"user": {"id": 123456789, "is_bot": True}, "status": "member"},
            "new_chat_member": {"user": {"id": 123456789, "is_bot": True}, "status": "kicked",
                                "until_date": 0},
        },
    }  # fmt: skip
    assert telegram_feedback(update, received_at=NOW) == [
        Feedback(Channel.TELEGRAM, "opt_out", AT, reason="blocked the bot", from_address="555")
    ]
    assert telegram_feedback(start_update("hi", chat_type="group"), received_at=NOW) == []
