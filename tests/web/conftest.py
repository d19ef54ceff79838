"""A store for the page tests: the segment tests' base, a sent email campaign, an analysis
summary, and one account per role (password ``correct-horse-1``)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from patron.campaigns.service import CampaignService
from patron.channels.base import MemoryTransport
from patron.dispatch.tasks import run_worker
from patron.kit.db import make_sessionmaker
from patron.kit.settings import Settings
from patron.models import AnalysisRun, Role, RunStatus
from patron.segments.schemas import SegmentIn, parse_rule
from patron.segments.service import SegmentService
from patron.web.service import WebService
from tests.campaigns.test_plan import plan
from tests.fixtures.segments import store_base

PASSWORD = "correct-horse-1"
TABLES = {
    "rfm_segments": [{"rfm_segment": "Champions", "customers": 2, "share_of_customers": 0.4,
                      "monetary": "1500.00", "share_of_monetary": 0.75}],
    "spend_groups": [{"band": 1, "min_spend": "50.00", "max_spend": "100.00", "customers": 3,
                      "share_of_customers": 0.6, "share_of_turnover": 0.2},
                     {"band": 2, "min_spend": "100.00", "max_spend": "1000.00", "customers": 2,
                      "share_of_customers": 0.4, "share_of_turnover": 0.8}],
    "lifecycle": [{"stage": "active", "customers": 3, "share_of_customers": 0.6},
                  {"stage": "at_risk", "customers": 1, "share_of_customers": 0.2},
                  {"stage": "lapsed", "customers": 1, "share_of_customers": 0.2}],
}  # fmt: skip


@pytest.fixture
def site(engine: Engine) -> sessionmaker[Session]:
    factory = make_sessionmaker(engine)
    with factory() as session:
        store_base(session)
        SegmentService(session).create(
            SegmentIn(name="subscribers", rule=parse_rule({"kind": "consent", "channel": "email"})),
            actor="test",
        )
        campaign = CampaignService(session).create(
            plan(name="Spring sale", segment="subscribers", control_share=0.0), actor="maria"
        )
        CampaignService(session).launch(campaign.id, actor="maria")
        session.add(AnalysisRun(id=10, as_of=datetime(2026, 11, 1, tzinfo=UTC), model_version="t",
                                status=RunStatus.COMPLETED, results={"tables": TABLES}))  # fmt: skip
        if engine.dialect.name == "postgresql":
            # the base is written with its own ids: new profiles must number after them
            for table in ("customers", "analysis_runs"):
                session.execute(text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"))  # fmt: skip
        for role in (Role.ADMIN, Role.MARKETER, Role.ANALYST):
            WebService(session).create_user(role.value, PASSWORD, role=role, actor="test")
        session.commit()
    settings = Settings(public_url="http://127.0.0.1", secret_key="a-test-secret-of-enough-length")
    run_worker(factory, MemoryTransport(), settings=settings, until_idle=True)
    return factory
