"""Money is ``Decimal``, never float: parsing and rounding in one place."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

CENT = Decimal("0.01")


def parse_money(raw: str | int | float | Decimal) -> Decimal:
    """Read an amount written as ``1234.5``, ``1 234,50`` or ``1,234.50``.

    Raises ``ValueError`` naming the value when it is not a finite number.
    """
    if isinstance(raw, Decimal):
        value = raw
    elif isinstance(raw, int | float):
        # repr of a float is its shortest round-tripping form, so 0.1 stays 0.1
        value = Decimal(repr(raw)) if isinstance(raw, float) else Decimal(raw)
    else:
        text = raw.strip().replace("\u00a0", "").replace(" ", "")
        if "," in text and "." in text:
            text = text.replace(",", "")
        elif "," in text:
            text = text.replace(",", ".")
        try:
            value = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"not an amount: {raw!r}") from None
    if not value.is_finite():
        raise ValueError(f"not an amount: {raw!r}")
    return value


def round_money(value: Decimal) -> Decimal:
    """Round half up to cents, the way receipts are rounded."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)
