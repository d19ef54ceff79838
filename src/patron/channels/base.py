"""What every channel is: a transport behind one typed Protocol.

A transport gets rendered :class:`Envelope` s and returns one :class:`Outcome` each. It
never touches the store. Before it lets go of messages for good it calls ``handing_over``
with them, and that callback makes their "sent" state durable: this is where
exactly-once is decided. The SMTP transport sends a message's whole content, then calls
``handing_over``, then writes the final ``.`` that commits the server to it. A crash
before the callback has committed leaves the server holding an unfinished message, which
it discards, and the outbox row claimable again after its lease: it is sent once, later.
A crash after the ``.`` is written leaves a message marked sent that the server accepts.
The only gap is between the commit returning and the ``.`` reaching the socket
(microseconds; milliseconds when the process waits for a core or the GIL), in which a crash
loses the messages of that one call while they are marked sent (the SMTP transport hands
over a group of sessions' messages in one call and then writes their dots one after
another); the opposite order (commit after the server's reply) would instead send a
duplicate for a crash anywhere in the server's round trip.

``handing_over`` may also refuse some of its messages: their claim's lease ran out while
they were on the way and a later claim took them over, to send them itself. It returns
their ids, and the transport ends them without letting them go (SMTP closes the session
before the ``.``, so the server discards the message; an HTTP provider never gets the
request). Their outcome is ``withdrawn``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from patron.models.consent import Channel


@dataclass(frozen=True)
class Envelope:
    """One rendered message, ready for a transport."""

    message_id: int
    """The outbox row."""
    key: str
    """An idempotency key the provider sees (the email's ``Message-ID``)."""
    to: str
    sender: str
    subject: str
    text: str
    html: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    channel: Channel = Channel.EMAIL
    """Which transport takes it; ``to`` is that channel's address: an email address, a
    phone number in E.164 form (SMS, WhatsApp, call list), a Telegram chat id, or a web
    push subscription as JSON."""


@dataclass(frozen=True)
class Outcome:
    """What became of one envelope.

    ``sent``: the provider accepted it. ``retry``: a temporary failure (try again later).
    ``failed``: a permanent one; ``hard_bounce`` says the address itself is bad, so the
    customer is suppressed on the channel at once. ``withdrawn``: not sent, because
    ``handing_over`` refused it (another claim has it now).
    """

    message_id: int
    result: Literal["sent", "retry", "failed", "withdrawn"]
    reason: str | None = None
    hard_bounce: bool = False
    provider_ref: str | None = None
    """The provider's id of the message (Twilio's ``sid``, Telegram's ``message_id``...),
    which its delivery-status callbacks name."""
    retry_after: float | None = None
    """Seconds the provider asked us to wait (HTTP 429 ``Retry-After``), for a retry."""


HandingOver = Callable[[Sequence[Envelope]], Collection[int] | None]
"""Makes the envelopes' sent state durable; returns the ids of those it refused, which
must not be let go (``None`` or empty: none refused)."""


def withdrawn(envelope: Envelope) -> Outcome:
    """The outcome of an envelope ``handing_over`` refused."""
    reason = "not sent: another claim took the message over after this claim's lease ran out"
    return Outcome(envelope.message_id, "withdrawn", reason)


class Delivery(Protocol):
    """What the worker hands batches to: one transport, or a router of several."""

    def deliver(self, envelopes: Sequence[Envelope], *, handing_over: HandingOver) -> list[Outcome]:
        """Deliver every envelope, calling ``handing_over`` with each before it is released
        for good, and releasing none it refuses; one outcome per envelope, in order."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class Transport(Delivery, Protocol):
    """A channel's delivery mechanism."""

    channel: Channel


@dataclass
class MemoryTransport:
    """Keeps what it is given: the transport of tests and dry runs.

    ``fail`` maps an address to the outcome it gets instead of delivery, so that tests
    can make a provider refuse one recipient.
    """

    channel: Channel = Channel.EMAIL
    delivered: list[Envelope] = field(default_factory=list)
    fail: dict[str, tuple[Literal["retry", "failed"], str, bool]] = field(default_factory=dict)

    def deliver(self, envelopes: Sequence[Envelope], *, handing_over: HandingOver) -> list[Outcome]:
        outcomes: list[Outcome] = []
        ready = [e for e in envelopes if e.to not in self.fail]
        refused = set(handing_over(ready) or ())
        for envelope in envelopes:
            if envelope.to in self.fail:
                result, reason, hard = self.fail[envelope.to]
                outcomes.append(Outcome(envelope.message_id, result, reason, hard))
            elif envelope.message_id in refused:
                outcomes.append(withdrawn(envelope))
            else:
                self.delivered.append(envelope)
                outcomes.append(Outcome(envelope.message_id, "sent"))
        return outcomes

    def close(self) -> None:
        return None
