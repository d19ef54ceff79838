"""Normalisation: the same contact written differently is one identity."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email

from patron.customers.normalize import (
    InvalidIdentity,
    check_email,
    normalize,
    normalize_card,
    normalize_email,
    normalize_external,
    normalize_phone,
    normalize_telegram,
)
from patron.models import IdentityKind


def test_email_is_trimmed_and_lower_cased() -> None:
    assert normalize_email("  Ivan.Petrov@Mail.RU ") == "ivan.petrov@mail.ru"


@pytest.mark.parametrize(
    "address",
    [
        "a@example.com", "a.b+tag@example.com", "A@Example.COM", "анна@example.ru",
        "a@пример.рф", "zhanna@@example", ".a@example.com", "a..b@example.com", "a b@x.com",
        "a@localhost", "a@example", "a@x.local", "a@x.invalid", "a@-x.com", "a@b_c.com",
        "a@x..com", "a@example.com.", "a@[1.2.3.4]", '"q"@example.com', "a@", "@x.com",
        "a@" + "b" * 250 + ".com", "x" * 65 + "@example.com",
    ],
)  # fmt: skip
def test_check_email_gives_the_verdict_of_email_validator(address: str) -> None:
    try:
        validate_email(address, check_deliverability=False)
        expected = "valid"
    except EmailNotValidError:
        expected = "invalid"
    try:
        check_email(address)
        found = "valid"
    except EmailNotValidError:
        found = "invalid"
    assert found == expected


@pytest.mark.parametrize(
    "raw", ["8 (916) 123-45-67", "+7 916 1234567", "89161234567", "916 123 45 67"]
)
def test_russian_phone_forms_are_one_e164_number(raw: str) -> None:
    assert normalize_phone(raw, "RU") == "+79161234567"


def test_default_region_decides_numbers_without_country_code() -> None:
    assert normalize_phone("020 7946 0018", "GB") == "+442079460018"


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        (IdentityKind.EMAIL, "not-an-email"),
        (IdentityKind.PHONE, "12"),
        (IdentityKind.CARD, "12 34 ??"),
        (IdentityKind.TELEGRAM, "@a"),
    ],
)
def test_invalid_values_are_refused_with_the_value_named(kind: IdentityKind, raw: str) -> None:
    with pytest.raises(InvalidIdentity, match=repr(raw).replace("?", r"\?")):
        normalize(kind, raw)


def test_card_telegram_and_external_ids() -> None:
    assert normalize_card("1234 5678-9012 3") == "1234567890123"
    assert normalize_telegram("@Ivan_Petrov") == "ivan_petrov"
    assert normalize_telegram("123456789") == "123456789"
    assert normalize_external(" 17850.0 ") == "17850"
    assert normalize(IdentityKind.WHATSAPP, "8 916 123 45 67") == "+79161234567"
