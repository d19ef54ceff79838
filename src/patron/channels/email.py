"""Email: MIME built for speed, and SMTP delivery over many sessions in one event loop.

MIME is assembled directly, headers and base64 bodies, because the standard library's
``EmailMessage`` with its default policy builds about 330 messages a second on this
machine against 4,700 for direct assembly (see BENCHMARKS.md); the result is ordinary
``multipart/alternative`` that ``email.parser`` reads back (the tests do). Header values
that are not ASCII are encoded by ``email.header``.

Delivery uses ``aiosmtplib``: ``connections`` sessions run as tasks of one event loop
that the transport owns, so sessions cost no threads and stay open between batches.
``aiosmtplib`` opens, secures and authenticates each session and runs the MAIL, RCPT and
DATA commands; the content and the final ``.`` are written through its protocol
object, because the exactly-once protocol of :mod:`patron.channels.base` needs the
content sent before the ``.`` and ``SMTP.data`` writes both at once. Sessions that have
sent a message's content wait at one handover: when every busy session is there, the
whole group is handed over in one call (one commit), and the ``.`` of each message the
call did not refuse is written as soon as it returns, in the same step, before any
session resumes (a refused one's session is closed without it). That is group commit:
the sent state of every message is still durable before its ``.``, and the commit is
shared by the group instead of paid per message. asyncio sets ``TCP_NODELAY``
on its sockets, so the small ``.`` write does not wait for the server's delayed ACK.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formatdate, getaddresses
from functools import lru_cache
from secrets import token_hex

import aiosmtplib
from aiosmtplib.protocol import SMTPProtocol

from patron.channels.base import Envelope, HandingOver, Outcome, withdrawn
from patron.channels.handover import GroupHandover
from patron.models.consent import Channel

_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)
_WORD_BYTES = 39
_TROUBLE = (aiosmtplib.SMTPException, OSError, TimeoutError)


def header_value(value: str) -> str:
    """A header value, RFC 2047-encoded when it is not plain ASCII.

    Written out here rather than with ``email.header.Header``, which takes about 100 µs a
    subject: words of whole characters, at most 39 UTF-8 bytes each, so that a word
    stays under the 75-character limit and a folded line under 78.
    """
    if value.isascii():
        return value
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for char in value:
        width = len(char.encode())
        if size + width > _WORD_BYTES:
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(char)
        size += width
    words.append("".join(chunk))
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(w.encode()).decode()}?=" for w in words)


@lru_cache(maxsize=256)
def address_header(value: str) -> str:
    """``Name <addr>`` with the name encoded when it is not ASCII."""
    ((name, address),) = getaddresses([value])
    if not name:
        return address
    return f"{header_value(name) if not name.isascii() else _quote(name)} <{address}>"


@lru_cache(maxsize=256)
def _mail_from(sender: str) -> bytes:
    """The ``MAIL`` argument for a ``From`` value: one sender serves a whole campaign."""
    ((_, address),) = getaddresses([sender])
    return f"FROM:<{address}>".encode()


def _quote(name: str) -> str:
    return f'"{name}"' if any(c in name for c in '(),.:;<>@[\\]"') else name


def _base64(text: str) -> bytes:
    return base64.encodebytes(text.encode("utf-8")).replace(b"\n", b"\r\n")


def build_mime(envelope: Envelope) -> bytes:
    """The message as RFC 5322 bytes with CRLF line ends: ``multipart/alternative`` with a
    plain-text and an HTML part when there is HTML, else one plain-text part."""
    head = [
        f"From: {address_header(envelope.sender)}",
        f"To: {envelope.to}",
        f"Subject: {header_value(envelope.subject)}",
        f"Date: {formatdate(usegmt=True)}",
        f"Message-ID: {envelope.key}",
        "MIME-Version: 1.0",
        *(f"{name}: {header_value(value)}" for name, value in envelope.headers),
    ]
    text_part = b'Content-Type: text/plain; charset="utf-8"\r\n'
    text_part += b"Content-Transfer-Encoding: base64\r\n\r\n" + _base64(envelope.text)
    if envelope.html is None:
        return "\r\n".join(head).encode() + b"\r\n" + text_part
    boundary = f"=_patron_{token_hex(12)}"
    head.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
    html_part = b'Content-Type: text/html; charset="utf-8"\r\n'
    html_part += b"Content-Transfer-Encoding: base64\r\n\r\n" + _base64(envelope.html)
    mark = f"--{boundary}".encode()
    return (
        "\r\n".join(head).encode()
        + b"\r\n\r\n"
        + mark + b"\r\n" + text_part
        + mark + b"\r\n" + html_part
        + mark + b"--\r\n"
    )  # fmt: skip


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to connect."""

    host: str
    port: int
    connections: int = 8
    timeout: float = 30.0
    starttls: bool = False
    username: str | None = None
    password: str | None = None


