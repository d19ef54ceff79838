"""Background work of the segments domain: keeping the segment replica current."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from patron.segments.replica import ReplicaState, configured_replica
from patron.segments.service import SegmentService


def refresh_replica(
    factory: sessionmaker[Session], *, only_if_present: bool = False
) -> ReplicaState | None:
    """Copy the store into the configured segment replica; None when none is configured,
    or with ``only_if_present`` when none has been made yet (imports and analyses keep an
    existing replica current; ``patron segment refresh`` makes the first)."""
    replica = configured_replica()
    if replica is None or (only_if_present and replica.state() is None):
        return None
    with factory() as session:
        # only reads the store: nothing to commit
        return SegmentService(session, replica=replica).refresh_replica()
