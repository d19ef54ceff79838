"""What the channels that speak to a provider's web API share: requests, limits, verdicts.

A transport owns one ``httpx.AsyncClient`` driven by an event loop of its own, as the SMTP
transport owns its sessions: the worker calls ``deliver`` from a thread beside the API's
loop, and connections belong to the loop they were opened in. ``concurrency`` tasks of
that loop take messages in turn, so that many requests are in flight while each waits for
its reply; the client's pool keeps that many connections alive between batches. Tasks
rather than a thread pool, because a request spends its time waiting on the network,
which costs a task nothing and a thread a stack, and because the rate limit and the
handover below are then plain loop code with no locks.

Each message takes, in order: a slot of the rate limit (``aiolimiter``'s leaky bucket:
``rate`` messages a second after a burst of ``burst``), then ``handing_over``, then its
request, unless the handover refused it. Nothing waits between the commit and the
request. Messages that reach the handover in the same turn of the loop share one
``handing_over`` call, as SMTP sessions share one (group commit), but no message waits
for another to be ready: requests to different recipients finish at different times,
and holding a ready message back for a slow round trip would spend the rate limit's
slots idle.

Replies map to outcomes the same way for every provider (:func:`http_outcome`), each
provider naming its own codes: 2xx is sent; 429, 5xx, 408 and 401 (our credentials,
which an operator fixes while the outbox waits) are retried, 429 with the provider's
``Retry-After``; any other 4xx fails with the provider's code and message. After a 429
that names a wait, the transport starts no request to that host until the wait is over:
the messages it would have sent are retried. A message that cannot become a request (a
phone that is not a phone) fails alone, before the handover, and the rest go on.

A request whose connection could not be made was not sent, and is retried. One that broke
after it was written (no reply in time, the connection dropped) may or may not have been
accepted: ``lost_reply`` chooses. ``"retry"`` (the default) risks a duplicate to lose
none; ``"sent"`` is the SMTP transport's choice, to send none twice at the risk of a loss.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx
from aiolimiter import AsyncLimiter
from pydantic import BaseModel, ConfigDict, Field

from patron.channels.base import Envelope, HandingOver, Outcome, withdrawn
from patron.channels.handover import GroupHandover
from patron.customers.normalize import InvalidIdentity, normalize_phone
from patron.kit.clock import utcnow
from patron.models.consent import Channel

# failures before the request left: it cannot have been accepted
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)
# requests that can never be made (a header with a line break, a scheme httpx cannot speak)
_UNSENDABLE = (httpx.LocalProtocolError, httpx.UnsupportedProtocol)


class HttpSettings(BaseModel):
    """How a transport uses HTTP: timeouts, requests in flight and its rate limit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout: float = Field(default=30.0, gt=0, description="Seconds for a reply.")
    connect_timeout: float = Field(default=10.0, gt=0)
    concurrency: int = Field(default=8, ge=1, le=256, description="Requests in flight.")
    rate: float | None = Field(
        default=None,
        gt=0,
        description="Messages a second at most, for this transport (so per worker process: "
        "a provider's limit shared by several workers is divided between them); none: no limit.",
    )
    burst: int = Field(default=1, ge=1, description="Messages that may go at once first.")
    lost_reply: Literal["retry", "sent"] = Field(
        default="retry",
        description="What a request that was written but got no reply counts as.",
    )


class BadInput(ValueError):
    """An envelope that cannot become a request; the message says why."""


def e164(raw: str, *, region: str) -> str:
    """A phone number in E.164 form, or :class:`BadInput` naming it."""
    try:
        return normalize_phone(raw, region)
    except InvalidIdentity as exc:
        raise BadInput(str(exc)) from None


def retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or utcnow())).total_seconds())


def json_body(response: httpx.Response) -> Any:
    """The reply's JSON, or ``None`` when it has none (a proxy's HTML error page)."""
    try:
        return response.json()
    except ValueError:
        return None


def http_outcome(
    envelope: Envelope,
    status: int,
    *,
    provider: str,
    ref: str | None = None,
    code: str | int | None = None,
    detail: str | None = None,
    wait: float | None = None,
    hard: bool = False,
    temporary: bool = False,
    accepted: bool | None = None,
) -> Outcome:
    """The outcome of a provider's reply (see the module docstring).

    ``accepted`` overrides "2xx is success" for providers that answer 200 to a refusal;
    ``temporary`` marks a refusal the provider's code says will pass (a rate limit sent
    as 400); ``hard`` one that says the address itself is bad.
    """
    if accepted if accepted is not None else 200 <= status < 300:
        return Outcome(envelope.message_id, "sent", provider_ref=ref)
    what = f"{provider} error {code}" if code is not None else f"{provider} refused"
    reason = f"{what} (HTTP {status})" + (f": {detail}" if detail else "")
    if temporary or status in (401, 408, 429) or status >= 500:
        return Outcome(envelope.message_id, "retry", reason, retry_after=wait)
    return Outcome(envelope.message_id, "failed", reason, hard_bounce=hard)


class _TurnHandover(GroupHandover):
    """Group commit of the messages that become ready in one turn of the loop.

    The first message ready schedules the call for the end of the turn; every message
    that gets ready before it runs joins.
    """

    def arrived(self) -> None:
        if self.waiting == 1:
            asyncio.get_running_loop().call_soon(self.flush)


