"""Password hashes: scrypt (RFC 7914) from the standard library, with a random salt.

scrypt is memory-hard, so guessing passwords from a stolen hash costs memory as well as
time. The stored form names its parameters, so they can be raised later without breaking
old hashes: ``scrypt$n$r$p$salt$hash`` (salt and hash in hex).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored``, compared in constant time."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    found = hashlib.scrypt(
        password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
        dklen=len(digest) // 2,
    )  # fmt: skip
    return hmac.compare_digest(found.hex(), digest)
