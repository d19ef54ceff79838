"""What providers tell us after sending, in one neutral form, and how their calls are proven.

Each provider's module has a pure function that reads its delivery-status callbacks and
inbound messages into :class:`Feedback` (``twilio.twilio_feedback``,
``whatsapp.cloud_feedback``, ``telegram.telegram_feedback``, ``sms.gateway_feedback``)
and one that checks its webhook signature. The API side that records them is not here.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from patron.models.consent import Channel

FeedbackKind = Literal["delivered", "failed", "read", "inbound", "opt_out"]

STOP_WORDS = frozenset({"stop", "unsubscribe", "стоп", "отписаться"})
"""Replies that withdraw consent on the channel they arrive by."""


@dataclass(frozen=True)
class Feedback:
    """One thing a provider reported.

    ``delivered``, ``read`` and ``failed`` name a message we sent by ``provider_ref`` (the
    ``Outcome.provider_ref`` it was given); ``failed`` carries the provider's ``reason``,
    and ``hard`` when the address itself cannot receive. ``inbound`` is a customer's
    message to us, and ``opt_out`` one that asks us to stop (a stop word, or the
    provider's own opt-out signal); both carry ``from_address`` in the form the channel's
    identities use (E.164 for a phone, the chat id for Telegram). ``at`` is when it
    happened, as the provider says, else when the callback arrived.
    """

    channel: Channel
    kind: FeedbackKind
    at: datetime
    provider_ref: str | None = None
    reason: str | None = None
    hard: bool = False
    from_address: str | None = None
    text: str | None = None


def is_opt_out(text: str | None) -> bool:
    """Whether a reply is a stop word (any case, surrounding spaces ignored)."""
    return text is not None and text.strip().casefold() in STOP_WORDS


def inbound_kind(text: str | None) -> FeedbackKind:
    """``opt_out`` for a stop word, else ``inbound``."""
    return "opt_out" if is_opt_out(text) else "inbound"


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value from any mapping, by its name in any case."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a signature or token; a missing one never matches."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
