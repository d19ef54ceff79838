"""Launching freezes the audience: reasons for leaving customers out, the control group by
hashing, the test wave, and refusals that write nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from patron.campaigns.groups import control_mask, first_wave_mask, unit_hash
from patron.campaigns.service import CampaignService
from patron.kit.db import bulk_insert
from patron.kit.errors import InvalidInput
from patron.kit.settings import get_settings
from patron.models import (
    CampaignRecipient,
    CampaignStatus,
    Channel,
    Consent,
    ConsentStatus,
    Customer,
    Identity,
    IdentityKind,
    RecipientGroup,
)
from patron.segments.schemas import SegmentIn, parse_rule
from patron.segments.service import SegmentService
from tests.campaigns.test_plan import plan
from tests.fixtures.segments import AS_OF, at, store_base

EVERYONE = {"not": {"kind": "profile", "field": "first_name", "value": "nobody"}}


@pytest.fixture
def stored(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    with session_factory() as session:
        store_base(session)
        SegmentService(session).create(
            SegmentIn(name="everyone", rule=parse_rule(EVERYONE)), actor="test"
        )
        session.commit()
    return session_factory


@pytest.fixture
def cap_of_one(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PATRON_FREQUENCY_CAP_MESSAGES", "1")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def groups(session: Session, campaign_id: int) -> dict[int, tuple[str, int | None, str | None]]:
    rows = session.scalars(
        select(CampaignRecipient).where(CampaignRecipient.campaign_id == campaign_id)
    )
    return {r.customer_id: (r.group.value, r.wave, r.reason) for r in rows}


def test_each_left_out_customer_has_the_first_reason_that_applies(
    stored: sessionmaker[Session], cap_of_one: None
) -> None:
    with stored() as session:
        service = CampaignService(session)
        first = service.create(plan(name="first", segment="everyone", control_share=0.0), actor="m")
        launched = service.launch(first.id, actor="m", at=AS_OF - timedelta(days=1))
        assert launched.status is CampaignStatus.RUNNING
        # Anna and Dina hold a granted email consent; Boris withdrew, Gleb's is pending;
        # Vera, Egor and Zhanna have no email (Zhanna's consent came later anyway)
        assert groups(session, first.id) == {
            1: ("treatment", 1, None),
            2: ("excluded", None, "no_consent"),
            3: ("excluded", None, "no_address"),
            4: ("excluded", None, "no_consent"),
            5: ("treatment", 1, None),
            7: ("excluded", None, "no_address"),
            8: ("excluded", None, "no_address"),
        }
        assert launched.audience == {
            "selected": 7,
            "excluded": {"no_address": 3, "no_consent": 2, "suppressed": 0, "frequency_cap": 0},
            "control": 0,
            "treatment": 2,
            "test_wave": 0,
        }
        session.commit()

        # Dina unsubscribes; Anna got one message this week, the cap is one
        service.repo.suppress(5, Channel.EMAIL, reason="unsubscribed")
        second = service.create(plan(name="second", segment="everyone"), actor="m")
        session.commit()
        with pytest.raises(InvalidInput) as refused:
            service.launch(second.id, actor="m", at=AS_OF)
        assert refused.value.message == (
            f"campaign {second.id}: all 7 customers of segment 'everyone' are left out "
            "(no_address 3, no_consent 2, suppressed 1, frequency_cap 1; mostly no_address "
            "for email): nothing sent"
        )
        session.rollback()
        assert service.get(second.id).status is CampaignStatus.DRAFT
        count = select(func.count()).select_from(CampaignRecipient)
        assert session.scalar(count.where(CampaignRecipient.campaign_id == second.id)) == 0

        # a week later the cap no longer applies to Anna
        third = service.create(plan(name="third", segment="everyone"), actor="m")
        service.launch(third.id, actor="m", at=AS_OF + timedelta(days=7))
        assert groups(session, third.id)[1] == ("treatment", 1, None)
        assert groups(session, third.id)[5] == ("excluded", None, "suppressed")


def test_a_segment_that_selects_no_one_is_refused(stored: sessionmaker[Session]) -> None:
    with stored() as session:
        SegmentService(session).create(
            SegmentIn(name="nobody", rule=parse_rule({"not": EVERYONE})), actor="t"
        )
        service = CampaignService(session)
        campaign = service.create(plan(segment="nobody"), actor="m")
        with pytest.raises(InvalidInput, match="segment 'nobody' selects no one: nothing sent"):
            service.launch(campaign.id, actor="m", at=AS_OF)


def test_control_group_and_test_wave_are_exact_deterministic_hashes(
    session_factory: sessionmaker[Session],
) -> None:
    # given 2,000 reachable customers
    people = 2_000
    with session_factory() as session:
        bulk_insert(
            session,
            Customer.__table__,  # type: ignore[arg-type]
            [{"id": i, "first_name": f"C{i}", "attributes": {}} for i in range(1, people + 1)],
        )
        bulk_insert(
            session,
            Identity.__table__,  # type: ignore[arg-type]
            [
                {"customer_id": i, "kind": IdentityKind.EMAIL, "namespace": "",
                 "value": f"c{i}@example.com", "raw_value": f"c{i}@example.com",
                 "verified": False, "source": "t"}
                for i in range(1, people + 1)
            ],
        )  # fmt: skip
        bulk_insert(
            session,
            Consent.__table__,  # type: ignore[arg-type]
            [
                {"customer_id": i, "origin_customer_id": i, "channel": Channel.EMAIL,
                 "status": ConsentStatus.GRANTED, "source": "t",
                 "decided_at": at("2026-01-01 00:00")}
                for i in range(1, people + 1)
            ],
        )  # fmt: skip
        SegmentService(session).create(
            SegmentIn(name="everyone", rule=parse_rule(EVERYONE)), actor="t"
        )
        service = CampaignService(session)
        campaign = service.create(plan(segment="everyone", test_share=0.25), actor="m")
        service.launch(campaign.id, actor="m", at=AS_OF)
        found = groups(session, campaign.id)

    ids = np.arange(1, people + 1, dtype=np.int64)
    control = control_mask(ids, campaign_id=campaign.id, share=0.10)
    wave0 = ~control & first_wave_mask(ids, campaign_id=campaign.id, share=0.25)
    # then each customer is where the hash puts them, and the shares are as planned
    assert [c for c, g in found.items() if g[0] == "control"] == ids[control].tolist()
    assert [c for c, g in found.items() if g[1] == 0] == ids[wave0].tolist()
    assert campaign.audience == {
        "selected": 2000,
        "excluded": {"no_address": 0, "no_consent": 0, "suppressed": 0, "frequency_cap": 0},
        "control": 196,
        "treatment": 1804,
        "test_wave": 440,
    }
    # the hash is fixed by (customer, campaign): the same numbers on any machine
    assert unit_hash(np.array([1, 2, 3], dtype=np.int64), salt=2).round(6).tolist() == [
        0.930287, 0.813872, 0.55062
    ]  # fmt: skip
    assert RecipientGroup.TREATMENT.value == "treatment"
