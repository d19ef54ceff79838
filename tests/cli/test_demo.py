"""The demo on a small synthetic retailer: the hub recovers the simulator's known truth."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from rich.console import Console
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from patron.cli.demo import DEMO_END, run_demo
from patron.cli.demo_loyalty import PILOT_CARD_ENDING
from patron.kit.db import make_sessionmaker
from patron.models import EntryKind, LedgerEntry, LoyaltyAccount


def _guest_revenue_left(data: Path) -> Decimal:
    """Revenue of guest orders whose card is nobody's, so no profile can claim them."""
    with (data / "customers.csv").open(encoding="utf-8") as f:
        cards = {row["card"] for row in csv.DictReader(f) if row["card"]}
    total = Decimal(0)
    with (data / "orders.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if not row["customer_id"] and row["card"] not in cards:
                total += Decimal(row["quantity"]) * Decimal(row["unit_price"])
    return total


@dataclass
class Pilot:
    """The loyalty pilot as read from the generated files, without the store."""

    members: int = 0
    purchases: set[str] = field(default_factory=set)
    """Purchase orders of members in the year after enrolment."""
    returns: set[str] = field(default_factory=set)
    bought_before: set[str] = field(default_factory=set)
    """Members (by card) with an order in the year before enrolment."""
    bought_after: set[str] = field(default_factory=set)


def _pilot(data: Path) -> Pilot:
    """Card holders whose card ends in the pilot's digit, and their orders: those placed
    under their customer id, and guest orders that showed their card."""
    end = datetime(DEMO_END.year, DEMO_END.month, DEMO_END.day, tzinfo=UTC)
    enrolled = end.replace(year=end.year - 1)
    start = enrolled.replace(year=enrolled.year - 1)
    with (data / "customers.csv").open(encoding="utf-8") as f:
        cards = {
            row["customer_id"]: row["card"]
            for row in csv.DictReader(f)
            if row["card"].endswith(PILOT_CARD_ENDING)
        }
    pilot = Pilot(members=len(cards))
    shown = set(cards.values())
    with (data / "orders.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["customer_id"]:
                card = cards.get(row["customer_id"])
            else:
                card = row["card"] if row["card"] in shown else None
            placed = datetime.fromisoformat(row["placed_at"])
            if card is None or not start <= placed < end:
                continue
            if placed < enrolled:
                pilot.bought_before.add(card)
                continue
            pilot.bought_after.add(card)
            is_return = row["order_id"].startswith("C")
            (pilot.returns if is_return else pilot.purchases).add(row["order_id"])
    return pilot


def _ledger(factory: sessionmaker[Session]) -> tuple[int, dict[EntryKind, int]]:
    """Entries, and the points of each kind of entry, summed straight from the ledger."""
    with factory() as session:
        entries = session.scalar(select(func.count()).select_from(LedgerEntry)) or 0
        rows = session.execute(
            select(LedgerEntry.kind, func.sum(LedgerEntry.points)).group_by(LedgerEntry.kind)
        )
        return entries, {EntryKind(kind): int(points) for kind, points in rows}


def test_demo_recovers_the_generators_truth(engine: Engine, tmp_path: Path) -> None:
    factory = make_sessionmaker(engine)
    quiet = Console(file=io.StringIO())
    result = run_demo(factory, console=quiet, customers=1_500, seed=3, data_dir=tmp_path / "data")
    truth, hub, imports = result.truth, result.hub, result.imports

    # every duplicate record, written in another format, was merged into its person
    assert hub.customers == truth.persons
    assert imports["customers"].merged == truth.duplicate_rows
    assert imports["customers"].imported == truth.persons
    # the latest explicit email decision per person is the one in force after merging
    assert hub.consent_granted["email"] == truth.email_marketing_granted
    assert hub.orders == truth.orders + truth.return_orders
    assert hub.revenue == truth.revenue
    assert hub.guest_revenue == _guest_revenue_left(tmp_path / "data")
    for kind in ("products", "orders", "events"):
        assert imports[kind].rejected == 0

    # the analysis scores every person, and its tables account for all of them
    analysis = result.analysis
    assert analysis.customers == truth.persons
    tables = analysis.results["tables"]
    assert sum(row["customers"] for row in tables["lifecycle"]) == truth.persons
    assert len(tables["spend_groups"]) == 11
    printed = quiet.file.getvalue()  # type: ignore[attr-defined]
    for title in ("RFM segments", "Spend groups", "CLV deciles", "Lifecycle stages"):
        assert title in printed

    # the campaign: every treated customer got one real email, saved as an .eml file; the
    # campaign completed; the measured incremental revenue covers the simulator's truth
    campaign = result.campaign
    treated = campaign.audience["treatment"]
    assert treated > 0 and campaign.audience["control"] > 1
    assert campaign.worker.sent == treated == campaign.eml_files
    outbox = tmp_path / "data" / "outbox" / f"campaign-{campaign.campaign_id}"
    assert len(list(outbox.glob("*.eml"))) == treated
    report = campaign.report
    assert report.status == "completed" and report.window_closed
    assert [g.customers for g in report.groups] == [treated, campaign.audience["control"]]
    measured = report.effects[0].incremental_revenue
    assert measured.low is not None and measured.high is not None
    assert measured.low <= campaign.true_incremental_revenue <= measured.high
    assert "the simulator's true effect" in quiet.file.getvalue()  # type: ignore[attr-defined]

    # the loyalty year: every pilot card holder is a member, and every one of their
    # purchases of the year went through the till's confirm; every return was refunded or
    # counted as skipped
    loyalty = result.loyalty
    pilot = _pilot(tmp_path / "data")
    assert pilot.members > 50
    assert loyalty.enrolment.enrolled == pilot.members
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(LoyaltyAccount)) == pilot.members
    replay = loyalty.replay
    assert replay.purchases == len(pilot.purchases) > 0
    assert replay.unusable == 0 and replay.replayed_before == 0
    assert replay.refunds + replay.unmatched_returns == len(pilot.returns) > 0
    assert replay.redemptions > 0
    assert sum(loyalty.tiers.values()) == loyalty.liability.accounts == pilot.members
    # the ledger, summed here by kind, holds exactly what the open lots say is outstanding
    assert loyalty.check.mismatches == [] and loyalty.check.negative == []
    entries, by_kind = _ledger(factory)
    points = loyalty.points
    assert points.earned == by_kind[EntryKind.EARN] > 0
    assert points.redeemed == -by_kind[EntryKind.BURN] == replay.points_redeemed
    assert points.expired == -by_kind[EntryKind.EXPIRE] == loyalty.expired_now
    assert points.reversed == -by_kind.get(EntryKind.REVERSE, 0)
    assert EntryKind.ADJUST not in by_kind
    outstanding = loyalty.liability.outstanding_points
    assert outstanding == points.earned - points.redeemed - points.expired - points.reversed
    assert points.balanced
    # the migration counts each member who bought in either year once: in the band of the
    # year before, or in the "none" row when they bought only after enrolling
    matrix = loyalty.migration
    assert loyalty.cohort == pilot.members
    assert int(matrix.to_numpy().sum()) == len(pilot.bought_before | pilot.bought_after)
    assert int(matrix.drop(index="none").to_numpy().sum()) == len(pilot.bought_before)
    assert int(matrix.loc["none"].sum()) == len(pilot.bought_after - pilot.bought_before)
    assert int(matrix["none"].sum()) == len(pilot.bought_before - pilot.bought_after)
    printed = quiet.file.getvalue()  # type: ignore[attr-defined]
    for title in ("Loyalty pilot", "Loyalty tiers", "Points", "Liability", "Members by spend"):
        assert title in printed
    assert f"ledger check: all {pilot.members:,} balances equal their ledgers" in printed

    again = run_demo(factory, console=quiet, customers=1_500, seed=3, data_dir=tmp_path / "data")
    # the hub now also holds the simulated response of the first campaign
    simulated = sum((g.revenue for g in report.groups), Decimal(0))
    assert again.hub.revenue == hub.revenue + simulated
    assert again.hub.orders == hub.orders + sum(g.converted for g in report.groups)
    assert again.hub.customers == hub.customers
    assert again.imports["orders"].imported == 0
    # a second analysis is a new run with the same scores: the history keeps both
    assert again.analysis.id == analysis.id + 1
    assert again.analysis.results == analysis.results
    # and a second campaign, measured over the fortnight after the first one's
    assert again.campaign.campaign_id == campaign.campaign_id + 1
    assert report.window_end is not None
    assert again.campaign.report.window_start == report.window_end + timedelta(days=1)
    # and the loyalty year is not played twice: nothing enrolled, replayed or written
    # again, and the same figures
    second = again.loyalty
    assert (second.enrolment.enrolled, second.enrolment.members_before) == (0, pilot.members)
    assert (second.replay.purchases, second.replay.refunds) == (0, 0)
    assert second.replay.replayed_before == replay.purchases + replay.refunds
    assert second.expired_now == 0 and second.tier_moves == {"up": 0, "down": 0}
    assert _ledger(factory) == (entries, by_kind)
    assert (second.tiers, second.points, second.liability) == (
        loyalty.tiers, loyalty.points, loyalty.liability,
    )  # fmt: skip
    assert second.migration.equals(matrix)
