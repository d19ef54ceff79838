"""Normalising identity values so that one person's contacts compare equal.

An email is trimmed and lower-cased (so ``Ivan@Mail.RU `` and ``ivan@mail.ru`` are one
identity); a phone becomes E.164 through ``phonenumbers`` with a configurable default
region (with region RU, ``8 (916) 123-45-67`` and ``+7 916 1234567`` are one phone).
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from patron.models.identity import IdentityKind

_CARD_NOISE = re.compile(r"[\s\-.]")
# the dot-atom rule email_validator applies to an ASCII local part
_DOT_ATOM = re.compile(r"[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+(?:\.[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+)*")
_ADDRESS_MAX = 254
_TELEGRAM_NAME = re.compile(r"^[a-z][a-z0-9_]{3,31}$")
_EXTERNAL_MAX = 128


class InvalidIdentity(ValueError):
    """A value that cannot be read as the identity kind it was given as."""


def normalize_email(raw: str) -> str:
    """Trim and lower-case, then check the syntax (no DNS look-up)."""
    text = raw.strip().lower()
    try:
        check_email(text)
    except EmailNotValidError as exc:
        raise InvalidIdentity(f"not an email address: {raw!r} ({exc})") from None
    return text


def check_email(address: str) -> None:
    """Raise ``EmailNotValidError`` unless ``address`` is a valid email (syntax only).

    Same verdict as ``validate_email(address, check_deliverability=False)``, faster on a
    mailing list: email_validator spends most of its time on the domain, which many
    addresses share. A plain ASCII local part is checked with the rule email_validator
    applies to it, and the domain is checked once per domain; any other address goes
    through email_validator whole.
    """
    local, at, domain = address.rpartition("@")
    if at and len(address) <= _ADDRESS_MAX and domain.isascii() and _DOT_ATOM.fullmatch(local):
        problem = _domain_problem(domain)
        if problem is not None:
            raise EmailNotValidError(problem)
        return
    validate_email(address, check_deliverability=False)


@lru_cache(maxsize=4096)
def _domain_problem(domain: str) -> str | None:
    try:
        validate_email(f"a@{domain}", check_deliverability=False)
    except EmailNotValidError as exc:
        return str(exc)
    return None


@lru_cache(maxsize=65_536)
def normalize_phone(raw: str, region: str = "RU") -> str:
    """E.164, reading numbers without a country code in ``region``.

    Russian numbers are often written with a leading 8 instead of +7; phonenumbers reads
    that national trunk prefix correctly for region RU.
    """
    text = raw.strip()
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise InvalidIdentity(f"not a phone number: {raw!r}") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidIdentity(f"not a valid phone number for region {region}: {raw!r}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_card(raw: str) -> str:
    """Loyalty card numbers ignore spaces, dashes and case."""
    text = _CARD_NOISE.sub("", raw).upper()
    if not text or not text.isalnum() or len(text) > 64:
        raise InvalidIdentity(f"not a card number: {raw!r}")
    return text


def normalize_telegram(raw: str) -> str:
    """A numeric chat id, or a user name without ``@`` in lower case."""
    text = raw.strip().removeprefix("https://t.me/").removeprefix("@").lower()
    if text.lstrip("-").isdigit() or _TELEGRAM_NAME.match(text):
        return text
    raise InvalidIdentity(f"not a Telegram user name or chat id: {raw!r}")


def normalize_external(raw: str) -> str:
    """A source system's own id: trimmed; ``17850.0`` style float ids lose the ``.0``."""
    text = raw.strip()
    if text.endswith(".0") and text[:-2].isdigit():
        text = text[:-2]
    if not text or len(text) > _EXTERNAL_MAX:
        raise InvalidIdentity(f"not an id: {raw!r}")
    return text


def normalize(kind: IdentityKind, raw: str, *, region: str = "RU") -> str:
    """Normalise ``raw`` as an identity of ``kind``; raises ``InvalidIdentity``."""
    match kind:
        case IdentityKind.EMAIL:
            return normalize_email(raw)
        case IdentityKind.PHONE | IdentityKind.WHATSAPP:
            return normalize_phone(raw, region)
        case IdentityKind.CARD:
            return normalize_card(raw)
        case IdentityKind.TELEGRAM:
            return normalize_telegram(raw)
        case IdentityKind.EXTERNAL:
            return normalize_external(raw)
