"""The demo on a small synthetic retailer: the hub recovers the simulator's known truth."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from rich.console import Console
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from patron.cli.demo import DEMO_END, run_demo
from patron.cli.demo_journeys import (
    BEHAVIOUR,
    SHOPPING_STAGES,
    STRETCH_DAYS,
    VALUABLE_CLV,
    ZONE,
    JourneysDemo,
    stretch_start,
)
from patron.cli.demo_loyalty import PILOT_CARD_ENDING
from patron.kit.db import make_sessionmaker
from patron.models import (
    Channel,
    Consent,
    ConsentStatus,
    Customer,
    CustomerScore,
    EntryKind,
    Identity,
    LedgerEntry,
    LoyaltyAccount,
    Message,
    MessageStatus,
    Product,
    Purpose,
)


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


def _reachable(factory: sessionmaker[Session], ids: list[int], channel: Channel) -> set[int]:
    """Those with an address for the channel whose latest marketing decision on it grants."""
    kind = "email" if channel is Channel.EMAIL else "phone"
    with factory() as session:
        addressed = set(session.scalars(
            select(Identity.customer_id).where(Identity.kind == kind)))  # fmt: skip
        latest: dict[int, tuple[datetime, int, ConsentStatus]] = {}
        for row in session.scalars(select(Consent).where(
                Consent.channel == channel, Consent.purpose == Purpose.MARKETING,
                Consent.status != ConsentStatus.PENDING)):  # fmt: skip
            seen = latest.get(row.customer_id)
            if seen is None or (row.decided_at, row.id) > seen[:2]:
                latest[row.customer_id] = (row.decided_at, row.id, row.status)
    return {c for c in ids if c in addressed and c in latest
            and latest[c][2] is ConsentStatus.GRANTED}  # fmt: skip


def _counted(counts: dict[str, int]) -> dict[str, int]:
    """Counts as a report gives them: what happened to no one is not there."""
    return {k: n for k, n in counts.items() if n}


def _check_journeys(factory: sessionmaker[Session], data: Path, run_id: int,
                    journeys: JourneysDemo) -> None:  # fmt: skip
    """Each step's counts, worked out from the generated files, the analysis's scores and
    the simulator's draws."""
    start = stretch_start(datetime.combine(DEMO_END, datetime.min.time(), tzinfo=UTC))
    reports = {r.name: r for r in journeys.reports}
    assert all(r.status == "completed" for r in journeys.reports) and len(reports) == 3

    # birthdays: persons born on one of the fourteen local days from the start
    zone = ZoneInfo(ZONE)
    days = {f"{(start + timedelta(days=d)).astimezone(zone):%m-%d}" for d in range(STRETCH_DAYS)}
    with (data / "customers.csv").open(encoding="utf-8") as f:
        born = sum(row["customer_id"].startswith("C") and row["birth_date"][5:] in days
                   for row in csv.DictReader(f))  # fmt: skip
    with factory() as session:
        stored = session.execute(select(Customer.id, Customer.birth_date).where(
            Customer.merged_into_id.is_(None))).all()  # fmt: skip
    birthdays = sorted(int(c) for c, b in stored if b is not None and f"{b:%m-%d}" in days)
    assert len(birthdays) == born > 0
    greeted = len(_reachable(factory, birthdays, Channel.EMAIL))
    report = reports["Birthday greeting"].report
    assert report["entries"] == {"completed": born}
    assert report["steps"][0]["outcomes"] == _counted(
        {"queued": greeted, "unreachable": born - greeted})  # fmt: skip

    # the win-back: lapsed with a purchase in the last 60 days, by the analysis's scores
    with factory() as session:
        scores = {s.customer_id: s for s in session.scalars(
            select(CustomerScore).where(CustomerScore.run_id == run_id))}  # fmt: skip
    lapsed = sorted(c for c, s in scores.items() if s.lifecycle_stage == "lapsed"
                    and s.recency_days is not None and s.recency_days <= 60)  # fmt: skip
    emailed = sorted(_reachable(factory, lapsed, Channel.EMAIL))
    opened = set(BEHAVIOUR.open_delays(emailed))
    bought = set(BEHAVIOUR.win_backs(sorted(opened), products=[("x", "x", Decimal(1))]))
    missed = [c for c in lapsed if c not in opened]
    texted = _reachable(factory, missed, Channel.SMS)
    valuable = [c for c in missed if (scores[c].clv or 0) >= VALUABLE_CLV]
    with factory() as session:
        phones = set(session.scalars(select(Identity.customer_id).where(Identity.kind == "phone")))
    called = set(BEHAVIOUR.callable(lapsed)) & phones & set(valuable)
    report = reports["Win back the lately lapsed"].report
    assert len(lapsed) > 0 and len(opened) > 0 and len(valuable) > 0
    assert report["entries"] == _counted({
        "completed": len(valuable), "converted": len(bought),
        "exited": len(opened) - len(bought) + len(missed) - len(valuable),
    })  # fmt: skip
    assert {s["id"]: s["outcomes"] for s in report["steps"]} == {step: _counted(counts) for step, counts in {
        "email": {"queued": len(emailed), "unreachable": len(lapsed) - len(emailed)},
        "wait": {"waiting": len(lapsed), "end elapsed": len(lapsed) - len(bought)},
        "opened": {"yes": len(opened) - len(bought), "no": len(missed)},
        "sms": {"queued": len(texted), "unreachable": len(missed) - len(texted)},
        "valuable": {"yes": len(valuable), "no": len(missed) - len(valuable)},
        "call": {"queued": len(called), "unreachable": len(valuable) - len(called)},
        "done": {"exit": len(opened) - len(bought)},
    }.items()}  # fmt: skip

    # the carts: shoppers the simulator picks; a purchase in the same hourly pass as the
    # cart converts the entry before it waits, one before the reminder skips it, one
    # before the coupon skips that
    shoppers = sorted(c for c, s in scores.items() if s.lifecycle_stage in SHOPPING_STAGES)
    with factory() as session:
        products = [(p.sku, p.name, p.price) for p in session.scalars(
            select(Product).where(Product.price.is_not(None)).order_by(Product.sku))
            if p.price is not None]  # fmt: skip
    carts = BEHAVIOUR.left_carts(shoppers, start=start, products=products)
    hour = timedelta(hours=1)

    def passed(at: datetime) -> datetime:  # the first hourly pass at or after ``at``
        return start + -((start - at) // hour) * hour

    waited = [c for c in carts if c.bought_at is None or c.bought_at > passed(c.at)]
    reminded = [c for c in carts if c.bought_at is None or c.bought_at > c.at + 2 * hour]
    offered = [c for c in carts if c.bought_at is None]
    assert len(carts) > 0 and 0 < len(offered) < len(carts)
    to_remind = len(_reachable(factory, [c.customer_id for c in reminded], Channel.EMAIL))
    to_offer = len(_reachable(factory, [c.customer_id for c in offered], Channel.EMAIL))
    report = reports["Abandoned cart"].report
    assert report["entries"] == _counted({"completed": len(offered),
                                          "converted": len(carts) - len(offered)})  # fmt: skip
    assert {s["id"]: s["outcomes"] for s in report["steps"]} == {step: _counted(counts) for step, counts in {
        "hold": {"waiting": len(waited), "end elapsed": len(reminded)},
        "remind": {"queued": to_remind, "unreachable": len(reminded) - to_remind},
        "later": {"waiting": len(reminded), "end elapsed": len(offered)},
        "coupon": {"queued": to_offer, "unreachable": len(offered) - to_offer},
    }.items()}  # fmt: skip
    assert journeys.carts == carts
    assert journeys.orders == len(carts) - len(offered) + len(bought)

    # every message went out through its local stand-in
    emails = len(emailed) + greeted + to_remind + to_offer
    assert journeys.eml_files == emails
    assert journeys.sms == len(texted)
    assert (journeys.worker.sent, journeys.worker.skipped, journeys.worker.failed) == (
        emails + len(texted) + len(called), 0, 0)  # fmt: skip
    with factory() as session:
        calls = session.scalars(select(Message.customer_id).where(
            Message.channel == Channel.PHONE, Message.status == MessageStatus.SENT)).all()  # fmt: skip
    assert sorted(calls) == sorted(called)


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

    # the triggered campaigns' fortnight
    _check_journeys(factory, tmp_path / "data", analysis.id, result.journeys)
    assert "what customers do comes from a seeded simulator" in printed.replace("\n", " ")

    again = run_demo(factory, console=quiet, customers=1_500, seed=3, data_dir=tmp_path / "data")
    # the hub now also holds the simulated response of the first campaign, and the
    # purchases simulated in the triggered campaigns' fortnight
    simulated = sum((g.revenue for g in report.groups), Decimal(0)) + result.journeys.revenue
    assert again.hub.revenue == hub.revenue + simulated
    assert again.hub.orders == hub.orders + sum(g.converted for g in report.groups) + (
        result.journeys.orders)  # fmt: skip
    assert again.hub.customers == hub.customers
    assert again.imports["orders"].imported == 0
    # a second analysis is a new run with the same scores: the history keeps both
    assert again.analysis.id == analysis.id + 1
    assert again.analysis.results == analysis.results
    # and a second campaign (after the first run's three triggered ones), measured over the
    # fortnight after the first one's
    assert again.campaign.campaign_id == campaign.campaign_id + 1 + len(result.journeys.reports)
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
    # and the triggered campaigns' fortnight is not played twice either
    assert not again.journeys.played and again.journeys.reports == result.journeys.reports
