"""The call list: the phone channel's transport puts each message on the operators' list.

Nothing leaves the building, so "sent" here means "on the list": the outbox row is the
operator's task, its rendered text the script. Operators read the list and record each
call's outcome through the API (``GET /api/v1/campaigns/{id}/calls``, ``POST
/api/v1/calls/{message_id}``); the outcome goes on the customer's timeline and into the
campaign's results. A phone that cannot be read as a number fails its message alone, as
it would at an SMS provider, so no operator is handed a task that cannot be called.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from patron.channels.base import Envelope, HandingOver, Outcome, withdrawn
from patron.channels.http import BadInput, e164
from patron.models.consent import Channel


@dataclass
class CallList:
    """Hands phone messages to the call list."""

    region: str = "RU"
    channel: Channel = Channel.PHONE

    def deliver(self, envelopes: Sequence[Envelope], *, handing_over: HandingOver) -> list[Outcome]:
        ready: list[Envelope] = []
        refused: dict[int, str] = {}
        for envelope in envelopes:
            try:
                e164(envelope.to, region=self.region)
            except BadInput as exc:
                refused[envelope.message_id] = str(exc)
                continue
            ready.append(envelope)
        taken = set(handing_over(ready) or ())
        return [
            Outcome(e.message_id, "failed", refused[e.message_id])
            if e.message_id in refused
            else withdrawn(e)
            if e.message_id in taken
            else Outcome(e.message_id, "sent")
            for e in envelopes
        ]

    def close(self) -> None:
        return None
