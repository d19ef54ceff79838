"""A campaign report on the terminal (Rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from patron.measure.service import CampaignReport, Interval


def _pct(value: float) -> str:
    return f"{value:.2%}"


def _range(interval: Interval, *, percent: bool = False, digits: int = 2) -> str:
    def show(value: float) -> str:
        return f"{value * 100:+.{digits}f} pp" if percent else f"{value:+,.{digits}f}"

    if interval.low is None or interval.high is None:
        return show(interval.estimate)
    return f"{show(interval.estimate)} [{show(interval.low)}, {show(interval.high)}]"


def print_report(console: Console, report: CampaignReport, *, currency: str) -> None:
    """Groups, effects, cost and KPI, as tables."""
    window = (
        f"{report.window_start:%Y-%m-%d %H:%M} to {report.window_end:%Y-%m-%d %H:%M} UTC"
        if report.window_start and report.window_end
        else "not launched"
    )
    state = "closed" if report.window_closed else "still open"
    console.print(f"[bold]Campaign {report.campaign_id}: {report.name}[/bold] ({report.status})")
    console.print(f"attribution window {window} ({state}; {report.window_basis}); {report.method}")
    # one column per group, so the table stays narrow however many groups there are
    groups = Table("", *(g.group for g in report.groups), title="Groups")
    rows: list[tuple[str, list[str]]] = [
        ("customers", [f"{g.customers:,}" for g in report.groups]),
        ("delivered", [f"{g.delivered:,}" for g in report.groups]),
        ("opened", [f"{g.opened:,}" for g in report.groups]),
        ("clicked", [f"{g.clicked:,}" for g in report.groups]),
        ("converted", [f"{g.converted:,}" for g in report.groups]),
        ("conversion rate", [_pct(g.conversion_rate) for g in report.groups]),
        (f"revenue, {currency}", [f"{g.revenue:,.2f}" for g in report.groups]),
        ("revenue per customer", [f"{g.revenue_per_customer:,.2f}" for g in report.groups]),
        ("unsubscribe rate", [_pct(g.unsubscribe_rate) for g in report.groups]),
        ("complaint rate", [_pct(g.complaint_rate) for g in report.groups]),
    ]
    for label, values in rows:
        groups.add_row(label, *values)
    console.print(groups)
    effects = Table("", *(e.group for e in report.effects),
                    title="Against control (95% intervals)")  # fmt: skip
    effects.add_row(
        "conversion", *(_range(e.incremental_conversion, percent=True) for e in report.effects)
    )
    effects.add_row(
        "revenue per customer",
        *(_range(e.incremental_revenue_per_customer) for e in report.effects),
    )
    effects.add_row("conversions", *(f"{e.incremental_conversions:+,.1f}" for e in report.effects))
    effects.add_row(
        f"revenue, {currency}", *(_range(e.incremental_revenue, digits=0) for e in report.effects)
    )
    console.print(effects)
    c = report.cost
    console.print(
        f"cost: {c.messages:,} messages x {c.cost_per_message} = {c.message_cost:,.2f}, "
        f"incentives {c.incentives:,.2f}, total {c.total:,.2f} {currency}"
    )
    profit = "n/a" if report.incremental_profit is None else f"{report.incremental_profit:,.2f}"
    roi = "n/a" if report.roi is None else f"{report.roi:.2f}"
    console.print(f"incremental profit: {profit} {currency}; ROI {roi}")
    k = report.kpi
    verdict = "n/a" if k.met is None else ("met" if k.met else "not met")
    console.print(f"KPI {k.metric}: planned {k.expected}, actual {k.actual}: {verdict}")
