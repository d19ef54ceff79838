"""Importing customer profiles with their identities and consent decisions.

Every row goes through identity resolution: a row that shares an email, phone, card,
messenger id or source id with a stored profile (or an earlier row) is merged into it.
Columns the mapping does not use become custom attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy.orm import Session

from patron.customers.schemas import PROFILE_FIELDS, ConsentIn, CustomerIn, IdentityIn
from patron.customers.service import CustomerService
from patron.ingest.mapping import Extractor, Mapping
from patron.ingest.readers import Record
from patron.ingest.schemas import ChunkResult
from patron.kit.clock import parse_date, parse_datetime
from patron.models import Channel, ConsentStatus, IdentityKind

IDENTITY_FIELDS = {
    "customer_id": IdentityKind.EXTERNAL,
    "email": IdentityKind.EMAIL,
    "phone": IdentityKind.PHONE,
    "card": IdentityKind.CARD,
    "telegram": IdentityKind.TELEGRAM,
    "whatsapp": IdentityKind.WHATSAPP,
}
CONSENT_FIELDS = {f"consent_{c.value}": c for c in Channel}
FIELDS = (
    *IDENTITY_FIELDS,
    *PROFILE_FIELDS,
    *CONSENT_FIELDS,
    "consent_at",
    "consent_source",
    "consent_text_version",
)
CONSENT_WORDS = {
    **dict.fromkeys(
        ("yes", "y", "true", "1", "granted", "opt-in", "optin", "да", "subscribed"),
        ConsentStatus.GRANTED,
    ),
    **dict.fromkeys(
        ("no", "n", "false", "0", "withdrawn", "opt-out", "optout", "нет", "unsubscribed"),
        ConsentStatus.WITHDRAWN,
    ),
    "pending": ConsentStatus.PENDING,
}


class CustomerImporter:
    """Turns chunks of customer records into resolved profiles."""

    def __init__(self, mapping: Mapping, *, source: str, region: str) -> None:
        self.extractor = Extractor(mapping, FIELDS)
        self.used = self.extractor.columns_used()
        self.source = source
        self.region = region
        self.zone = ZoneInfo(mapping.timezone)

    def process(self, session: Session, records: Sequence[Record]) -> ChunkResult:
        result = ChunkResult()
        profiles: list[CustomerIn] = []
        lines: list[Record] = []
        for record in records:
            profile = self._parse(record, result)
            if profile is not None:
                profiles.append(profile)
                lines.append(record)
        resolved = CustomerService(session, region=self.region).resolve(
            profiles, source=self.source, actor="import"
        )
        for record, outcome in zip(lines, resolved, strict=True):
            for issue in outcome.issues:
                result.dropped(record.line, issue, record.values)
            if outcome.created:
                result.imported += 1
            else:
                result.merged += 1
        return result

    def _parse(self, record: Record, result: ChunkResult) -> CustomerIn | None:
        f = self.extractor.fields_of(record, result)
        if f is None:
            return None
        identities = [
            IdentityIn(
                kind=kind,
                value=str(f[field]).strip(),
                namespace=self.source if kind is IdentityKind.EXTERNAL else "",
            )
            for field, kind in IDENTITY_FIELDS.items()
            if f[field] is not None and str(f[field]).strip()
        ]
        if not identities:
            result.reject(
                record.line,
                "no identity: needs customer_id, email, phone, card, telegram or whatsapp",
                record.values,
            )
            return None
        fields: dict[str, Any] = {}
        for name in PROFILE_FIELDS:
            value = f[name]
            if value is None:
                continue
            if name == "birth_date":
                try:
                    value = (
                        value.date()
                        if isinstance(value, datetime)
                        else (value if isinstance(value, date) else parse_date(str(value)))
                    )
                except ValueError as exc:
                    result.dropped(record.line, f"birth_date: {exc}", record.values)
                    continue
            else:
                value = str(value).strip()
            fields[name] = value
        consents = self._consents(record, f, result)
        attributes = {
            key.removeprefix("attr."): value
            for key, value in f.items()
            if key.startswith("attr.") and value is not None
        }
        attributes |= {
            column: value
            for column, value in record.values.items()
            if column not in self.used and value not in (None, "")
        }
        try:
            return CustomerIn(
                identities=identities, consents=consents, attributes=attributes, **fields
            )
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"])
            result.reject(record.line, f"{where}: {error['msg']}", record.values)
            return None

    def _consents(self, record: Record, f: dict[str, Any], result: ChunkResult) -> list[ConsentIn]:
        decisions = {
            channel: str(f[field]).strip().lower()
            for field, channel in CONSENT_FIELDS.items()
            if f[field] is not None
        }
        if not decisions:
            return []
        if f["consent_at"] is None:
            result.dropped(
                record.line, "consent_at: missing, so consents were not recorded", record.values
            )
            return []
        try:
            raw = f["consent_at"]
            when = parse_datetime(
                raw.isoformat() if isinstance(raw, datetime) else str(raw), assume=self.zone
            )
        except ValueError as exc:
            result.dropped(record.line, f"consent_at: {exc}", record.values)
            return []
        consents: list[ConsentIn] = []
        for channel, word in decisions.items():
            status = CONSENT_WORDS.get(word)
            if status is None:
                result.dropped(
                    record.line, f"consent_{channel.value}: not yes/no: {word!r}", record.values
                )
                continue
            consents.append(
                ConsentIn(
                    channel=channel,
                    status=status,
                    decided_at=when,
                    source=f["consent_source"] or self.source,
                    text_version=f["consent_text_version"],
                )
            )
        return consents
