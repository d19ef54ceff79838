"""API keys: created with a secret shown once, stored as a SHA-256, checked in constant time.

A key reads ``ptr_<prefix>_<secret>``. The 8-character prefix is stored in clear so that a
key can be found (and named in logs) without its secret; only the hash of the whole key is
kept, so a copy of the database does not let anyone call the API.

A server process remembers a key it found live for ``KEY_CACHE_SECONDS`` (``KeyCache``), so
a till's calls do not each look it up: a revoked key is refused by every server process at
most that long after the revocation is committed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from patron.kit.clock import utcnow
from patron.kit.errors import Conflict, NotFound, Unauthorized
from patron.models import ApiKey, Role

KEY_MARK = "ptr"
PREFIX_LENGTH = 8
_PREFIX_ATTEMPTS = 5
KEY_CACHE_SECONDS = 2.0
"""How long a server process keeps using a key it found live without looking again."""
_CACHE_LIMIT = 1024


def _digest(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def _split(raw_key: str) -> tuple[str, str] | None:
    """``(prefix, secret)`` of a well-formed key, else ``None``."""
    mark, _, rest = raw_key.partition("_")
    # the secret is URL-safe base64 and may itself hold "_", so split by position
    prefix, sep, secret = (
        rest[:PREFIX_LENGTH],
        rest[PREFIX_LENGTH : PREFIX_LENGTH + 1],
        rest[PREFIX_LENGTH + 1 :],
    )
    if mark != KEY_MARK or sep != "_" or not secret:
        return None
    return prefix, secret


def _by_prefix(session: Session, prefix: str) -> ApiKey | None:
    return session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).one_or_none()


def create_api_key(session: Session, *, name: str, role: Role) -> tuple[ApiKey, str]:
    """Store a new key for ``name`` with ``role``; returns the row and the full key.

    The full key is not stored anywhere: the caller shows it once.
    """
    for _ in range(_PREFIX_ATTEMPTS):
        # 32 bits of prefix can collide in a large install; the unique prefix must not
        prefix = secrets.token_hex(PREFIX_LENGTH // 2)
        if _by_prefix(session, prefix) is None:
            break
    else:
        raise Conflict("could not find a free API key prefix; try again")
    raw_key = f"{KEY_MARK}_{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey(name=name, prefix=prefix, secret_hash=_digest(raw_key), role=role, revoked_at=None)
    session.add(key)
    session.flush()
    return key, raw_key


def authenticate(session: Session, raw_key: str) -> ApiKey:
    """The live key ``raw_key`` stands for, or ``Unauthorized``."""
    parts = _split(raw_key.strip())
    key = _by_prefix(session, parts[0]) if parts else None
    # compare even when no key was found, so the answer takes as long either way
    expected = key.secret_hash if key is not None else "0" * 64
    if not hmac.compare_digest(_digest(raw_key.strip()), expected) or key is None:
        raise Unauthorized("invalid API key")
    if key.revoked_at is not None:
        raise Unauthorized("API key revoked")
    return key


def revoke_api_key(session: Session, *, prefix: str) -> ApiKey:
    """Refuse the key with ``prefix`` from now on; the row stays for the record."""
    key = _by_prefix(session, prefix)
    if key is None:
        raise NotFound(f"API key {prefix} does not exist")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return key


class KeyCache:
    """Live keys one server process checked lately, by the SHA-256 of the whole key.

    Only keys found live are kept, each for ``seconds``, so a wrong or revoked key is
    always looked up, and a revocation reaches every process within ``seconds``. The keys
    handed out are detached from any session: they are shared by concurrent requests.
    """

    def __init__(
        self, *, seconds: float = KEY_CACHE_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.seconds = seconds
        self.clock = clock
        self._live: dict[str, tuple[float, ApiKey]] = {}

    def cached(self, raw_key: str) -> ApiKey | None:
        """The key, if this cache found it live less than ``seconds`` ago; no I/O."""
        found = self._live.get(_digest(raw_key.strip()))
        if found is not None and self.clock() - found[0] < self.seconds:
            return found[1]
        return None

    def look_up(self, session: Session, raw_key: str) -> ApiKey:
        """:func:`authenticate` in the database, keeping the key when it is live."""
        now = self.clock()
        key = authenticate(session, raw_key)
        # a request that expires its session's objects must not reload a shared key
        session.expunge(key)
        if len(self._live) >= _CACHE_LIMIT:
            self._live.clear()
        self._live[_digest(raw_key.strip())] = (now, key)
        return key
