"""Identity resolution, merges, consents and duplicate candidates. Services never commit.

Resolution is deterministic: two records are one person when they share a normalised
email, phone, card, messenger id or a source system's id. Fuzzy likeness (same birth date
and city, similar name) only ever proposes a candidate for a person to review.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from rapidfuzz import fuzz
from sqlalchemy.orm import Session

from patron.customers.normalize import InvalidIdentity, normalize
from patron.customers.repository import MOVABLE, CustomerRepository, IdentityKey
from patron.customers.schemas import PROFILE_FIELDS, ConsentIn, CustomerIn, IdentityIn
from patron.kit.clock import to_utc, utcnow
from patron.kit.errors import Conflict, InvalidInput, NotFound
from patron.models import (
    CandidateStatus,
    Consent,
    ConsentStatus,
    Customer,
    Identity,
    IdentityKind,
    MergeCandidate,
    MergeLog,
)

GUEST_KINDS = (IdentityKind.EMAIL, IdentityKind.PHONE, IdentityKind.CARD)


@dataclass
class Resolved:
    """What became of one incoming profile."""

    customer_id: int
    created: bool
    issues: list[str] = field(default_factory=list)


@dataclass
class _Incoming:
    index: int
    profile: CustomerIn
    keys: dict[IdentityKey, IdentityIn]
    issues: list[str]


def normalise_identities(
    identities: Sequence[IdentityIn], *, region: str
) -> tuple[dict[IdentityKey, IdentityIn], list[str]]:
    """Normalised keys of the valid identities, and one message per invalid one."""
    keys: dict[IdentityKey, IdentityIn] = {}
    issues: list[str] = []
    for identity in identities:
        try:
            value = normalize(identity.kind, identity.value, region=region)
        except InvalidIdentity as exc:
            issues.append(f"{identity.kind.value}: {exc}")
            continue
        namespace = identity.namespace if identity.kind is IdentityKind.EXTERNAL else ""
        keys.setdefault((identity.kind, namespace, value), identity)
    return keys, issues


class _Components:
    """Union-find over incoming rows and existing profiles, to group what is one person."""

    def __init__(self) -> None:
        self.parent: dict[tuple[str, int], tuple[str, int]] = {}

    def find(self, node: tuple[str, int]) -> tuple[str, int]:
        self.parent.setdefault(node, node)
        root = node
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[node] != root:
            self.parent[node], node = root, self.parent[node]
        return root

    def union(self, a: tuple[str, int], b: tuple[str, int]) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


class CustomerService:
    """The customer hub's operations on one session."""

    def __init__(self, session: Session, *, region: str = "RU") -> None:
        self.session = session
        self.repo = CustomerRepository(session)
        self.region = region

    # resolution
    def resolve(
        self, profiles: Sequence[CustomerIn], *, source: str, actor: str = "import"
    ) -> list[Resolved]:
        """Match each profile to an existing person, create it, or merge what it links.

        Profiles in the batch that share an identity with each other or with stored
        profiles are one person. When one incoming record links several stored profiles,
        they are merged into the oldest, with a merge log, because a shared deterministic
        identity is the rule for being one person.
        """
        incoming: list[_Incoming] = []
        for index, profile in enumerate(profiles):
            keys, issues = normalise_identities(profile.identities, region=self.region)
            incoming.append(_Incoming(index, profile, keys, issues))
        owners = self.repo.owners(key for item in incoming for key in item.keys)

        groups = _Components()
        first_holder: dict[IdentityKey, int] = {}
        for item in incoming:
            groups.find(("a", item.index))  # "a" sorts before "c": rows lead their group
            for key in item.keys:
                if key in owners:
                    groups.union(("a", item.index), ("c", owners[key]))
                if key in first_holder:
                    groups.union(("a", item.index), ("a", first_holder[key]))
                else:
                    first_holder[key] = item.index
        members: dict[tuple[str, int], list[tuple[str, int]]] = {}
        for node in list(groups.parent):
            members.setdefault(groups.find(node), []).append(node)

        results: dict[int, Resolved] = {}
        new_rows: list[tuple[list[_Incoming], dict[str, Any]]] = []
        for nodes in members.values():
            rows = sorted((incoming[i] for kind, i in nodes if kind == "a"), key=lambda r: r.index)
            stored = sorted(cid for kind, cid in nodes if kind == "c")
            if not stored:
                new_rows.append((rows, _fields_from(rows)))
                continue
            winner = stored[0]
            for loser in stored[1:]:
                self.merge(winner, loser, reason="shared identity", actor=actor)
            target = self.repo.get(winner)
            assert target is not None  # owners() just read it
            for row in rows:
                _apply_fields(target, row.profile, overwrite=_own_record(row, owners, winner))
                results[row.index] = Resolved(winner, created=False, issues=row.issues)

        created_ids = self.repo.insert_many([fields for _, fields in new_rows])
        for (rows, _), cid in zip(new_rows, created_ids, strict=True):
            for position, row in enumerate(rows):
                results[row.index] = Resolved(cid, created=position == 0, issues=row.issues)

        self._store_identities(incoming, results, owners, source=source)
        self._store_consents(incoming, results, source=source)
        self.session.flush()
        return [results[item.index] for item in incoming]

    def _store_identities(
        self,
        incoming: list[_Incoming],
        results: dict[int, Resolved],
        owners: dict[IdentityKey, int],
        *,
        source: str,
    ) -> None:
        rows: list[dict[str, Any]] = []
        claimed: set[IdentityKey] = set(owners)
        guests: dict[IdentityKind, dict[str, int]] = {}
        for item in incoming:
            cid = results[item.index].customer_id
            for key, identity in item.keys.items():
                if key in claimed:
                    continue
                claimed.add(key)
                kind, namespace, value = key
                rows.append(
                    {
                        "customer_id": cid,
                        "kind": kind,
                        "namespace": namespace,
                        "value": value,
                        "raw_value": identity.value,
                        "verified": identity.verified,
                        "source": source,
                    }
                )
                if kind in GUEST_KINDS:
                    guests.setdefault(kind, {})[value] = cid
        self.repo.insert_identities(rows)
        for kind, owners_of_value in guests.items():
            self.repo.attach_guest_orders(kind, owners_of_value)

    def _store_consents(
        self, incoming: list[_Incoming], results: dict[int, Resolved], *, source: str
    ) -> None:
        wanted = [item for item in incoming if item.profile.consents]
        if not wanted:
            return
        ids = sorted({results[item.index].customer_id for item in wanted})
        seen = {_consent_key(c.customer_id, c) for c in self.repo.consents_of(ids)}
        rows: list[dict[str, Any]] = []
        for item in wanted:
            cid = results[item.index].customer_id
            for consent in item.profile.consents:
                key = (
                    cid,
                    consent.channel.value,
                    consent.purpose.value,
                    consent.status.value,
                    consent.decided_at,
                )
                if key in seen:
                    continue  # the same decision imported again is not a new decision
                seen.add(key)
                rows.append(
                    {
                        "customer_id": cid,
                        "origin_customer_id": cid,
                        "channel": consent.channel,
                        "purpose": consent.purpose,
                        "status": consent.status,
                        "source": consent.source or source,
                        "text_version": consent.text_version,
                        "decided_at": consent.decided_at,
                    }
                )
        self.repo.insert_consents(rows)

    def create_or_update(self, profile: CustomerIn, *, source: str, actor: str) -> Resolved:
        """Resolve one profile, refusing invalid identities instead of skipping them."""
        _, issues = normalise_identities(profile.identities, region=self.region)
        if issues:
            raise InvalidInput("; ".join(issues))
        return self.resolve([profile], source=source, actor=actor)[0]

    # reading
    def get(self, customer_id: int) -> Customer:
        """An existing profile, or ``NotFound``."""
        customer = self.repo.get(customer_id)
        if customer is None:
            raise NotFound(f"customer {customer_id} does not exist")
        return customer

    def get_active(self, customer_id: int) -> Customer:
        """A profile that may still be changed; a merged-away one is a ``Conflict``."""
        customer = self.get(customer_id)
        if customer.merged_into_id is not None:
            raise Conflict(
                f"customer {customer_id} was merged into {customer.merged_into_id}; "
                "change that profile instead"
            )
        return customer

    def update_fields(self, customer_id: int, changes: dict[str, Any]) -> Customer:
        """Set the given profile fields (``None`` empties one); others stay as they are."""
        customer = self.get_active(customer_id)
        for name, value in changes.items():
            if name not in PROFILE_FIELDS and name != "attributes":
                raise InvalidInput(f"{name}: not a profile field")
            setattr(customer, name, value)
        self.session.flush()
        return customer

    def record_consent(self, customer_id: int, decision: ConsentIn, *, source: str) -> Consent:
        """Append a decision; earlier ones stay, because the history is the legal record."""
        self.get_active(customer_id)
        consent = Consent(
            customer_id=customer_id,
            origin_customer_id=customer_id,
            channel=decision.channel,
            purpose=decision.purpose,
            status=decision.status,
            source=decision.source or source,
            text_version=decision.text_version,
            decided_at=to_utc(decision.decided_at),
        )
        self.session.add(consent)
        self.session.flush()
        return consent

    def identities(self, customer_id: int) -> Sequence[Identity]:
        """The profile's identities in the order they were added, to show or compare them."""
        return self.repo.identities_of(customer_id)

    def consent_history(self, customer_id: int) -> Sequence[Consent]:
        """Every consent decision of the profile, oldest first, pending ones included: the
        record behind what :meth:`effective_consents` chooses."""
        return self.repo.consents_of([customer_id])

    def merges(self, customer_id: int) -> Sequence[MergeLog]:
        """The merges the profile took part in, as winner or loser, oldest first."""
        return self.repo.merges_of(customer_id)

    def merge_log(self, merge_id: int) -> MergeLog | None:
        """One merge's log, undone or not; ``None`` when there is no such merge, so the
        caller decides what a missing one means."""
        return self.repo.get_merge(merge_id)

    def effective_consents(self, customer_id: int) -> list[Consent]:
        """The decision in force per channel and purpose: the latest explicit one.

        ``pending`` records are not decisions. Every record stays in the history; this only
        chooses which one counts, so a merge can never turn an opt-out into an opt-in by
        the accident of which profile won.
        """
        latest: dict[tuple[str, str], Consent] = {}
        for consent in self.repo.consents_of([customer_id]):
            if consent.status is ConsentStatus.PENDING:
                continue
            latest[(consent.channel.value, consent.purpose.value)] = consent
        return sorted(latest.values(), key=lambda c: (c.channel.value, c.purpose.value))

    def add_identity(self, customer_id: int, identity: IdentityIn, *, source: str) -> Customer:
        """Add one identity; an identity owned by another profile is a conflict, not a merge."""
        customer = self.get(customer_id)
        keys, issues = normalise_identities([identity], region=self.region)
        if issues:
            raise InvalidInput("; ".join(issues))
        owner = self.repo.owners(keys)
        for key, owner_id in owner.items():
            if owner_id != customer_id:
                raise Conflict(
                    f"{key[0].value} {key[2]} belongs to customer {owner_id}; merge them"
                )
        profile = CustomerIn(identities=[identity])
        self._store_identities(
            [_Incoming(0, profile, keys, [])],
            {0: Resolved(customer_id, False)},
            owner,
            source=source,
        )
        self.session.flush()
        return customer

    # merging
    def merge(self, winner_id: int, loser_id: int, *, reason: str, actor: str) -> MergeLog:
        """Merge profile ``loser_id`` into ``winner_id``, keeping both histories.

        Every identity, consent decision, order and event of the loser moves to the winner;
        winner fields that were empty take the loser's values. The log records exactly what
        moved and what was filled, so that ``unmerge`` restores both profiles.
        """
        if winner_id == loser_id:
            raise InvalidInput("cannot merge a customer into itself")
        winner, loser = self.get(winner_id), self.get(loser_id)
        for profile in (winner, loser):
            if profile.merged_into_id is not None:
                raise Conflict(
                    f"customer {profile.id} was merged into {profile.merged_into_id} already"
                )
        moved: dict[str, list[int]] = {}
        for name, table in MOVABLE.items():
            ids = self.repo.row_ids_of(table, loser_id)
            self.repo.reassign(table, ids, to=winner_id, only_from=None)
            moved[name] = ids
        filled: dict[str, Any] = {}
        for name in PROFILE_FIELDS:
            if getattr(winner, name) is None and getattr(loser, name) is not None:
                setattr(winner, name, getattr(loser, name))
                value = getattr(loser, name)
                filled[name] = value.isoformat() if isinstance(value, date) else value
        added_attributes = {k: v for k, v in loser.attributes.items() if k not in winner.attributes}
        if added_attributes:
            winner.attributes = {**winner.attributes, **added_attributes}
            filled["attributes"] = sorted(added_attributes)
        loser.merged_into_id = winner_id
        return self.repo.add_merge(
            MergeLog(
                winner_id=winner_id,
                loser_id=loser_id,
                reason=reason,
                actor=actor,
                moved=moved,
                filled=filled,
                undone_at=None,
            )
        )

    def unmerge(self, merge_id: int, *, actor: str) -> MergeLog:
        """Undo a merge: the moved rows go back and filled fields are emptied again.

        Rows added to the winner after the merge stay with it. A later merge of the winner
        into a third profile must be undone first, so history is unwound in order.
        """
        log = self.repo.get_merge(merge_id)
        if log is None:
            raise NotFound(f"merge {merge_id} does not exist")
        if log.undone_at is not None:
            raise Conflict(f"merge {merge_id} was undone already")
        winner, loser = self.get(log.winner_id), self.get(log.loser_id)
        if winner.merged_into_id is not None:
            raise Conflict(
                f"customer {winner.id} was merged into {winner.merged_into_id} later; "
                "undo that merge first"
            )
        for name, table in MOVABLE.items():
            self.repo.reassign(table, log.moved.get(name, []), to=loser.id, only_from=winner.id)
        for name, value in log.filled.items():
            if name == "attributes":
                winner.attributes = {k: v for k, v in winner.attributes.items() if k not in value}
                continue
            current = getattr(winner, name)
            stored = current.isoformat() if isinstance(current, date) else current
            if stored == value:  # leave a value someone changed since the merge
                setattr(winner, name, None)
        loser.merged_into_id = None
        log.undone_at = utcnow()
        log.undone_by = actor
        self.session.flush()
        return log

    # fuzzy candidates
    def propose_candidates(self, *, threshold: float = 90.0) -> list[MergeCandidate]:
        """Propose pairs with the same birth date and city and names alike (rapidfuzz).

        The score is ``token_sort_ratio`` of the full names, so word order and case do not
        matter. Pairs already proposed, merged or rejected are not proposed again.
        """
        known = self.repo.existing_candidate_pairs()
        proposals: list[MergeCandidate] = []
        for birth, city, members in self.repo.candidate_blocks():
            for i, (a_id, a_name) in enumerate(members):
                for b_id, b_name in members[i + 1 :]:
                    score = fuzz.token_sort_ratio(a_name.lower(), b_name.lower())
                    if score < threshold or (a_id, b_id) in known:
                        continue
                    proposals.append(
                        MergeCandidate(
                            customer_a_id=a_id,
                            customer_b_id=b_id,
                            score=round(score, 2),
                            reason=f"born {birth.isoformat()}, city {city}, names alike",
                            decided_at=None,
                        )
                    )
        self.repo.add_candidates(proposals)
        return proposals

    def decide_candidate(self, candidate_id: int, *, accept: bool, actor: str) -> MergeCandidate:
        """Merge a proposed pair (the older profile wins) or reject it."""
        candidate = self.repo.get_candidate(candidate_id)
        if candidate is None:
            raise NotFound(f"merge candidate {candidate_id} does not exist")
        if candidate.status is not CandidateStatus.PENDING:
            raise Conflict(f"merge candidate {candidate_id} is {candidate.status.value} already")
        if accept:
            self.merge(
                min(candidate.customer_a_id, candidate.customer_b_id),
                max(candidate.customer_a_id, candidate.customer_b_id),
                reason=f"reviewed candidate {candidate_id}",
                actor=actor,
            )
        candidate.status = CandidateStatus.MERGED if accept else CandidateStatus.REJECTED
        candidate.decided_at = utcnow()
        self.session.flush()
        return candidate


