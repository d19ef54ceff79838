"""All SQL of the customer hub."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

from sqlalchemy import Select, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from patron.kit.db import bulk_insert, table_of
from patron.models import (
    Consent,
    Customer,
    Event,
    Identity,
    IdentityKind,
    MergeCandidate,
    MergeLog,
    Order,
)

IdentityKey = tuple[IdentityKind, str, str]
"""``(kind, namespace, normalised value)``: what makes an identity unique."""

# Bound parameters per statement stay well under SQLite's limit of 32,766.
_IN_CHUNK = 5_000

MOVABLE: dict[str, Any] = {
    "identities": Identity,
    "consents": Consent,
    "orders": Order,
    "events": Event,
}
"""Tables whose rows follow a profile when it is merged, keyed by their merge-log name."""


def chunks(values: Sequence[Any], size: int = _IN_CHUNK) -> Iterable[Sequence[Any]]:
    """Slices of ``values`` small enough for one ``IN (...)``."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


class CustomerRepository:
    """Reads and writes profiles, identities, consents and merges in one session."""

    def __init__(self, session: Session) -> None:
        self.session = session

    # profiles
    def get(self, customer_id: int) -> Customer | None:
        return self.session.get(Customer, customer_id)

    def surviving_ids(self, ids: Iterable[int]) -> dict[int, int]:
        """For each id that exists, the id of the active profile it stands for now: itself,
        or the profile it was merged into (followed to the end of the chain)."""
        parent: dict[int, int | None] = {}
        wanted = set(ids)
        while wanted:
            found: set[int] = set()
            for part in chunks(sorted(wanted)):
                rows = self.session.execute(
                    select(Customer.id, Customer.merged_into_id).where(Customer.id.in_(part))
                )
                for customer_id, merged_into in rows:
                    parent[customer_id] = merged_into
                    found.add(customer_id)
            wanted = {p for i in found if (p := parent[i]) is not None and p not in parent}
        result: dict[int, int] = {}
        for start in parent:
            current = start
            while (nxt := parent.get(current)) is not None and nxt in parent:
                current = nxt
            result[start] = current
        return result

    def get_many(self, ids: Iterable[int]) -> dict[int, Customer]:
        found: dict[int, Customer] = {}
        for part in chunks(sorted(set(ids))):
            for customer in self.session.scalars(select(Customer).where(Customer.id.in_(part))):
                found[customer.id] = customer
        return found

    def add(self, customer: Customer) -> Customer:
        self.session.add(customer)
        self.session.flush()
        return customer

    def insert_many(self, rows: list[dict[str, Any]]) -> list[int]:
        """Insert profiles in bulk; returns their ids in the order given."""
        if not rows:
            return []

        return bulk_insert(self.session, table_of(Customer), rows, with_ids=True)

    def search(self, text: str | None, *, limit: int, offset: int) -> Sequence[Customer]:
        """Active profiles whose name, city or any identity value contains ``text``."""
        query: Select[Customer] = select(Customer).where(Customer.merged_into_id.is_(None))
        if text:
            like = f"%{text.strip().lower()}%"
            by_identity = select(Identity.customer_id).where(Identity.value.like(like))
            query = query.where(
                or_(
                    func.lower(Customer.first_name).like(like),
                    func.lower(Customer.last_name).like(like),
                    func.lower(Customer.city).like(like),
                    Customer.id.in_(by_identity),
                )
            )
        return self.session.scalars(query.order_by(Customer.id).limit(limit).offset(offset)).all()

    def count_active(self) -> int:
        return (
            self.session.scalar(
                select(func.count()).select_from(Customer).where(Customer.merged_into_id.is_(None))
            )
            or 0
        )

    def identity_counts(self) -> dict[str, int]:
        """Identities per kind, over active profiles."""
        rows = self.session.execute(
            select(Identity.kind, func.count())
            .join(Customer, Customer.id == Identity.customer_id)
            .where(Customer.merged_into_id.is_(None))
            .group_by(Identity.kind)
        )
        return {IdentityKind(kind).value: int(n) for kind, n in rows}

    def consent_coverage(self, purpose: str) -> dict[str, int]:
        """Active profiles whose decision in force for ``purpose`` is *granted*, per channel.

        The decision in force is the latest explicit one (``pending`` is not a decision).
        """
        ranked = (
            select(
                Consent.customer_id,
                Consent.channel,
                Consent.status,
                func.row_number()
                .over(
                    partition_by=(Consent.customer_id, Consent.channel),
                    order_by=(Consent.decided_at.desc(), Consent.id.desc()),
                )
                .label("rank"),
            )
            .join(Customer, Customer.id == Consent.customer_id)
            .where(
                Customer.merged_into_id.is_(None),
                Consent.purpose == purpose,
                Consent.status != "pending",
            )
            .subquery()
        )
        rows = self.session.execute(
            select(ranked.c.channel, func.count())
            .where(ranked.c.rank == 1, ranked.c.status == "granted")
            .group_by(ranked.c.channel)
        )
        return {str(channel): int(n) for channel, n in rows}

    # identities
    def owners(self, keys: Iterable[IdentityKey]) -> dict[IdentityKey, int]:
        """The profile that owns each key that exists."""
        wanted = set(keys)
        found: dict[IdentityKey, int] = {}
        values = sorted({value for _, _, value in wanted})
        for part in chunks(values):
            rows = self.session.execute(
                select(
                    Identity.kind, Identity.namespace, Identity.value, Identity.customer_id
                ).where(Identity.value.in_(part))
            )
            for kind, namespace, value, customer_id in rows:
                key = (IdentityKind(kind), namespace, value)
                if key in wanted:
                    found[key] = customer_id
        return found

    def identities_of(self, customer_id: int) -> Sequence[Identity]:
        return self.session.scalars(
            select(Identity).where(Identity.customer_id == customer_id).order_by(Identity.id)
        ).all()

    def identity_values(self, kind: IdentityKind) -> list[tuple[int, str]]:
        """``(customer id, value)`` of every identity of ``kind`` held by an active profile,
        by customer and then in the order the identities were added."""
        rows = self.session.execute(
            select(Identity.customer_id, Identity.value)
            .join(Customer, Customer.id == Identity.customer_id)
            .where(Identity.kind == kind, Customer.merged_into_id.is_(None))
            .order_by(Identity.customer_id, Identity.id)
        )
        return [(int(customer), str(value)) for customer, value in rows]

    def insert_identities(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            bulk_insert(self.session, table_of(Identity), rows)

    # consents
    def consents_of(self, customer_ids: Sequence[int]) -> Sequence[Consent]:
        """Every recorded decision of these profiles, oldest first."""
        found: list[Consent] = []
        for part in chunks(list(customer_ids)):
            found.extend(
                self.session.scalars(
                    select(Consent)
                    .where(Consent.customer_id.in_(part))
                    .order_by(Consent.decided_at, Consent.id)
                )
            )
        return found

    def insert_consents(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            bulk_insert(self.session, table_of(Consent), rows)

    # merges
    def row_ids_of(self, table: Any, customer_id: int) -> list[int]:
        return list(self.session.scalars(select(table.id).where(table.customer_id == customer_id)))

    def reassign(self, table: Any, ids: Sequence[int], *, to: int, only_from: int | None) -> int:
        """Move rows to profile ``to``; with ``only_from``, only rows still owned by it."""
        moved = 0
        for part in chunks(list(ids)):
            statement = update(table).where(table.id.in_(part))
            if only_from is not None:
                statement = statement.where(table.customer_id == only_from)
            result = self.session.execute(
                statement.values(customer_id=to).execution_options(synchronize_session=False)
            )
            moved += result.rowcount  # type: ignore[attr-defined]
        return moved

    def add_merge(self, log: MergeLog) -> MergeLog:
        self.session.add(log)
        self.session.flush()
        return log

    def get_merge(self, merge_id: int) -> MergeLog | None:
        return self.session.get(MergeLog, merge_id)

    def merges_of(self, customer_id: int) -> Sequence[MergeLog]:
        return self.session.scalars(
            select(MergeLog)
            .where(or_(MergeLog.winner_id == customer_id, MergeLog.loser_id == customer_id))
            .order_by(MergeLog.id)
        ).all()

    def count_merges(self) -> int:
        return (
            self.session.scalar(
                select(func.count()).select_from(MergeLog).where(MergeLog.undone_at.is_(None))
            )
            or 0
        )

    # guest orders
    def attach_guest_orders(self, kind: IdentityKind, owners: dict[str, int]) -> int:
        """Give guest orders placed with these contact values to the profiles owning them.

        One look-up per kind finds the few guest orders that match, so a chunk of new
        identities costs two statements, not one per identity.
        """
        column = {
            IdentityKind.EMAIL: Order.guest_email,
            IdentityKind.PHONE: Order.guest_phone,
            IdentityKind.CARD: Order.guest_card,
        }.get(kind)
        if column is None or not owners:
            return 0
        matches: list[dict[str, int]] = []
        for part in chunks(sorted(owners)):
            rows = self.session.execute(
                select(Order.id, column).where(Order.customer_id.is_(None), column.in_(part))
            )
            matches.extend({"oid": oid, "cid": owners[value]} for oid, value in rows if value)
        if matches:
            table = table_of(Order)
            self.session.execute(
                update(table)
                .where(table.c.id == bindparam("oid"))
                .values(customer_id=bindparam("cid")),
                matches,
            )
        return len(matches)

    # fuzzy candidates
    def candidate_blocks(self) -> list[tuple[date, str, list[tuple[int, str]]]]:
        """Active profiles grouped by (birth date, lower-cased city), groups of two or more."""
        city = func.lower(func.trim(Customer.city))
        groups = (
            select(Customer.birth_date, city.label("city"))
            .where(
                Customer.merged_into_id.is_(None),
                Customer.birth_date.is_not(None),
                Customer.city.is_not(None),
            )
            .group_by(Customer.birth_date, city)
            .having(func.count() > 1)
            .subquery()
        )
        rows = self.session.execute(
            select(
                Customer.birth_date,
                city,
                Customer.id,
                Customer.first_name,
                Customer.middle_name,
                Customer.last_name,
            )
            .join(groups, (groups.c.birth_date == Customer.birth_date) & (groups.c.city == city))
            .where(Customer.merged_into_id.is_(None))
            .order_by(Customer.birth_date, city, Customer.id)
        )
        blocks: dict[tuple[date, str], list[tuple[int, str]]] = {}
        for birth, town, cid, first, middle, last in rows:
            name = " ".join(p for p in (first, middle, last) if p)
            blocks.setdefault((birth, town), []).append((cid, name))
        return [(b, t, members) for (b, t), members in blocks.items()]

    def existing_candidate_pairs(self) -> set[tuple[int, int]]:
        return {
            (a, b)
            for a, b in self.session.execute(
                select(MergeCandidate.customer_a_id, MergeCandidate.customer_b_id)
            )
        }

    def add_candidates(self, candidates: list[MergeCandidate]) -> None:
        self.session.add_all(candidates)
        self.session.flush()

    def candidates(self, status: str | None) -> Sequence[MergeCandidate]:
        query = select(MergeCandidate).order_by(MergeCandidate.score.desc(), MergeCandidate.id)
        if status:
            query = query.where(MergeCandidate.status == status)
        return self.session.scalars(query).all()

    def get_candidate(self, candidate_id: int) -> MergeCandidate | None:
        return self.session.get(MergeCandidate, candidate_id)
