"""Mini-programs: short goals for a segment on top of the permanent program (the articles'
3–6-month programs for the best customers). Progress moves with each purchase, and the
reward is given once, at the purchase that reaches the goal. It never commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from patron.kit.clock import utcnow
from patron.kit.errors import Conflict, NotFound
from patron.loyalty.repository import LoyaltyRepository, MiniProgramRepository
from patron.loyalty.schemas import MiniProgramIn, MiniProgramOut
from patron.models import LoyaltyAccount, MiniProgram
from patron.segments.service import SegmentService


class MiniProgramService:
    """Mini-programs on one session."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.repo = MiniProgramRepository(session)

    def create(self, data: MiniProgramIn, *, actor: str) -> MiniProgram:
        if self.repo.by_name(data.name) is not None:
            raise Conflict(f"a mini-program named {data.name!r} exists already")
        segment = SegmentService(self.session).find(data.segment)
        return self.repo.add(
            MiniProgram(
                name=data.name, segment_id=segment.id, measure=data.measure, goal=data.goal,
                reward_points=data.reward_points, starts_at=data.starts_at,
                ends_at=data.ends_at, started_at=None, created_by=actor,
            )
        )  # fmt: skip

    def find(self, name_or_id: str) -> MiniProgram:
        found = self.repo.by_name(name_or_id)
        if found is None and name_or_id.isdigit():
            found = self.repo.get(int(name_or_id))
        if found is None:
            raise NotFound(f"mini-program {name_or_id!r} not found")
        return found

    def listing(self) -> Sequence[MiniProgram]:
        return self.repo.listing()

    def start(self, program: MiniProgram, *, now: datetime | None = None) -> int:
        """Take the segment's members (those with a loyalty account) as participants, as
        the segment stands now; returns how many joined."""
        if program.started_at is not None:
            raise Conflict(f"mini-program {program.name!r} started already")
        moment = now or utcnow()
        segments = SegmentService(self.session)
        segment = segments.get(program.segment_id)
        predicate = segments.repo.compiler(as_of=moment).predicate(
            segments.rule_of(segment), where=f"segment {segment.name!r}"
        )
        joined = self.repo.join(program.id, predicate, at=moment)
        program.started_at = moment
        return joined

    def standing(self, program: MiniProgram) -> MiniProgramOut:
        members, reached, mean = self.repo.standing(program.id)
        return MiniProgramOut(
            id=program.id, name=program.name, segment_id=program.segment_id,
            measure=program.measure, goal=program.goal, reward_points=program.reward_points,
            starts_at=program.starts_at, ends_at=program.ends_at, started_at=program.started_at,
            members=members, reached=reached, mean_progress=mean.quantize(Decimal("0.01")),
        )  # fmt: skip

    def progress(self, account: LoyaltyAccount, *, now: datetime) -> list[MiniProgram]:
        """Bring the account's progress up to date (under its lock, after a purchase or a
        refund); returns the programs whose goal it reaches now, to be rewarded."""
        reached: list[MiniProgram] = []
        ledger = LoyaltyRepository(self.session)
        for program, member in self.repo.memberships(account.id, at=now):
            if program.measure == "spend":
                value = ledger.spend_in_window(account.id, since=program.starts_at, until=now)
            else:
                value = Decimal(
                    self.repo.purchases_in_window(account.id, since=program.starts_at, until=now)
                )
            member.progress = value
            if member.reached_at is None and value >= program.goal:
                member.reached_at = now
                reached.append(program)
        return reached