def _consent_key(customer_id: int, consent: Consent) -> tuple[Any, ...]:
    return (
        customer_id,
        consent.channel.value,
        consent.purpose.value,
        consent.status.value,
        consent.decided_at,
    )


def _fields_from(rows: list[_Incoming]) -> dict[str, Any]:
    """A new profile's fields: the first row's, with blanks filled from the others."""
    fields: dict[str, Any] = {"attributes": {}}
    for row in rows:
        for name in PROFILE_FIELDS:
            value = getattr(row.profile, name)
            if value is not None and fields.get(name) is None:
                fields[name] = value
        fields["attributes"] = {**row.profile.attributes, **fields["attributes"]}
    now = utcnow()
    return {
        **{name: fields.get(name) for name in PROFILE_FIELDS},
        "attributes": fields["attributes"],
        "created_at": now,
        "updated_at": now,
    }


def _own_record(row: _Incoming, owners: dict[IdentityKey, int], winner: int) -> bool:
    """True when the row matched through its own source id: it is an update of that record."""
    return any(key[0] is IdentityKind.EXTERNAL and owners.get(key) == winner for key in row.keys)


def _apply_fields(target: Customer, profile: CustomerIn, *, overwrite: bool) -> None:
    """An update of the same record overwrites; a record of another source only fills blanks."""
    for name in PROFILE_FIELDS:
        value = getattr(profile, name)
        if value is None:
            continue
        current = getattr(target, name)
        if (overwrite or current is None) and current != value:
            setattr(target, name, value)
    if profile.attributes:
        merged = (
            {**target.attributes, **profile.attributes}
            if overwrite
            else {**profile.attributes, **target.attributes}
        )
        if merged != target.attributes:
            target.attributes = merged
