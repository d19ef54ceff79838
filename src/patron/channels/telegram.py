"""Telegram: messages through the Bot API, and the deep link that ties a chat to a customer.

Protocol: ``POST {base_url}/bot{token}/sendMessage`` with JSON ``chat_id``, ``text`` and
``parse_mode``; replies ``{"ok": true, "result": {"message_id": ...}}`` or ``{"ok": false,
"error_code", "description", "parameters": {"retry_after"}}``.
https://core.telegram.org/bots/api#sendmessage
https://core.telegram.org/bots/api#making-requests

A bot may not write first, so a customer links their chat by opening
``https://t.me/{bot}?start={token}`` (https://core.telegram.org/bots/features#deep-linking):
Telegram then sends the bot ``/start {token}`` from that chat, and the token, signed with
our secret, says which customer it was made for. The webhook that brings updates carries
the secret set with ``setWebhook`` in ``X-Telegram-Bot-Api-Secret-Token``
(https://core.telegram.org/bots/api#setwebhook).
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from patron.channels.base import Envelope, Outcome
from patron.channels.feedback import Feedback, FeedbackKind, header, inbound_kind, same_secret
from patron.channels.http import (
    BadInput,
    HttpSettings,
    HttpTransport,
    http_outcome,
    json_body,
    json_path,
    retry_after,
)
from patron.kit.errors import InvalidInput
from patron.models.consent import Channel

_CHAT_ID = re.compile(r"^-?\d{1,20}$")
_START = re.compile(r"^/start(?:@\w+)?\s+([A-Za-z0-9_-]{1,64})\s*$")
_TAG_BYTES = 16
_HARD_400 = ("chat not found", "user not found")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class TelegramSettings(BaseModel):
    """A bot: its token from @BotFather, and how its messages are formatted.

    Telegram lets a bot send about 30 messages a second in all (and one a second to one
    chat): ``http.rate`` should stay under that.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    token: SecretStr
    base_url: str = "https://api.telegram.org"
    parse_mode: Literal["HTML", "MarkdownV2"] | None = None
    http: HttpSettings = HttpSettings()


class TelegramBot(HttpTransport):
    """Messages through the Bot API's ``sendMessage`` (see the module docstring).

    ``to`` is the chat id. 403 (the customer blocked the bot, or deleted the account) and
    400 "chat not found" fail hard, so the customer is suppressed on the channel; 429
    waits ``parameters.retry_after`` seconds.
    """

    channel = Channel.TELEGRAM
    provider = "Telegram"

    def __init__(self, settings: TelegramSettings) -> None:
        super().__init__(settings.http)
        self.settings = settings
        token = settings.token.get_secret_value()
        self._url = f"{settings.base_url.rstrip('/')}/bot{token}/sendMessage"

    def request(self, client: httpx.AsyncClient, envelope: Envelope) -> httpx.Request:
        chat = envelope.to.strip()
        if not _CHAT_ID.match(chat):
            raise BadInput(f"not a Telegram chat id: {envelope.to!r}")
        payload: dict[str, object] = {"chat_id": int(chat), "text": envelope.text}
        if self.settings.parse_mode is not None:
            payload["parse_mode"] = self.settings.parse_mode
        return client.build_request("POST", self._url, json=payload)

    def verdict(self, envelope: Envelope, response: httpx.Response) -> Outcome:
        body = json_body(response)
        body = body if isinstance(body, dict) else {}
        description = str(body.get("description") or response.text[:200])
        wait = json_path(body, "parameters.retry_after")
        status = response.status_code
        hard = status == 403 or (status == 400 and any(s in description.lower() for s in _HARD_400))
        ref = json_path(body, "result.message_id")
        return http_outcome(
            envelope, status, provider=self.provider,
            ref=None if ref is None else str(ref),
            code=body.get("error_code"), detail=description,
            wait=float(wait) if isinstance(wait, int | float)
            else retry_after(response.headers.get("Retry-After")),
            hard=hard, accepted=200 <= status < 300 and body.get("ok") is True,
        )  # fmt: skip


def verify_webhook(headers: Mapping[str, str], secret: str) -> bool:
    """Whether an update came with the secret token given to ``setWebhook``."""
    return same_secret(header(headers, SECRET_HEADER), secret)