class _Handover(GroupHandover):
    """Group commit of the sessions of one ``deliver`` call.

    A session whose message content is out waits here. When every session still at work
    is waiting, the group goes to ``handing_over`` in one call; only after it returns
    is each waiter's final ``.`` written, then the waiters read their replies. If the
    call fails, every waiter, and every session that comes later, gets the error and
    writes no ``.``.
    """

    def __init__(self, handing_over: HandingOver, *, sessions: int) -> None:
        super().__init__(handing_over)
        self._busy = sessions
        self.dots: dict[int, SMTPProtocol] = {}
        """Each waiting message's session, whose final dot goes out on release."""

    def released(self, envelope: Envelope) -> None:
        # the dot is written in the same step as the commit returns: a crash between the
        # two can lose only what this loop over at most ``connections`` sends is doing
        protocol = self.dots.pop(envelope.message_id)
        # a broken session shows itself in _finish, when the reply cannot be read
        with contextlib.suppress(Exception):
            protocol.write(b".\r\n")

    def arrived(self) -> None:
        self._flush_if_all_wait()

    def leave(self) -> None:
        """A session has no more messages: the others no longer wait for it."""
        self._busy -= 1
        self._flush_if_all_wait()

    def _flush_if_all_wait(self) -> None:
        if self.waiting and self.waiting >= self._busy:
            self.flush()


