"""Signed links in messages: the open pixel, click redirects and one-click unsubscribe.

A link carries the outbox row's id and an HMAC-SHA256 signature made with the server's
secret key, so no one can forge an unsubscribe for someone else or turn the redirect into
an open redirector: a click link signs the target URL as well. No per-message secret is
stored; the signature is recomputed on arrival.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import quote

from patron.kit.errors import NotFound

_HREF = re.compile(r"""(<a\s[^>]*?href\s*=\s*)(["'])(https?://[^"']+)\2""", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def _sign(secret: str, text: str) -> str:
    digest = hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()
    return digest[:24]


def token(message_id: int, *, secret: str) -> str:
    """``<id>-<signature>`` for the open pixel and the unsubscribe link."""
    return f"{message_id}-{_sign(secret, f'message:{message_id}')}"


def message_of(raw: str, *, secret: str) -> int:
    """The outbox id in a token; a forged or damaged token is "not found"."""
    head, _, signature = raw.partition("-")
    if not head.isdigit() or not hmac.compare_digest(
        signature, _sign(secret, f"message:{int(head)}")
    ):
        raise NotFound("unknown link")
    return int(head)


def click_signature(raw_token: str, url: str, *, secret: str) -> str:
    """The signature binding a click link's target to its message."""
    return _sign(secret, f"click:{raw_token}:{url}")


def check_click(raw_token: str, url: str, signature: str, *, secret: str) -> int:
    """The outbox id of a valid click link; anything else is "not found"."""
    message_id = message_of(raw_token, secret=secret)
    if not hmac.compare_digest(signature, click_signature(raw_token, url, secret=secret)):
        raise NotFound("unknown link")
    return message_id


def unsubscribe_url(message_id: int, *, base: str, secret: str) -> str:
    return f"{base.rstrip('/')}/u/{token(message_id, secret=secret)}"


def track_html(html: str, message_id: int, *, base: str, secret: str) -> str:
    """Point every ``http(s)`` link of ``<a href>`` at the click redirect, except links to
    this server itself, and add the open pixel before ``</body>`` (or at the end)."""
    raw = token(message_id, secret=secret)
    root = base.rstrip("/")

    def redirect(match: re.Match[str]) -> str:
        prefix, quote_mark, url = match.groups()
        if url.startswith(f"{root}/"):
            return match.group(0)  # our own links (unsubscribe) are not clicks to count
        signature = click_signature(raw, url, secret=secret)
        target = f"{root}/t/c/{raw}?u={quote(url, safe='')}&s={signature}"
        return f"{prefix}{quote_mark}{target.replace('&', '&amp;')}{quote_mark}"

    tracked = _HREF.sub(redirect, html)
    pixel = f'<img src="{root}/t/o/{raw}.gif" width="1" height="1" alt="">'
    if _BODY_END.search(tracked):
        return _BODY_END.sub(lambda m: pixel + m.group(0), tracked, count=1)
    return tracked + pixel
