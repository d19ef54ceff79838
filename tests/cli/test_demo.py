"""The demo on a small synthetic retailer: the hub recovers the simulator's known truth."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from rich.console import Console
from sqlalchemy import Engine

from patron.cli.demo import run_demo
from patron.kit.db import make_sessionmaker


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
