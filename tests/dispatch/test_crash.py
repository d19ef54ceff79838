"""Kill the worker (SIGKILL) in the middle of a campaign, start it again: no message
reaches the real SMTP server twice, every one reaches it once but for the one gap the
protocol leaves (:mod:`patron.channels.base`), and the campaign completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from patron.campaigns.service import CampaignService
from patron.kit.db import bulk_insert, table_of
from patron.models import (
    CampaignStatus,
    Channel,
    Consent,
    ConsentStatus,
    Customer,
    Identity,
    IdentityKind,
    Message,
    MessageStatus,
)
from patron.segments.schemas import SegmentIn, parse_rule
from patron.segments.service import SegmentService
from tests.campaigns.test_plan import plan
from tests.fixtures.segments import at
from tests.fixtures.smtp import Inbox, smtp_server

__all__ = ["smtp_server"]

PEOPLE = 240
ROOT = Path(__file__).resolve().parents[2]


def _base(session: Session) -> None:
    ids = range(1, PEOPLE + 1)
    bulk_insert(session, table_of(Customer), [{"id": i, "first_name": f"P{i}"} for i in ids])
    bulk_insert(
        session,
        table_of(Identity),
        [
            {"customer_id": i, "kind": IdentityKind.EMAIL, "namespace": "",
             "value": f"p{i}@example.com", "raw_value": f"p{i}@example.com", "verified": False,
             "source": "t"}
            for i in ids
        ],
    )  # fmt: skip
    bulk_insert(
        session,
        table_of(Consent),
        [
            {"customer_id": i, "origin_customer_id": i, "channel": Channel.EMAIL,
             "status": ConsentStatus.GRANTED, "source": "t", "decided_at": at("2026-01-01 00:00")}
            for i in ids
        ],
    )  # fmt: skip


def _worker(engine: Engine, port: int, *extra: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PATRON_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "PATRON_SMTP_HOST": "127.0.0.1",
        "PATRON_SMTP_PORT": str(port),
        "PATRON_SMTP_CONNECTIONS": "2",
        "PATRON_WORKER_BATCH": "10",
        # a killed worker's claim runs out soon, so the restarted one can take it over
        "PATRON_WORKER_LEASE_SECONDS": "2",
    }
    command = [sys.executable, "-c", "from patron.cli.main import main; main()", "worker"]
    return subprocess.Popen(
        [*command, "--poll", "0.2", *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def test_sigkill_mid_campaign_then_restart_sends_no_message_twice_and_loses_none_but_the_gap(
    session_factory: sessionmaker[Session], engine: Engine, smtp_server: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_server
    inbox.delay = 0.01  # about 100 messages a second: the kill lands mid-campaign
    with session_factory() as session:
        _base(session)
        SegmentService(session).create(
            SegmentIn(name="all", rule=parse_rule({"kind": "consent", "channel": "email"})),
            actor="t",
        )
        service = CampaignService(session)
        campaign = service.create(plan(segment="all"), actor="t")
        service.launch(campaign.id, actor="t")
        treated = campaign.audience["treatment"]
        session.commit()

    first = _worker(engine, port)
    deadline = time.monotonic() + 60
    while len(inbox.received) < treated // 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    before = len(inbox.received)
    assert 0 < before < treated, "the kill must land in the middle of the campaign"

    second = _worker(engine, port, "--until-idle")
    output, _ = second.communicate(timeout=120)
    assert second.returncode == 0, output.decode()

    ids = inbox.message_ids()
    assert [k for k, n in Counter(ids).items() if n > 1] == []
    with session_factory() as session:
        statuses = dict(
            session.execute(select(Message.status, func.count()).group_by(Message.status)).all()
        )
        assert statuses == {MessageStatus.SENT: treated}
        rows = {
            f"<patron.c{campaign.id}.m{m.id}@patron.local>": m
            for m in session.scalars(select(Message))
        }
        assert set(ids) <= set(rows)
        # The gap: a group committed as sent whose final dots the kill stopped. Usually
        # nothing is lost; when the kill lands in that instant, the loss is one handover
        # of the killed worker, at most one message per SMTP session (two here).
        lost = [rows[key] for key in set(rows) - set(ids)]
        assert len(lost) <= 2
        assert len({m.sent_at for m in lost}) <= 1
        assert {(m.worker or "").split(":")[1] for m in lost} <= {str(first.pid)}
        assert CampaignService(session).get(campaign.id).status is CampaignStatus.COMPLETED
    assert f"campaign {campaign.id} completed" in output.decode()
