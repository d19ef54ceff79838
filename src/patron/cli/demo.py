"""``patron demo``: a synthetic retailer imported through the normal path, summarised,
analysed, and marketed to: a campaign to the best customers at risk, sent through a local
SMTP server, measured against its control group on a simulated response; then a year of
a loyalty program played on a pilot of its card holders; then a fortnight of triggered
campaigns: birthdays, a win-back journey and abandoned carts.

The data comes from Patron's own seeded generator (a simulator, see
``patron.ingest.synthetic``), so the demo works on any machine. Running it again on the
same store imports nothing new, because every import is idempotent; it only adds one more
analysis run and one more campaign beside the earlier ones, and neither the loyalty year
nor the triggered campaigns' fortnight is played twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session, sessionmaker

from patron.analytics.report import print_report
from patron.analytics.tasks import RunSummary, run_analysis
from patron.cli.demo_campaign import CampaignDemo, run_campaign_demo
from patron.cli.demo_journeys import JourneysDemo, run_journeys_demo
from patron.cli.demo_loyalty import LoyaltyDemo, run_loyalty_demo
from patron.customers.repository import CustomerRepository
from patron.events.repository import OrderRepository
from patron.ingest.mapping import Kind, Mapping
from patron.ingest.schemas import ImportSummary
from patron.ingest.synthetic import Truth, generate
from patron.ingest.tasks import import_file
from patron.kit.db import unit_of_work
from patron.kit.money import round_money
from patron.models import Purpose

DEMO_END = date(2026, 11, 1)
"""The generated history ends here; the demo analyses the base as of this date."""

DEMO_FILES: list[tuple[Kind, str]] = [
    ("products", "products.csv"),
    ("customers", "customers.csv"),
    ("orders", "orders.csv"),
    ("events", "events.jsonl"),
]


@dataclass(frozen=True)
class HubSummary:
    """The customer hub at a glance."""

    customers: int
    merges: int
    identities: dict[str, int]
    consent_granted: dict[str, int]
    revenue: Decimal
    guest_revenue: Decimal
    orders: int
    guest_orders: int


def hub_summary(session: Session) -> HubSummary:
    """Counts and money of the whole hub, computed in the store."""
    customers = CustomerRepository(session)
    revenue, guest_revenue, orders, guest_orders = OrderRepository(session).revenue()
    return HubSummary(
        customers=customers.count_active(),
        merges=customers.count_merges(),
        identities=customers.identity_counts(),
        consent_granted=customers.consent_coverage(Purpose.MARKETING.value),
        revenue=round_money(revenue),
        guest_revenue=round_money(guest_revenue),
        orders=orders,
        guest_orders=guest_orders,
    )


@dataclass(frozen=True)
class DemoResult:
    """What the demo generated, what each import did, and the hub it built."""

    truth: Truth
    imports: dict[str, ImportSummary]
    hub: HubSummary
    analysis: RunSummary
    campaign: CampaignDemo
    loyalty: LoyaltyDemo
    journeys: JourneysDemo


def run_demo(
    factory: sessionmaker[Session], *, console: Console, customers: int, seed: int, data_dir: Path
) -> DemoResult:
    """Generate, import and print the profile summary; returns everything for tests."""
    console.print(f"generating a synthetic retailer: {customers:,} persons, seed {seed} ...")
    truth = generate(data_dir, customers=customers, seed=seed, end=DEMO_END)
    console.print(
        f"  {truth.customer_rows:,} customer rows ({truth.duplicate_rows:,} duplicates written "
        f"in other formats), {truth.order_lines:,} order lines, {truth.events:,} events"
    )
    imports: dict[str, ImportSummary] = {}
    for kind, name in DEMO_FILES:
        summary = import_file(factory, kind, data_dir / name, mapping=Mapping(), source="shop")
        imports[kind] = summary
        console.print("  " + summary.line() + f" in {summary.seconds:.1f} s")
    with unit_of_work(factory) as session:
        hub = hub_summary(session)
    table = Table(title="Customer hub", show_header=False)
    table.add_row("customers (one per person)", f"{hub.customers:,}")
    table.add_row("duplicate records merged", f"{imports['customers'].merged:,}")
    for identity_kind, count in sorted(hub.identities.items()):
        table.add_row(f"identities: {identity_kind}", f"{count:,}")
    for channel, count in sorted(hub.consent_granted.items()):
        share = count / hub.customers if hub.customers else 0.0
        table.add_row(f"marketing consent: {channel}", f"{count:,} ({share:.1%})")
    table.add_row("orders (purchases and returns)", f"{hub.orders:,}")
    table.add_row("revenue (returns netted off)", f"{hub.revenue:,}")
    table.add_row(
        "  of which guest revenue", f"{hub.guest_revenue:,} ({hub.guest_orders:,} orders)"
    )
    console.print(table)
    # the generated history ends at DEMO_END, so analysing as of then gives the same
    # scores whatever day the demo is run
    console.print(f"analysing the base as of {DEMO_END:%Y-%m-%d} ...")
    analysis = run_analysis(factory, as_of=datetime.combine(DEMO_END, time(), tzinfo=UTC))
    print_report(console, analysis.results, as_of=analysis.as_of)
    campaign = run_campaign_demo(factory, console=console, workspace=data_dir, as_of=analysis.as_of)
    # the loyalty year ends where the history does, before the campaign's simulated fortnight
    loyalty = run_loyalty_demo(factory, console=console, end=analysis.as_of)
    journeys = run_journeys_demo(factory, console=console, workspace=data_dir,
                                 as_of=analysis.as_of)  # fmt: skip
    return DemoResult(
        truth=truth, imports=imports, hub=hub, analysis=analysis, campaign=campaign,
        loyalty=loyalty, journeys=journeys,
    )  # fmt: skip
