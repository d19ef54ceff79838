"""Segment logic: save and change rules, count them live, build (materialise) members
with history, and answer who entered, left or moved. It never commits; the boundary does."""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, TextIO

from sqlalchemy.orm import Session

from patron.kit.clock import utcnow
from patron.kit.errors import Conflict, InvalidInput, NotFound
from patron.models import Segment, SegmentBuild
from patron.segments.replica import ReplicaState, SegmentReplica, configured_replica
from patron.segments.repository import SegmentRepository
from patron.segments.schemas import (
    SCORE_TYPES,
    Condition,
    CountOut,
    MoveOut,
    SegmentIn,
    SegmentUpdate,
    parse_rule,
    rule_json,
)

EXPORT_COLUMNS = ("customer_id", "first_name", "last_name", "city", "email", "phone")

MoveBy = Literal["spend_band", "rfm_segment", "lifecycle_stage", "r_score", "f_score", "m_score"]
"""Scores whose movement between two analysis runs can be tabulated."""


class SegmentService:
    """Segments on one session; live counts go through ``replica`` while it is fresh
    (default: the file named by the ``segment_replica`` setting, if any)."""

    def __init__(self, session: Session, *, replica: SegmentReplica | None = None) -> None:
        self.session = session
        self.repo = SegmentRepository(session)
        self.replica = replica if replica is not None else configured_replica()

    # -- saved segments --------------------------------------------------------------------

    def create(self, data: SegmentIn, *, actor: str) -> Segment:
        """Save a new segment; its rule must compile (named segments exist, no circle)."""
        if self.repo.by_name(data.name) is not None:
            raise Conflict(f"a segment named {data.name!r} exists already")
        self._check(data.rule, name=data.name)
        return self.repo.add(
            Segment(
                name=data.name,
                description=data.description,
                rule=rule_json(data.rule),
                created_by=actor,
            )
        )

    def update(self, segment_id: int, changes: SegmentUpdate) -> Segment:
        """Rename, describe or change the rule of a saved segment."""
        segment = self.get(segment_id)
        if changes.name is not None and changes.name != segment.name:
            if self.repo.by_name(changes.name) is not None:
                raise Conflict(f"a segment named {changes.name!r} exists already")
            segment.name = changes.name
        if changes.description is not None:
            segment.description = changes.description
        if changes.rule is not None:
            self._check(changes.rule, name=segment.name)
            segment.rule = rule_json(changes.rule)
        segment.updated_at = utcnow()
        self.session.flush()
        return segment

    def duplicate(self, segment_id: int, *, name: str, actor: str) -> Segment:
        """A copy of a segment's rule under a new name."""
        source = self.get(segment_id)
        copy = SegmentIn(name=name, description=source.description, rule=self.rule_of(source))
        return self.create(copy, actor=actor)

    def archive(self, segment_id: int) -> Segment:
        """Hide a segment from listings and rules; its history stays."""
        segment = self.get(segment_id)
        segment.archived = True
        self.session.flush()
        return segment

    def get(self, segment_id: int) -> Segment:
        segment = self.repo.get(segment_id)
        if segment is None:
            raise NotFound(f"segment {segment_id} not found")
        return segment

    def find(self, name_or_id: str) -> Segment:
        """A segment by name, or by id when given digits that name none."""
        segment = self.repo.by_name(name_or_id)
        if segment is None and name_or_id.isdigit():
            segment = self.repo.get(int(name_or_id))
        if segment is None:
            raise NotFound(f"segment {name_or_id!r} not found")
        return segment

    def listing(self, *, limit: int = 100, offset: int = 0) -> Sequence[Segment]:
        return self.repo.listing(limit=limit, offset=offset)

    def latest_build(self, segment: Segment) -> SegmentBuild | None:
        return self.repo.latest_build(segment.id)

    def builds(self, segment: Segment, *, limit: int = 100) -> Sequence[SegmentBuild]:
        """Builds newest first: the members over time."""
        return self.repo.builds(segment.id, limit=limit)

    def rule_of(self, segment: Segment) -> Condition:
        return parse_rule(segment.rule, where=f"segment {segment.name!r}")

    def _check(self, rule: Condition, *, name: str) -> None:
        """Compile once so that unknown segments and circles are refused when saving."""
        self.repo.compiler(as_of=utcnow(), inside=(name,), checking=True).predicate(rule)

    # -- evaluation ------------------------------------------------------------------------

    def count(
        self, rule: Condition, *, as_of: datetime | None = None, store: bool = False
    ) -> CountOut:
        """The live count of a rule, saved or not.

        Counted in the replica when it is fresh (it shows the store as it is now and
        holds the scores the rule reads), else, or with ``store``, in the store. Either
        way the number is the same; the replica's is found in a fraction of the time.
        """
        moment = as_of or utcnow()
        started = time.perf_counter()
        compiler = self.repo.compiler(as_of=moment)
        predicate = compiler.predicate(rule)
        fresh = None
        if self.replica is not None and not store:
            fresh = self.replica.fresh(self.session, score_run=compiler.score_run)
        if fresh is not None and self.replica is not None:
            customers = self.replica.count(predicate)
        else:
            customers = self.repo.count(predicate)
        return CountOut(
            customers=customers,
            as_of=moment,
            seconds=round(time.perf_counter() - started, 4),
            route="store" if fresh is None else "replica",
            data_as_of=utcnow() if fresh is None else fresh.refreshed_at,
        )

    def refresh_replica(self) -> ReplicaState:
        """Copy the store into the segment replica now (creating it if need be)."""
        if self.replica is None:
            raise Conflict("no segment replica is configured: set PATRON_SEGMENT_REPLICA")
        return self.replica.refresh(self.session)

    def replica_state(self) -> tuple[ReplicaState | None, bool]:
        """The replica's state (None: there is none) and whether it is fresh for counts
        that read no older analysis run."""
        if self.replica is None:
            return None, False
        state = self.replica.state()
        if state is None:
            return None, False
        fresh = self.replica.fresh(self.session, score_run=state.score_run)
        return state, fresh is not None

    def contains(self, segment: str, customer_id: int, *, as_of: datetime | None = None) -> bool:
        """Whether the rule of a saved segment selects this customer now."""
        found = self.find(segment)
        compiler = self.repo.compiler(as_of=as_of or utcnow())
        predicate = compiler.predicate(self.rule_of(found), where=f"segment {found.name!r}")
        return customer_id in self.repo.ids_among(predicate, [customer_id])

    def preview_ids(
        self, rule: Condition, *, as_of: datetime | None = None, limit: int = 50, offset: int = 0
    ) -> list[int]:
        """One page of the customers a rule selects now, without building."""
        predicate = self.repo.compiler(as_of=as_of or utcnow()).predicate(rule)
        return self.repo.ids(predicate, limit=limit, offset=offset)

    def build(self, segment: Segment, *, at: datetime | None = None) -> SegmentBuild:
        """Materialise the members as of now (or ``at``, which may not precede the last
        build, so the history stays in time order): stays open for newcomers and close
        for leavers."""
        moment = at or utcnow()
        last = self.repo.latest_build(segment.id)
        if last is not None and moment < last.built_at:
            raise Conflict(
                f"segment {segment.name!r} was built at {last.built_at.isoformat()}; "
                f"a build at {moment.isoformat()} would rewrite its history"
            )
        started = time.perf_counter()
        predicate = self.repo.compiler(as_of=moment).predicate(
            self.rule_of(segment), where=f"segment {segment.name!r}"
        )
        build = SegmentBuild(segment_id=segment.id, built_at=moment, rule=segment.rule)
        members, entered, left = self.repo.materialise(segment, predicate, build=build)
        build.members, build.entered, build.left = members, entered, left
        build.seconds = round(time.perf_counter() - started, 4)
        self.session.flush()
        return build

    def members(
        self, segment: Segment, *, on: datetime | None = None, limit: int = 50, offset: int = 0
    ) -> list[tuple[int, datetime]]:
        """Materialised members now, or on a past date, with when each entered."""
        return self.repo.members(segment.id, on=on, limit=limit, offset=offset)

    def member_count(self, segment: Segment, *, on: datetime | None = None) -> int:
        return self.repo.member_count(segment.id, on=on)

    def changes(
        self,
        segment: Segment,
        *,
        since: datetime,
        until: datetime | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> list[tuple[int, str, datetime]]:
        """Who entered and who left between two moments."""
        end = until or utcnow()
        if since >= end:
            raise InvalidInput("'since' must be before 'until'")
        return self.repo.changes(segment.id, since=since, until=end, limit=limit, offset=offset)

    def moves(
        self,
        *,
        before: datetime,
        after: datetime,
        by: MoveBy | None = None,
        segments: Sequence[str] = (),
        within: str | None = None,
    ) -> list[MoveOut]:
        """How customers moved between groups from ``before`` to ``after``.

        The groups are a score of the analysis runs in force on the two dates (``by``:
        spend band, RFM segment, lifecycle stage) or the named segments' materialised
        membership (a customer in several counts in the first one listed). ``within``
        keeps the customers who were members of that segment on ``before``: the effect of
        marketing to it.
        """
        if before >= after:
            raise InvalidInput("'before' must be earlier than 'after'")
        if (by is None) == (not segments):
            raise InvalidInput("give either a score to group by or segments, not both")
        scope = None
        if within is not None:
            scope = self.repo.member_ids_on(self.find(within).id, before)
        if by is not None:
            if by not in SCORE_TYPES:
                raise InvalidInput(f"cannot group by {by!r}")
            first, second = self.repo.run_on(before), self.repo.run_on(after)
            if first is None or second is None:
                missing = before if first is None else after
                raise Conflict(f"no analysis run has completed for a date up to {missing:%Y-%m-%d}")
            rows = self.repo.score_moves(by, before_run=first, after_run=second, within=scope)
        else:
            found = [self.find(name) for name in segments]
            rows = self.repo.segment_moves(found, before=before, after=after, within=scope)
        return sorted(
            (MoveOut(before=_label(a), after=_label(b), customers=n) for a, b, n in rows),
            key=lambda m: (_order(m.before), _order(m.after)),
        )

    def export(self, rule: Condition, out: TextIO, *, as_of: datetime | None = None) -> int:
        """Write the customers a rule selects as CSV (header, then one row each); returns
        the number of customers written."""
        predicate = self.repo.compiler(as_of=as_of or utcnow()).predicate(rule)
        writer = csv.writer(out)
        writer.writerow(EXPORT_COLUMNS)
        written = 0
        for row in self.repo.export_rows(predicate):
            writer.writerow(["" if value is None else value for value in row])
            written += 1
        return written


def _order(label: str | None) -> tuple[int, int, str]:
    # bands in number order ("2" before "10"), names alphabetically, "none" last
    if label is None:
        return (2, 0, "")
    return (0, int(label), "") if label.isdigit() else (1, 0, label)


def _label(value: Any) -> str | None:
    # scores come back as ints for bands and text for segments; the matrix shows text
    return None if value is None else str(value)
