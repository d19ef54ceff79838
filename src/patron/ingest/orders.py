"""Importing orders: one row per order line, or one row per order with only an amount.

Lines are grouped into orders by order id. An order stored by an earlier import is left
alone (its rows count as merged), so importing a file again changes nothing. Rows without
a known customer are kept as guest orders with the contact they were placed with, and are
attached when a profile with that identity appears.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from patron.customers.normalize import InvalidIdentity, normalize
from patron.customers.repository import CustomerRepository
from patron.customers.schemas import CustomerIn, IdentityIn
from patron.customers.service import CustomerService
from patron.events.repository import OrderRepository
from patron.ingest.mapping import Extractor, Mapping
from patron.ingest.readers import Record
from patron.ingest.schemas import ChunkResult
from patron.kit.clock import parse_datetime
from patron.kit.money import CENT, parse_money, round_money
from patron.models import IdentityKind, OrderKind

FIELDS = (
    "order_id",
    "customer_id",
    "email",
    "phone",
    "card",
    "placed_at",
    "sku",
    "name",
    "category",
    "quantity",
    "unit_price",
    "amount",
    "discount",
    "store",
    "channel",
    "currency",
    "country",
)
GUEST_FIELDS = {"email": IdentityKind.EMAIL, "phone": IdentityKind.PHONE, "card": IdentityKind.CARD}


@dataclass(slots=True)
class _Line:
    line: int
    order_id: str
    customer_ref: str | None
    contacts: dict[IdentityKind, str]
    placed_at: datetime
    sku: str | None
    name: str | None
    category: str | None
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    discount: Decimal
    store: str | None
    channel: str | None
    currency: str
    country: str | None


class OrderImporter:
    """Turns chunks of order-line records into orders; keeps state across the chunks of a run."""

    def __init__(self, mapping: Mapping, *, source: str, region: str, currency: str) -> None:
        self.extractor = Extractor(mapping, FIELDS)
        self.source = source
        self.region = region
        self.currency = (mapping.currency or currency).upper()
        self.zone = ZoneInfo(mapping.timezone)
        self.return_prefix = mapping.return_prefix
        # orders created by this run, so that lines of one order in two chunks stay one order
        self.this_run: dict[str, tuple[int, int]] = {}
        self._times: dict[str, datetime] = {}

    def process(self, session: Session, records: Sequence[Record]) -> ChunkResult:
        result = ChunkResult()
        lines = [parsed for r in records if (parsed := self._parse(r, result)) is not None]
        customers = self._resolve_customers(session, lines, result)
        self._store(session, lines, customers, result)
        return result

    # parsing
    def _parse(self, record: Record, result: ChunkResult) -> _Line | None:
        f = self.extractor.fields_of(record, result)
        if f is None:
            return None
        order_id = f["order_id"]
        if order_id is None:
            result.reject(record.line, "order_id: missing", record.values)
            return None
        try:
            placed_at = self._time(f["placed_at"])
            quantity = _decimal(f["quantity"], "quantity", default=Decimal(1))
            unit_price = _money_or_none(f["unit_price"], "unit_price")
            amount = _money_or_none(f["amount"], "amount")
            discount = _money_or_none(f["discount"], "discount") or Decimal("0.00")
        except ValueError as exc:
            result.reject(record.line, str(exc), record.values)
            return None
        if unit_price is None and amount is None:
            result.reject(record.line, "unit_price: missing, and no amount either", record.values)
            return None
        order_id = str(order_id).strip()
        is_return = quantity < 0 or bool(
            self.return_prefix and order_id.startswith(self.return_prefix)
        )
        if is_return and quantity > 0:
            quantity = -quantity
        if amount is None:
            assert unit_price is not None
            amount = round_money(quantity * unit_price)
        else:
            amount = -abs(amount) if is_return else amount
            if unit_price is None:
                unit_price = round_money(abs(amount) / abs(quantity)) if quantity else amount
        contacts: dict[IdentityKind, str] = {}
        for field, kind in GUEST_FIELDS.items():
            raw = f[field]
            if raw is None:
                continue
            try:
                contacts[kind] = normalize(kind, str(raw), region=self.region)
            except InvalidIdentity as exc:
                result.dropped(record.line, f"{field}: {exc}", record.values)
        ref = f["customer_id"]
        return _Line(
            line=record.line,
            order_id=order_id,
            customer_ref=None if ref is None else str(ref),
            contacts=contacts,
            placed_at=placed_at,
            sku=_text(f["sku"]),
            name=_text(f["name"]),
            category=_text(f["category"]),
            quantity=quantity,
            unit_price=unit_price,
            amount=amount,
            discount=discount,
            store=_text(f["store"]),
            channel=_text(f["channel"]),
            currency=(f["currency"] or self.currency).upper(),
            country=_text(f["country"]),
        )

    def _time(self, raw: Any) -> datetime:
        if raw is None:
            raise ValueError("placed_at: missing")
        if isinstance(raw, datetime):  # Excel cells arrive as datetimes
            return parse_datetime(raw.isoformat(), assume=self.zone)
        text = str(raw)
        cached = self._times.get(text)
        if cached is None:
            try:
                cached = parse_datetime(text, assume=self.zone)
            except ValueError as exc:
                raise ValueError(f"placed_at: {exc}") from None
            if len(self._times) > 200_000:
                self._times.clear()
            self._times[text] = cached
        return cached

    # customers
    def _resolve_customers(
        self, session: Session, lines: list[_Line], result: ChunkResult
    ) -> dict[str, int]:
        """Customer id per external reference; unknown references become new profiles."""
        refs: dict[str, str] = {}
        for line in lines:
            if line.customer_ref is None:
                continue
            if line.customer_ref not in refs:
                try:
                    refs[line.customer_ref] = normalize(
                        IdentityKind.EXTERNAL, line.customer_ref, region=self.region
                    )
                except InvalidIdentity as exc:
                    result.dropped(line.line, f"customer_id: {exc}", {})
                    line.customer_ref = None
        owners = CustomerRepository(session).owners(
            (IdentityKind.EXTERNAL, self.source, value) for value in set(refs.values())
        )
        known = {value: cid for (_, _, value), cid in owners.items()}
        missing: dict[str, str | None] = {}
        for line in lines:
            if line.customer_ref is not None:
                value = refs[line.customer_ref]
                if value not in known:
                    missing.setdefault(value, line.country)
        if missing:
            profiles = [
                CustomerIn(
                    country=country,
                    identities=[
                        IdentityIn(kind=IdentityKind.EXTERNAL, namespace=self.source, value=value)
                    ],
                )
                for value, country in missing.items()
            ]
            resolved = CustomerService(session, region=self.region).resolve(
                profiles, source=self.source, actor="import"
            )
            known.update({value: r.customer_id for value, r in zip(missing, resolved, strict=True)})
        return {ref: known[value] for ref, value in refs.items()}

    # storing
    def _store(
        self, session: Session, lines: list[_Line], customers: dict[str, int], result: ChunkResult
    ) -> None:
        repo = OrderRepository(session)
        fresh_ids = [x.order_id for x in lines if x.order_id not in self.this_run]
        stored = repo.ids_by_external(self.source, fresh_ids)
        guest_owner = self._guest_owners(session, lines)

        headers: dict[str, dict[str, Any]] = {}
        pending: list[tuple[str, _Line]] = []
        deltas: dict[int, Decimal] = {}
        for line in lines:
            if line.order_id in stored:
                result.merged += 1  # stored by an earlier import: left as it is
                continue
            pending.append((line.order_id, line))
            if line.order_id in self.this_run:
                oid, _ = self.this_run[line.order_id]
                deltas[oid] = deltas.get(oid, Decimal(0)) + line.amount
                continue
            header = headers.get(line.order_id)
            if header is None:
                customer_id = customers.get(line.customer_ref) if line.customer_ref else None
                if customer_id is None:
                    customer_id = next(
                        (guest_owner[c] for c in line.contacts.items() if c in guest_owner), None
                    )
                headers[line.order_id] = header = {
                    "customer_id": customer_id,
                    "source": self.source,
                    "external_id": line.order_id,
                    "kind": OrderKind.RETURN if line.quantity < 0 else OrderKind.PURCHASE,
                    "store": line.store,
                    "channel": line.channel,
                    "placed_at": line.placed_at,
                    "total": Decimal(0),
                    "discount": Decimal(0),
                    "currency": line.currency,
                    "guest_email": None if customer_id else line.contacts.get(IdentityKind.EMAIL),
                    "guest_phone": None if customer_id else line.contacts.get(IdentityKind.PHONE),
                    "guest_card": None if customer_id else line.contacts.get(IdentityKind.CARD),
                }
            header["total"] += line.amount
            header["discount"] += line.discount

        new_ids = dict(zip(headers, repo.insert_orders(list(headers.values())), strict=True))
        for external, oid in new_ids.items():
            self.this_run[external] = (oid, 0)
        if deltas:
            repo.add_to_totals(deltas)

        rows: list[dict[str, Any]] = []
        for external, line in pending:
            oid, count = self.this_run[external]
            self.this_run[external] = (oid, count + 1)
            rows.append(
                {
                    "order_id": oid,
                    "line_no": count + 1,
                    "sku": line.sku,
                    "name": line.name,
                    "category": line.category,
                    "quantity": line.quantity,
                    "unit_price": line.unit_price,
                    "amount": line.amount,
                }
            )
        repo.insert_lines(rows)
        result.imported += len(rows)
        self._link_returns(repo, headers, new_ids, pending)

    def _guest_owners(
        self, session: Session, lines: list[_Line]
    ) -> dict[tuple[IdentityKind, str], int]:
        keys = {
            (kind, "", value)
            for line in lines
            if line.customer_ref is None
            for kind, value in line.contacts.items()
        }
        if not keys:
            return {}
        owners = CustomerRepository(session).owners(keys)
        return {(kind, value): cid for (kind, _, value), cid in owners.items()}

    def _link_returns(
        self,
        repo: OrderRepository,
        headers: dict[str, dict[str, Any]],
        new_ids: dict[str, int],
        pending: list[tuple[str, _Line]],
    ) -> None:
        """Link each new return to the purchase it most likely returns.

        The purchase must be the same customer's, earlier, and hold one of the returned SKUs.
        An order whose id is the return's id without its prefix is preferred (the convention
        of systems that number returns that way); otherwise the latest such purchase.
        """
        returns = {
            new_ids[external]: header
            for external, header in headers.items()
            if header["kind"] is OrderKind.RETURN and header["customer_id"] is not None
        }
        if not returns:
            return
        skus: dict[str, set[str]] = {}
        for external, line in pending:
            if line.sku:
                skus.setdefault(external, set()).add(line.sku)
        latest = max(h["placed_at"] for h in returns.values())
        candidates = repo.purchases_with_skus(
            [h["customer_id"] for h in returns.values()],
            sorted({s for h in returns.values() for s in skus.get(h["external_id"], ())}),
            latest,
        )
        by_customer: dict[int, list[tuple[int, str, datetime, str]]] = {}
        for oid, cid, sku, placed, external in candidates:
            by_customer.setdefault(cid, []).append((oid, sku, placed, external))
        links: dict[int, int] = {}
        for rid, header in returns.items():
            wanted = skus.get(header["external_id"], set())
            prefix = self.return_prefix or ""
            named = header["external_id"].removeprefix(prefix) if prefix else None
            matches = [
                c
                for c in by_customer.get(header["customer_id"], [])
                if c[1] in wanted and c[2] <= header["placed_at"]
            ]
            if not matches:
                continue
            exact = [c for c in matches if c[3] == named]
            best = exact[0] if exact else max(matches, key=lambda c: (c[2], c[0]))
            links[rid] = best[0]
        repo.link_returns(links)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _decimal(raw: Any, field: str, *, default: Decimal) -> Decimal:
    if raw is None:
        return default
    try:
        value = Decimal(str(raw).strip().replace(",", "."))
    except InvalidOperation:
        raise ValueError(f"{field}: not a number: {raw!r}") from None
    if not value.is_finite():
        raise ValueError(f"{field}: not a number: {raw!r}")
    return value


def _money_or_none(raw: Any, field: str) -> Decimal | None:
    if raw is None:
        return None
    try:
        return parse_money(raw).quantize(CENT) if isinstance(raw, float) else parse_money(raw)
    except ValueError as exc:
        raise ValueError(f"{field}: {exc}") from None