# -- linking a chat to a customer --------------------------------------------------------


@dataclass(frozen=True)
class TelegramLink:
    """A verified ``/start``: this chat belongs to this customer."""

    customer_id: int
    chat_id: int
    username: str | None = None


def _tag(customer_id: int, expires: int, secret: str) -> str:
    digest = hmac.new(
        secret.encode(), f"telegram-link:{customer_id}:{expires}".encode(), "sha256"
    ).digest()
    return base64.urlsafe_b64encode(digest[:_TAG_BYTES]).decode().rstrip("=")


def link_token(customer_id: int, *, secret: str, expires: datetime) -> str:
    """``{customer}_{expiry in base 36}_{signature}``: within the 64 characters of
    ``A-Za-z0-9_-`` a start parameter may hold."""
    seconds = int(expires.timestamp())
    return f"{customer_id}_{_base36(seconds)}_{_tag(customer_id, seconds, secret)}"


def link_url(bot_username: str, customer_id: int, *, secret: str, expires: datetime) -> str:
    """The deep link that opens the bot and sends it ``/start {token}``."""
    name = bot_username.removeprefix("@")
    return f"https://t.me/{name}?start={link_token(customer_id, secret=secret, expires=expires)}"


def parse_start(update: Mapping[str, Any], *, secret: str, now: datetime) -> TelegramLink | None:
    """The link in a ``/start {token}`` update from a private chat, verified.

    ``None`` when the update is anything else (another message, ``/start`` alone, a
    group). A token that was not made with ``secret``, or has expired, raises
    :class:`InvalidInput` saying which.
    """
    message = update.get("message")
    if not isinstance(message, Mapping):
        return None
    chat = message.get("chat")
    text = message.get("text")
    if not isinstance(chat, Mapping) or chat.get("type") != "private" or not isinstance(text, str):
        return None
    found = _START.match(text.strip())
    if found is None:
        return None
    head, _, rest = found.group(1).partition("_")
    expires_text, _, tag = rest.partition("_")
    try:
        customer_id, expires = int(head), int(expires_text, 36)
    except ValueError:
        raise InvalidInput("the Telegram link is not one of ours") from None
    if not head.isdigit() or not same_secret(tag, _tag(customer_id, expires, secret)):
        raise InvalidInput("the Telegram link is not one of ours")
    if datetime.fromtimestamp(expires, UTC) < now:
        raise InvalidInput("the Telegram link has expired; ask for a new one")
    sender = message.get("from")
    username = sender.get("username") if isinstance(sender, Mapping) else None
    return TelegramLink(customer_id, int(chat["id"]), username)


def telegram_feedback(update: Mapping[str, Any], *, received_at: datetime) -> list[Feedback]:
    """An update as :class:`Feedback`: a private message is inbound (``/stop`` or a stop
    word an opt-out), and a customer blocking the bot (``my_chat_member`` with status
    ``kicked``) an opt-out. Telegram reports no deliveries."""
    message = update.get("message")
    if isinstance(message, Mapping) and json_path(message, "chat.type") == "private":
        text = message.get("text")
        text = text if isinstance(text, str) else None
        stop = text is not None and text.strip().lower() == "/stop"
        kind: FeedbackKind = "opt_out" if stop else inbound_kind(text)
        return [
            Feedback(
                Channel.TELEGRAM, kind, _date(message, received_at),
                provider_ref=str(message.get("message_id")),
                from_address=str(json_path(message, "chat.id")), text=text,
            )
        ]  # fmt: skip
    member = update.get("my_chat_member")
    if (
        isinstance(member, Mapping)
        and json_path(member, "chat.type") == "private"
        and json_path(member, "new_chat_member.status") == "kicked"
    ):
        return [
            Feedback(
                Channel.TELEGRAM, "opt_out", _date(member, received_at),
                reason="blocked the bot", from_address=str(json_path(member, "chat.id")),
            )
        ]  # fmt: skip
    return []


def _date(item: Mapping[str, Any], default: datetime) -> datetime:
    value = item.get("date")
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int) else default


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, remainder = divmod(number, 36)
        text = digits[remainder] + text
        if number == 0:
            return text
