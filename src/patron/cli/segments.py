"""``patron segment``: save, count, build, list members of, export and compare segments."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from patron.kit.db import unit_of_work
from patron.kit.errors import InvalidInput
from patron.segments.schemas import Condition, SegmentIn, parse_rule
from patron.segments.service import SegmentService

segment_app = typer.Typer(help="Segments: rules over profiles, orders, events and scores.")

RuleFile = Annotated[Path | None, typer.Option("--rule", help="YAML or JSON file holding the rule")]
RuleText = Annotated[str | None, typer.Option("--where", help="The rule as inline JSON or YAML")]


def read_rule(path: Path | None, text: str | None) -> Condition:
    """The rule from a file or from inline text (exactly one of them)."""
    import yaml

    if (path is None) == (text is None):
        raise InvalidInput("give the rule with either --rule FILE or --where TEXT")
    where = str(path) if path is not None else "--where"
    try:
        source = path.read_text(encoding="utf-8") if path is not None else str(text)
        data: Any = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{where}: not valid YAML or JSON: {exc}") from None
    if isinstance(data, dict) and "rule" in data and "kind" not in data:
        data = data["rule"]  # a whole segment file: name, description, rule
    return parse_rule(data, where=where)


def _console() -> Any:
    from patron.cli.main import console

    return console


def _store() -> Any:
    from patron.cli.main import open_store

    return open_store()


def _moment(text: str | None, option: str) -> Any:
    from patron.cli.main import parse_moment

    return None if text is None else parse_moment(text, option=option)


@segment_app.command("create")
def create(
    name: str,
    rule: RuleFile = None,
    where: RuleText = None,
    description: Annotated[str, typer.Option(help="What the segment is for")] = "",
) -> None:
    """Save a segment and print its live count."""
    parsed = read_rule(rule, where)
    with unit_of_work(_store()) as session:
        service = SegmentService(session)
        segment = service.create(
            SegmentIn(name=name, description=description, rule=parsed), actor="cli"
        )
        counted = service.count(parsed)
        _console().print(
            f"segment {segment.id} {segment.name!r} saved: {counted.customers:,} customers now"
        )


@segment_app.command("list")
def listing() -> None:
    """Saved segments with their last build."""
    table = Table("id", "name", "members", "built at", "description")
    with unit_of_work(_store()) as session:
        service = SegmentService(session)
        for segment in service.listing(limit=1000):
            build = service.latest_build(segment)
            table.add_row(
                str(segment.id),
                segment.name,
                f"{build.members:,}" if build else "",
                f"{build.built_at:%Y-%m-%d %H:%M}" if build else "not built",
                segment.description,
            )
    _console().print(table)


@segment_app.command("count")
def count(
    name: Annotated[str | None, typer.Argument(help="A saved segment (or give --rule)")] = None,
    rule: RuleFile = None,
    where: RuleText = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Count as of then")] = None,
) -> None:
    """The live count of a saved segment or of a rule."""
    with unit_of_work(_store()) as session:
        service = SegmentService(session)
        parsed = service.rule_of(service.find(name)) if name else read_rule(rule, where)
        counted = service.count(parsed, as_of=_moment(as_of, "--as-of"))
    source = (
        f"replica as of {counted.data_as_of:%Y-%m-%d %H:%M:%S} UTC"
        if counted.route == "replica"
        else "store"
    )
    _console().print(
        f"{counted.customers:,} customers as of {counted.as_of:%Y-%m-%d %H:%M} UTC "
        f"({counted.seconds:.3f} s, {source})"
    )


@segment_app.command("refresh")
def refresh() -> None:
    """Copy the store into the segment replica (PATRON_SEGMENT_REPLICA), which live counts
    read while it is current; imports and analyses refresh it once it exists."""
    from patron.segments.tasks import refresh_replica

    state = refresh_replica(_store())
    if state is None:
        raise InvalidInput("no segment replica is configured: set PATRON_SEGMENT_REPLICA")
    rows = ", ".join(f"{n:,} {name}" for name, n in state.rows.items())
    _console().print(
        f"segment replica refreshed as of {state.refreshed_at:%Y-%m-%d %H:%M:%S} UTC "
        f"in {state.seconds:.1f} s: {rows}"
    )


@segment_app.command("build")
def build(names: Annotated[list[str], typer.Argument(help="Segments to build")]) -> None:
    """Materialise members now, recording who entered and who left."""
    with unit_of_work(_store()) as session:
        service = SegmentService(session)
        for name in names:
            done = service.build(service.find(name))
            _console().print(
                f"{name}: {done.members:,} members, {done.entered:,} entered, "
                f"{done.left:,} left ({done.seconds:.2f} s)"
            )


@segment_app.command("members")
def members(
    name: str,
    on: Annotated[str | None, typer.Option(help="Members on this date (default: now)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
) -> None:
    """Materialised members (run ``patron segment build`` first), with when each entered."""
    with unit_of_work(_store()) as session:
        service = SegmentService(session)
        segment = service.find(name)
        moment = _moment(on, "--on")
        rows = service.members(segment, on=moment, limit=limit)
        total = service.member_count(segment, on=moment)
    table = Table("customer", "entered at")
    for customer, entered in rows:
        table.add_row(str(customer), f"{entered:%Y-%m-%d %H:%M}")
    _console().print(table)
    _console().print(f"{total:,} members; {len(rows):,} shown")


@segment_app.command("export")
def export(
    name: str,
    out: Annotated[Path | None, typer.Option(help="CSV file (default: print to stdout)")] = None,
) -> None:
    """Export the customers a segment selects now as CSV: id, names, city, email, phone."""
    with unit_of_work(_store()) as session:
        service = SegmentService(session)
        rule = service.rule_of(service.find(name))
        if out is None:
            service.export(rule, sys.stdout)
            return
        with out.open("w", encoding="utf-8", newline="") as handle:
            written = service.export(rule, handle)
    _console().print(f"{written:,} customers written to {out}")


@segment_app.command("changes")
def changes(
    name: str,
    since: Annotated[str, typer.Option(help="From this date or time")],
    until: Annotated[
        str | None, typer.Option(help="Up to this date or time (default: now)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 1000,
) -> None:
    """Who entered and who left a segment between two moments."""
    with unit_of_work(_store()) as session:
        service = SegmentService(session)
        rows = service.changes(
            service.find(name),
            since=_moment(since, "--since"),
            until=_moment(until, "--until"),
            limit=limit,
        )
    table = Table("at", "customer", "change")
    for customer, change, moment in rows:
        table.add_row(f"{moment:%Y-%m-%d %H:%M}", str(customer), change)
    _console().print(table)


@segment_app.command("moves")
def moves(
    before: Annotated[str, typer.Option(help="The earlier date")],
    after: Annotated[str, typer.Option(help="The later date")],
    by: Annotated[
        str | None, typer.Option(help="spend_band, rfm_segment, lifecycle_stage, r/f/m_score")
    ] = None,
    segment: Annotated[
        list[str] | None, typer.Option(help="Segments to compare; repeat, in priority order")
    ] = None,
    within: Annotated[str | None, typer.Option(help="Only members of this segment then")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """How customers moved between spend bands, RFM segments or saved segments."""
    with unit_of_work(_store()) as session:
        rows = SegmentService(session).moves(
            before=_moment(before, "--before"),
            after=_moment(after, "--after"),
            by=by,  # type: ignore[arg-type]  # checked by the service
            segments=segment or (),
            within=within,
        )
    if as_json:
        _console().print_json(json.dumps([r.model_dump() for r in rows]))
        return
    table = Table("before", "after", "customers")
    for row in rows:
        table.add_row(row.before or "—", row.after or "—", f"{row.customers:,}")
    _console().print(table)
