"""Time is timezone-aware UTC inside Patron; naive input is read in a stated zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def to_utc(value: datetime, *, assume: ZoneInfo | None = None) -> datetime:
    """Convert to aware UTC; a naive value is taken to be in ``assume`` (UTC by default)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=assume or UTC)
    return value.astimezone(UTC)


def parse_datetime(raw: str, *, assume: ZoneInfo | None = None) -> datetime:
    """Read ISO 8601 (``2010-12-01 08:26:00``, ``...Z``, ``...+03:00``) or a bare date
    (``2011-12-09``, ``19970101``) as aware UTC. Raises ``ValueError`` naming the value."""
    text = raw.strip()
    if len(text) == 8 and text.isdigit():
        text = f"{text[:4]}-{text[4:6]}-{text[6:]}"
    try:
        return to_utc(datetime.fromisoformat(text), assume=assume)
    except ValueError:
        pass
    for fmt in ("%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y", "%m/%d/%Y %H:%M", "%m/%d/%Y"):
        try:
            return to_utc(datetime.strptime(text, fmt), assume=assume)
        except ValueError:
            continue
    raise ValueError(f"not a date or time: {raw!r}")


def parse_date(raw: str) -> date:
    """Read a calendar date (ISO, ``YYYYMMDD`` or ``DD.MM.YYYY``). Raises ``ValueError``."""
    return parse_datetime(raw).date()


def start_of_day(day: date) -> datetime:
    """Midnight UTC at the start of ``day``."""
    return datetime.combine(day, time.min, tzinfo=UTC)
