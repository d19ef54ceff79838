"""``patron campaign``: plan, schedule, launch, pause, cancel, preview and inspect campaigns."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from patron.campaigns.schemas import CampaignIn
from patron.campaigns.service import CampaignService
from patron.kit.db import unit_of_work
from patron.kit.errors import InvalidInput
from patron.models import Campaign
from patron.segments.schemas import describe

campaign_app = typer.Typer(
    help="Campaigns: plan, schedule, launch, pause, resume, cancel, preview, report."
)


def _console() -> Any:
    from patron.cli.main import console

    return console


def _store() -> Any:
    from patron.cli.main import open_store

    return open_store()


def read_plan(path: Path) -> CampaignIn:
    """A campaign plan from a YAML or JSON file; mistakes name the file and the field."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: not valid YAML or JSON: {exc}") from None
    try:
        return CampaignIn.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(f"invalid campaign plan: {describe(exc, where=str(path))}") from None


@campaign_app.command("create")
def create(plan: Annotated[Path, typer.Argument(help="YAML or JSON plan file")]) -> None:
    """Save a plan as a draft (its segment must exist, its templates must check)."""
    parsed = read_plan(plan)
    with unit_of_work(_store()) as session:
        campaign = CampaignService(session).create(parsed, actor="cli")
        _console().print(f"campaign {campaign.id} {campaign.name!r} saved as a draft")


@campaign_app.command("list")
def listing() -> None:
    """Campaigns, newest first."""
    table = Table("id", "name", "kind", "channel", "status", "treatment", "control")
    with unit_of_work(_store()) as session:
        for c in CampaignService(session).listing(limit=500):
            table.add_row(
                str(c.id), c.name, c.kind.value, c.channel.value, c.status.value,
                f"{c.audience.get('treatment', '')}", f"{c.audience.get('control', '')}",
            )  # fmt: skip
    _console().print(table)


@campaign_app.command("show")
def show(campaign: str) -> None:
    """A campaign's plan, state, audience and audit trail."""
    with unit_of_work(_store()) as session:
        service = CampaignService(session)
        found = service.find(campaign)
        console = _console()
        console.print(f"[bold]{found.name}[/bold] ({found.kind.value}, {found.status.value})")
        console.print(f"goal: {found.goal}")
        console.print(f"segment {found.segment_id}, channel {found.channel.value}, "
                      f"budget {found.budget} {found.currency}, KPI {found.kpi}")  # fmt: skip
        console.print(f"control {found.control_share:.0%}, test wave {found.test_share or 0:.0%}")
        if found.next_run_at:
            console.print(f"next run: {found.next_run_at:%Y-%m-%d %H:%M} UTC")
        if found.parent_id:
            console.print(f"a run of campaign {found.parent_id}")
        if found.audience:
            console.print(f"audience: {found.audience}")
        trail = Table("at", "who", "action", "changes")
        for change in service.trail(found):
            trail.add_row(
                f"{change.at:%Y-%m-%d %H:%M}", change.actor, change.action, str(change.changes)
            )
        console.print(trail)


def _move(campaign: str, act: Callable[[CampaignService, int], Campaign], said: str) -> None:
    """One state change by name or id, and what it did."""
    with unit_of_work(_store()) as session:
        service = CampaignService(session)
        done = act(service, service.find(campaign).id)
        _console().print(f"campaign {done.id} {said}")


@campaign_app.command("schedule")
def schedule(campaign: str) -> None:
    """Approve a draft to run on its schedule."""
    _move(campaign, lambda service, cid: service.schedule(cid, actor="cli"), "scheduled")


@campaign_app.command("pause")
def pause(campaign: str, reason: Annotated[str, typer.Option(help="Why")] = "") -> None:
    """Hold a running campaign's messages not yet sent."""
    _move(campaign, lambda service, cid: service.pause(cid, actor="cli", reason=reason), "paused")


@campaign_app.command("resume")
def resume(campaign: str) -> None:
    """Send a paused campaign's waiting messages."""
    _move(campaign, lambda service, cid: service.resume(cid, actor="cli"), "running again")


@campaign_app.command("cancel")
def cancel(campaign: str, reason: Annotated[str, typer.Option(help="Why")] = "") -> None:
    """Stop a campaign."""
    _move(
        campaign, lambda service, cid: service.cancel(cid, actor="cli", reason=reason), "cancelled"
    )


@campaign_app.command("launch")
def launch(campaign: str) -> None:
    """Freeze the audience (control group, test wave) and start the campaign."""
    with unit_of_work(_store()) as session:
        service = CampaignService(session)
        done = service.launch(service.find(campaign).id, actor="cli")
        audience = done.audience
        left_out = ", ".join(f"{k} {v:,}" for k, v in audience["excluded"].items() if v)
        _console().print(
            f"campaign {done.id} running: {audience['selected']:,} selected, "
            f"{audience['treatment']:,} treatment ({audience['test_wave']:,} in the test wave), "
            f"{audience['control']:,} control; left out: {left_out or 'none'}"
        )


@campaign_app.command("release")
def release(campaign: str) -> None:
    """Send the mass wave after reviewing the test wave."""
    from patron.dispatch.service import DispatchService

    with unit_of_work(_store()) as session:
        found = CampaignService(session).find(campaign)
        count = DispatchService(session).release(found)
        _console().print(f"campaign {found.id}: {count:,} messages of the mass wave queued")


@campaign_app.command("report")
def report(
    campaign: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """What a campaign earned against its control group."""
    from patron.measure.report import print_report
    from patron.measure.service import MeasureService

    with unit_of_work(_store()) as session:
        found = CampaignService(session).find(campaign)
        result = MeasureService(session).report(found)
    if as_json:
        _console().print_json(result.model_dump_json())
        return
    print_report(_console(), result, currency=found.currency)


@campaign_app.command("runs")
def runs(campaign: str) -> None:
    """A recurring campaign's runs, each with its own audience and report."""
    table = Table("id", "name", "status", "launched", "treatment", "control")
    with unit_of_work(_store()) as session:
        service = CampaignService(session)
        found = service.find(campaign)
        for run in service.runs(found):
            launched = f"{run.launched_at:%Y-%m-%d %H:%M}" if run.launched_at else ""
            table.add_row(
                str(run.id), run.name, run.status.value, launched,
                f"{run.audience.get('treatment', '')}", f"{run.audience.get('control', '')}",
            )  # fmt: skip
        next_run = f"{found.next_run_at:%Y-%m-%d %H:%M} UTC" if found.next_run_at else "none"
    console = _console()
    console.print(table)
    console.print(f"next run: {next_run}")


@campaign_app.command("preview")
def preview(
    campaign: str, customer: Annotated[int, typer.Option(help="Customer id to render for")]
) -> None:
    """The message as one customer would get it."""
    with unit_of_work(_store()) as session:
        service = CampaignService(session)
        rendered = service.preview(service.find(campaign), customer)
    console = _console()
    console.print(f"Subject: {rendered.subject}", markup=False, highlight=False)
    console.print(rendered.text, markup=False, highlight=False)
