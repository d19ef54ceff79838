"""Group commit of handovers: messages ready together share one ``handing_over`` call.

Each call of ``handing_over`` commits a transaction, so a transport with many messages on
the way gathers the ready ones and hands them over at once. When a group is complete is
the transport's policy: the SMTP transport waits until every session has a message ready
(:class:`patron.channels.email`), the HTTP transports take what is ready in one turn of
the event loop (:mod:`patron.channels.http`).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod

from patron.channels.base import Envelope, HandingOver


class GroupHandover(ABC):
    """Envelopes waiting for their handover, released together once it has committed.

    If ``handing_over`` fails, its waiters, and every envelope that comes after, get the
    error and are never released. An envelope it refuses is not released either: its
    waiter learns so from :meth:`wait`.
    """

    def __init__(self, handing_over: HandingOver) -> None:
        self._handing_over = handing_over
        self._waiting: list[tuple[Envelope, asyncio.Future[bool]]] = []
        self._failure: BaseException | None = None

    @property
    def waiting(self) -> int:
        """How many envelopes wait for the next call."""
        return len(self._waiting)

    async def wait(self, envelope: Envelope) -> bool:
        """Return once the envelope is handed over (its sent state committed): ``True``
        when it is released, ``False`` when ``handing_over`` refused it."""
        if self._failure is not None:
            raise self._failure
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((envelope, future))
        self.arrived()
        return await future

    @abstractmethod
    def arrived(self) -> None:
        """An envelope has joined the waiting group: flush now, later, or not yet."""

    def released(self, envelope: Envelope) -> None:
        """Called for each envelope of a group that the handover did not refuse, right
        after it committed, before any waiter resumes: a transport whose last step is a
        write puts it here, so that no turn of the event loop falls between the commit
        and the write."""
        return None

    def flush(self) -> None:
        """Hand the waiting group over in one call, then release it."""
        if not self._waiting:
            return
        group, self._waiting = self._waiting, []
        try:
            refused = set(self._handing_over([envelope for envelope, _ in group]) or ())
        except Exception as exc:
            self._failure = exc
            for _, future in group:
                future.set_exception(exc)
            return
        for envelope, _ in group:
            if envelope.message_id not in refused:
                self.released(envelope)
        for envelope, future in group:
            future.set_result(envelope.message_id not in refused)