class HttpTransport(ABC):
    """A transport that sends each message as one HTTP request to a provider.

    A provider's transport says how an envelope becomes a request (:meth:`request`) and
    what a reply means (:meth:`verdict`); this class runs the requests (see the module
    docstring).
    """

    channel: Channel
    provider: str
    """The provider's name in reasons: ``Twilio error 21211 (HTTP 400): ...``."""

    def __init__(
        self,
        http: HttpSettings,
        *,
        auth: httpx.Auth | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.http = http
        self._auth = auth
        self._headers = {"User-Agent": "Patron", **(headers or {})}
        self._loop = asyncio.new_event_loop()
        self._client: httpx.AsyncClient | None = None
        self._limiter = AsyncLimiter(http.burst, http.burst / http.rate) if http.rate else None
        self._held_until: dict[str, float] = {}
        """Loop time until which a host asked us to send nothing (HTTP 429)."""

    @abstractmethod
    def request(self, client: httpx.AsyncClient, envelope: Envelope) -> httpx.Request:
        """The request that delivers the envelope (made with ``client.build_request``);
        :class:`BadInput` when the envelope cannot be sent."""

    @abstractmethod
    def verdict(self, envelope: Envelope, response: httpx.Response) -> Outcome:
        """What the provider's reply means, usually through :func:`http_outcome`."""

    def deliver(self, envelopes: Sequence[Envelope], *, handing_over: HandingOver) -> list[Outcome]:
        """Deliver with ``concurrency`` requests in flight; one outcome per envelope."""
        if not envelopes:
            return []
        return self._loop.run_until_complete(self._deliver(envelopes, handing_over))

    def close(self) -> None:
        """Close the connections and the loop."""
        if self._loop.is_closed():
            return
        if self._client is not None:
            self._loop.run_until_complete(self._client.aclose())
            self._client = None
        self._loop.close()

    def _open(self) -> httpx.AsyncClient:
        if self._client is None:
            width = self.http.concurrency
            self._client = httpx.AsyncClient(
                auth=self._auth,
                timeout=httpx.Timeout(self.http.timeout, connect=self.http.connect_timeout),
                limits=httpx.Limits(max_connections=width, max_keepalive_connections=width),
                headers=self._headers,
            )
        return self._client

    async def _deliver(
        self, envelopes: Sequence[Envelope], handing_over: HandingOver
    ) -> list[Outcome]:
        client = self._open()
        handover = _TurnHandover(handing_over)
        outcomes: dict[int, Outcome] = {}
        queue = iter(envelopes)

        async def work() -> None:
            for envelope in queue:
                outcomes[envelope.message_id] = await self._send(client, envelope, handover)

        width = min(self.http.concurrency, len(envelopes))
        for result in await asyncio.gather(*(work() for _ in range(width)), return_exceptions=True):
            if isinstance(result, BaseException):
                raise result
        return [outcomes[e.message_id] for e in envelopes]

    async def _send(
        self, client: httpx.AsyncClient, envelope: Envelope, handover: _TurnHandover
    ) -> Outcome:
        try:
            request = self.request(client, envelope)
        except (BadInput, httpx.InvalidURL) as exc:
            return Outcome(envelope.message_id, "failed", f"{self.provider}: {exc}")
        host = request.url.host
        if self._limiter is not None and self._held(envelope, host) is None:
            await self._limiter.acquire()
        held = self._held(envelope, host)
        if held is not None:
            return held
        if not await handover.wait(envelope):
            return withdrawn(envelope)
        try:
            response = await client.send(request)
        except _UNSENDABLE as exc:
            reason = f"{self.provider}: the request cannot be made: {exc}"
            return Outcome(envelope.message_id, "failed", reason)
        except _NOT_SENT as exc:
            reason = f"{self.provider} not reached: {type(exc).__name__}: {exc}".rstrip(": ")
            return Outcome(envelope.message_id, "retry", reason)
        except httpx.TransportError as exc:
            reason = f"{self.provider} reply lost: {type(exc).__name__}: {exc}".rstrip(": ")
            return Outcome(envelope.message_id, self.http.lost_reply, reason)
        outcome = self.verdict(envelope, response)
        if response.status_code == 429 and outcome.retry_after:
            until = self._loop.time() + outcome.retry_after
            self._held_until[host] = max(until, self._held_until.get(host, 0.0))
        return outcome

    def _held(self, envelope: Envelope, host: str) -> Outcome | None:
        """A retry, without a request, while ``host`` asked us to wait."""
        left = self._held_until.get(host, 0.0) - self._loop.time()
        if left <= 0:
            return None
        reason = f"{self.provider} asked to wait (HTTP 429); not sent"
        return Outcome(envelope.message_id, "retry", reason, retry_after=round(left, 3))


def json_path(data: object, path: str) -> object:
    """The value at a dotted path (``messages.0.id``) in parsed JSON, or ``None``."""
    node = data
    for step in path.split("."):
        if isinstance(node, Mapping):
            node = node.get(step)
        elif isinstance(node, list) and step.lstrip("-").isdigit():
            index = int(step)
            node = node[index] if -len(node) <= index < len(node) else None
        else:
            return None
    return node