class SmtpTransport:
    """Email over SMTP with ``connections`` concurrent sessions, kept open between batches."""

    channel = Channel.EMAIL

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        # the transport's own loop: sessions belong to the loop they were opened in, and
        # the worker calling ``deliver`` may run in a thread beside the API's loop
        self._loop = asyncio.new_event_loop()
        self._sessions: list[aiosmtplib.SMTP | None] = [None] * settings.connections

    def deliver(self, envelopes: Sequence[Envelope], *, handing_over: HandingOver) -> list[Outcome]:
        """Deliver over all sessions at once (see the module docstring)."""
        if not envelopes:
            return []
        return self._loop.run_until_complete(self._deliver(envelopes, handing_over))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.run_until_complete(self._quit_all())
        self._loop.close()

    async def _quit_all(self) -> None:
        for slot, session in enumerate(self._sessions):
            if session is not None and session.is_connected:
                try:
                    await session.quit()
                except _TROUBLE:
                    session.close()
            self._sessions[slot] = None

    async def _deliver(
        self, envelopes: Sequence[Envelope], handing_over: HandingOver
    ) -> list[Outcome]:
        outcomes: dict[int, Outcome] = {}
        queue = iter(envelopes)
        width = min(self.settings.connections, len(envelopes))
        handover = _Handover(handing_over, sessions=width)

        async def work(slot: int) -> None:
            try:
                for envelope in queue:
                    outcomes[envelope.message_id] = await self._send(slot, envelope, handover)
            finally:
                handover.leave()

        sessions = (work(slot) for slot in range(width))
        for result in await asyncio.gather(*sessions, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result
        return [outcomes[e.message_id] for e in envelopes]

    # -- one session ---------------------------------------------------------------------

    async def _session(self, slot: int) -> aiosmtplib.SMTP:
        session = self._sessions[slot]
        if session is None or not session.is_connected:
            s = self.settings
            session = aiosmtplib.SMTP(
                hostname=s.host, port=s.port, timeout=s.timeout, start_tls=s.starttls,
                username=s.username, password=s.password,
            )  # fmt: skip
            await session.connect()
            if session.is_ehlo_or_helo_needed:  # connect says EHLO only for TLS or a login
                await session.ehlo()
            self._sessions[slot] = session
        return session

    def _drop(self, slot: int) -> None:
        """Close without a ``.``: the server discards a message it holds unfinished."""
        session = self._sessions[slot]
        self._sessions[slot] = None
        if session is not None:
            session.close()

    async def _send(self, slot: int, envelope: Envelope, handover: _Handover) -> Outcome:
        try:
            problem = await self._stage(slot, envelope)
        except BaseException:
            self._drop(slot)
            raise
        if problem is not None:
            return problem
        session = self._sessions[slot]
        assert session is not None and session.protocol is not None
        handover.dots[envelope.message_id] = session.protocol
        try:
            released = await handover.wait(envelope)
        except BaseException:
            self._drop(slot)
            raise
        if not released:
            # another claim sends it: ending the session before the dot makes the server
            # discard what it holds; the next message opens a new one
            handover.dots.pop(envelope.message_id, None)
            self._drop(slot)
            return withdrawn(envelope)
        return await self._finish(slot, envelope)

    async def _stage(self, slot: int, envelope: Envelope) -> Outcome | None:
        """Everything but the final dot; an outcome when the message cannot go now."""
        try:
            session = await self._session(slot)
            reply = await session.execute_command(b"MAIL", _mail_from(envelope.sender))
            if reply.code != 250:
                return await self._refused(slot, envelope, reply, stage="MAIL FROM")
            reply = await session.execute_command(b"RCPT", f"TO:<{envelope.to}>".encode())
            if reply.code not in (250, 251):
                return await self._refused(slot, envelope, reply, stage="RCPT TO")
            reply = await session.execute_command(b"DATA")
            if reply.code != 354:
                return await self._refused(slot, envelope, reply, stage="DATA")
            content = _LEADING_DOT.sub(b"..", build_mime(envelope))
            protocol = session.protocol
            assert protocol is not None
            protocol.write(content if content.endswith(b"\r\n") else content + b"\r\n")
        except ValueError as exc:
            # aiosmtplib refuses an address with a line break; MAIL may be open already
            self._drop(slot)
            return Outcome(envelope.message_id, "failed", f"SMTP command: {exc}")
        except _TROUBLE as exc:
            self._drop(slot)
            return Outcome(envelope.message_id, "retry", f"SMTP connection: {exc}")
        return None

    async def _finish(self, slot: int, envelope: Envelope) -> Outcome:
        """The server's verdict on the final dot, written at the release."""
        session = self._sessions[slot]
        try:
            assert session is not None and session.protocol is not None
            reply = await session.protocol.read_response(timeout=self.settings.timeout)
        except _TROUBLE as exc:
            # the dot may have reached the server: counting it sent risks one loss,
            # sending it again a duplicate; the handing-over already chose "sent"
            self._drop(slot)
            return Outcome(envelope.message_id, "sent", f"server reply lost: {exc}")
        if reply.code == 250:
            return Outcome(envelope.message_id, "sent")
        return self._verdict(envelope, reply, stage="end of DATA")

    async def _refused(
        self, slot: int, envelope: Envelope, reply: aiosmtplib.SMTPResponse, *, stage: str
    ) -> Outcome:
        session = self._sessions[slot]
        try:
            assert session is not None
            await session.execute_command(b"RSET")
        except _TROUBLE:
            self._drop(slot)
        return self._verdict(envelope, reply, stage=stage)

    @staticmethod
    def _verdict(envelope: Envelope, reply: aiosmtplib.SMTPResponse, *, stage: str) -> Outcome:
        text = f"{stage}: {reply.code} {reply.message}".strip()
        if 400 <= reply.code < 500:
            return Outcome(envelope.message_id, "retry", text)
        # 550/551/553 at RCPT: the mailbox does not exist or is not allowed
        hard = stage == "RCPT TO" and reply.code in (550, 551, 553)
        return Outcome(envelope.message_id, "failed", text, hard_bounce=hard)


def message_key(message_id: int, *, campaign_id: int, domain: str) -> str:
    """The ``Message-ID`` of an outbox row: fixed, so a resend carries the same one."""
    return f"<patron.c{campaign_id}.m{message_id}@{domain}>"
