"""The scheduler: launch campaigns whose time has come; the boundary that commits.

Each due campaign is launched in a transaction of its own, so that one failing never
holds the others back, and a scheduler that dies between two leaves nothing half done.
``patron worker`` and ``patron serve`` run this loop in a thread beside the sender.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from patron.campaigns.service import CampaignService
from patron.kit.clock import utcnow
from patron.kit.db import unit_of_work

log = logging.getLogger(__name__)


def run_due(factory: sessionmaker[Session], *, now: datetime | None = None) -> list[int]:
    """Launch every campaign (or recurring campaign's run) due at ``now``; returns the
    ids of the campaigns launched."""
    moment = now or utcnow()
    with unit_of_work(factory) as session:
        due = CampaignService(session).due(now=moment)
    launched: list[int] = []
    for campaign_id in due:
        with unit_of_work(factory) as session:
            started = CampaignService(session).run_due(campaign_id, now=moment)
            if started is not None:
                launched.append(started.id)
    return launched


def run_scheduler(
    factory: sessionmaker[Session], *, stop: threading.Event, poll_seconds: float = 30.0
) -> None:
    """Look for due campaigns every ``poll_seconds`` until ``stop`` is set. An error is
    logged and the loop goes on: the next look retries what did not launch."""
    while not stop.is_set():
        try:
            for campaign_id in run_due(factory):
                log.info("campaign %s launched by the scheduler", campaign_id)
        except Exception:  # the loop must outlive a bad campaign or a lost connection
            log.exception("scheduler pass failed")
        stop.wait(poll_seconds)
