"""One transport per channel behind one ``deliver``: what the worker hands a batch to.

A claimed batch may mix channels (an email campaign and an SMS one run side by side), so
the router splits it by the envelope's channel, gives each part to its transport, and
puts the outcomes back in the batch's order. A channel with no transport configured
parks its messages as failed, with the reason, rather than losing them or retrying
forever: configuring the channel and re-queuing them is an operator's decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from patron.channels.base import Envelope, HandingOver, Outcome, Transport
from patron.models.consent import Channel


@dataclass
class Router:
    """Delivers each envelope through its channel's transport."""

    transports: Mapping[Channel, Transport] = field(default_factory=dict)

    def deliver(self, envelopes: Sequence[Envelope], *, handing_over: HandingOver) -> list[Outcome]:
        parts: dict[Channel, list[Envelope]] = {}
        for envelope in envelopes:
            parts.setdefault(envelope.channel, []).append(envelope)
        found: dict[int, Outcome] = {}
        for channel, part in parts.items():
            transport = self.transports.get(channel)
            if transport is None:
                for envelope in part:
                    found[envelope.message_id] = Outcome(
                        envelope.message_id, "failed",
                        f"no transport is configured for the {channel.value} channel",
                    )  # fmt: skip
                continue
            for outcome in transport.deliver(part, handing_over=handing_over):
                found[outcome.message_id] = outcome
        return [found[e.message_id] for e in envelopes]

    def close(self) -> None:
        for transport in self.transports.values():
            transport.close()
