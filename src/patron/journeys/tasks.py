"""The trigger runner: the boundary that commits.

Each pass reads facts (events, orders) after the cursors and admits or moves entries in one
transaction with the cursors' move; then timed triggers; then due steps in batches. A
runner killed mid-pass loses only the open transaction, which the next pass redoes: the
step log's unique (entry, step) and the messages' unique (campaign, customer, step key)
mean nothing is done twice. ``patron worker`` and ``patron serve`` run it in a thread.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from patron.journeys.service import JourneyService, PassTally
from patron.kit.clock import utcnow
from patron.kit.db import refresh_statistics, table_of, unit_of_work
from patron.models import CampaignRecipient, JourneyEntry, JourneyStep, Message

log = logging.getLogger(__name__)
_FACTS = 2000  # events and orders read per transaction
_FLOWING = 0.05  # seconds between passes while facts keep coming


def run_pass(
    factory: sessionmaker[Session], *, now: datetime | None = None, fact_batches: int = 5,
    step_batches: int = 20,
) -> PassTally:  # fmt: skip
    """One pass of the runner at ``now``; returns what it did, with ``backlog`` set when
    a bound stopped it before the facts or the due steps ran out."""
    moment = now or utcnow()
    total = PassTally()
    for _ in range(fact_batches):
        with unit_of_work(factory) as session:
            taken = JourneyService(session).take_facts(now=moment, limit=_FACTS)
        _add(total, taken)
        # a short batch means the tables are read to their end: steps go next, so that a
        # steady stream of events cannot hold the messages of the facts already read back
        if taken.read < _FACTS:
            break
    else:
        total.backlog = True
    with unit_of_work(factory) as session:
        _add(total, JourneyService(session).evaluate_timed(now=moment))
    for _ in range(step_batches):
        with unit_of_work(factory) as session:
            moved = JourneyService(session).advance(now=moment)
        _add(total, moved)
        if moved.steps == 0:
            break
    else:
        total.backlog = True
    with unit_of_work(factory) as session:
        JourneyService(session).finish_ended(now=moment)
    return total


class Growth:
    """Keeps PostgreSQL's planner abreast of the tables the runner fills.

    They start empty in a new install, and autovacuum looks at them about once a minute: a
    burst of entries meanwhile is planned as if the tables were still empty, and each
    look-up by an array of ids or source refs scans the table whole, growing slower with
    every entry. After each fifth more rows, the runner has them analysed itself, as the
    importer does after a load.
    """

    def __init__(self, *, least: int = 1000, share: float = 0.2) -> None:
        self.least, self.share = least, share
        self.written = 0  # rows written since the last refresh
        self.known = 0  # rows written up to the last refresh

    def note(self, factory: sessionmaker[Session], tally: PassTally) -> None:
        self.written += tally.entered + tally.held_out + tally.steps + tally.messages
        if self.written < max(self.least, self.share * self.known):
            return
        try:
            with unit_of_work(factory) as session:
                refresh_statistics(session, [table_of(m) for m in GROWING])
        except SQLAlchemyError as exc:  # the pass itself went well; the next one retries
            log.warning("journeys: statistics not refreshed: %s", exc)
            return
        self.known += self.written
        self.written = 0


GROWING = (JourneyEntry, JourneyStep, Message, CampaignRecipient)
"""The tables a burst of trigger entries grows."""


def run_journeys(
    factory: sessionmaker[Session], *, stop: threading.Event, poll_seconds: float = 0.2
) -> None:
    """Run passes until ``stop`` is set; an error is logged and the loop goes on."""
    growth = Growth()
    while not stop.is_set():
        tally = PassTally()
        try:
            tally = run_pass(factory)
            if tally.entered or tally.messages:
                log.info("journeys: %s entered, %s messages", tally.entered, tally.messages)
            growth.note(factory, tally)
        except Exception:  # the loop must outlive a bad journey or a lost connection
            log.exception("journey pass failed")
        # behind: the next pass starts at once. While facts flow, the next pass comes soon:
        # a pass takes what arrived during the last one, so under load the wait between
        # passes, not the work, would set the delay (a pass's length grows with the wait).
        # Idle, a pass every poll_seconds reads only the cursors.
        flowing = tally.read or tally.steps
        stop.wait(0 if tally.backlog else min(poll_seconds, _FLOWING) if flowing else poll_seconds)


def _add(total: PassTally, part: PassTally) -> None:
    for name in ("facts", "read", "entered", "held_out", "steps", "messages", "converted"):
        setattr(total, name, getattr(total, name) + getattr(part, name))
