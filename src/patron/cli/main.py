"""The ``patron`` command line (Typer + Rich).

Errors are one clear line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from patron.cli.campaigns import campaign_app
from patron.cli.loyalty import loyalty_app
from patron.cli.segments import segment_app
from patron.kit.clock import utcnow
from patron.kit.db import make_engine, make_sessionmaker, migrate, unit_of_work
from patron.kit.errors import InvalidInput, PatronError
from patron.kit.settings import get_settings

app = typer.Typer(
    name="patron",
    help="Patron: CRM-marketing and loyalty platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
customers_app = typer.Typer(help="Look up, search, merge and unmerge customer profiles.")
apikey_app = typer.Typer(help="API keys for the REST API.")
report_app = typer.Typer(help="Reports on the latest (or a chosen) analysis run.")
app.add_typer(customers_app, name="customers")
app.add_typer(apikey_app, name="apikey")
user_app = typer.Typer(help="Accounts of the web interface.")
app.add_typer(user_app, name="user")
app.add_typer(report_app, name="report")
app.add_typer(segment_app, name="segment")
app.add_typer(campaign_app, name="campaign")
app.add_typer(loyalty_app, name="loyalty")

console = Console()
errors = Console(stderr=True)


def open_store(*, quiet: bool = True) -> sessionmaker[Session]:
    """Sessions on the configured store, migrated to the current schema first."""
    engine = make_engine()
    migrate(engine)
    if not quiet:
        console.print(f"store ready: {engine.url.render_as_string(hide_password=True)}")
    return make_sessionmaker(engine)


@contextmanager
def progress_bar(label: str) -> Iterator[Any]:
    """A Rich progress bar over the bytes of a file; yields the update callback."""
    with Progress(
        TextColumn(label),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@app.command()
def init() -> None:
    """Create or upgrade the operational store (PATRON_DATABASE_URL, default ./patron.db)."""
    open_store(quiet=False)


@app.command("import")
def import_(
    kind: Annotated[str, typer.Argument(help="customers, orders, products or events")],
    file: Annotated[Path, typer.Argument(help="CSV (any delimiter), .xlsx or .jsonl; .gz/.xz ok")],
    preset: Annotated[
        str | None, typer.Option(help="Built-in mapping: cdnow, online-retail")
    ] = None,
    mapping: Annotated[Path | None, typer.Option(help="YAML mapping file")] = None,
    map_: Annotated[
        list[str] | None, typer.Option("--map", help="field=column; repeat as needed")
    ] = None,
    source: Annotated[str | None, typer.Option(help="Source system name (names its ids)")] = None,
    delimiter: Annotated[str | None, typer.Option(help="Override the detected delimiter")] = None,
    encoding: Annotated[str | None, typer.Option(help="Override the detected encoding")] = None,
    rejects: Annotated[Path | None, typer.Option(help="Rejects report path")] = None,
) -> None:
    """Import a file; prints read = imported + merged + rejected."""
    from patron.ingest.mapping import Mapping, load_mapping, parse_map_flags
    from patron.ingest.mapping import preset as load_preset
    from patron.ingest.tasks import import_file

    if kind not in ("customers", "orders", "products", "events"):
        raise InvalidInput(f"unknown kind {kind!r}: use customers, orders, products or events")
    chosen = load_preset(preset, kind) if preset else Mapping()  # type: ignore[arg-type]
    if mapping is not None:
        chosen = chosen.merged(load_mapping(mapping))
    overrides: dict[str, Any] = {"columns": parse_map_flags(map_ or [])}
    if delimiter is not None:
        overrides["delimiter"] = "\t" if delimiter in ("\\t", "tab") else delimiter
    if encoding is not None:
        overrides["encoding"] = encoding
    chosen = chosen.merged(Mapping(**overrides))
    factory = open_store()
    with progress_bar(f"importing {file.name}") as update:
        summary = import_file(
            factory,
            kind,  # type: ignore[arg-type]
            file,
            mapping=chosen,
            source=source,
            rejects=rejects,
            progress=update,
        )
    console.print(summary.line() + f" in {summary.seconds:.1f} s")
    _refresh_segment_replica(factory)


def _refresh_segment_replica(factory: sessionmaker[Session]) -> None:
    """Keep an existing segment replica current after the store changed in bulk."""
    from patron.segments.tasks import refresh_replica

    with console.status("refreshing the segment replica"):
        state = refresh_replica(factory, only_if_present=True)
    if state is not None:
        console.print(f"segment replica refreshed in {state.seconds:.1f} s")


@customers_app.command("show")
def customers_show(customer_id: int) -> None:
    """A profile with its identities, effective consents and merges."""
    from patron.customers.service import CustomerService

    with unit_of_work(open_store()) as session:
        service = CustomerService(session, region=get_settings().default_region)
        customer = service.get(customer_id)
        table = Table(title=f"customer {customer.id}", show_header=False)
        for name in ("full_name", "birth_date", "gender", "city", "region", "country", "company"):
            value = getattr(customer, name)
            if value:
                table.add_row(name, str(value))
        if customer.merged_into_id:
            table.add_row("merged into", str(customer.merged_into_id))
        for identity in service.repo.identities_of(customer.id):
            table.add_row(identity.kind.value, f"{identity.value} (from {identity.source})")
        for consent in service.effective_consents(customer.id):
            table.add_row(
                f"consent {consent.channel.value}/{consent.purpose.value}",
                f"{consent.status.value} at {consent.decided_at:%Y-%m-%d %H:%M} ({consent.source})",
            )
        for log in service.repo.merges_of(customer.id):
            state = "undone" if log.undone_at else "active"
            table.add_row(f"merge {log.id}", f"{log.loser_id} → {log.winner_id} ({state})")
        console.print(table)


@customers_app.command("search")
def customers_search(text: str, limit: Annotated[int, typer.Option(min=1, max=500)] = 20) -> None:
    """Profiles whose name, city or any identity contains TEXT."""
    from patron.customers.repository import CustomerRepository

    with unit_of_work(open_store()) as session:
        found = CustomerRepository(session).search(text, limit=limit, offset=0)
        table = Table("id", "name", "city", "birth date")
        for customer in found:
            table.add_row(
                str(customer.id),
                customer.full_name,
                customer.city or "",
                str(customer.birth_date or ""),
            )
        console.print(table)


@customers_app.command("merge")
def customers_merge(
    winner: int, loser: int, reason: Annotated[str, typer.Option()] = "merged by hand"
) -> None:
    """Merge profile LOSER into WINNER (both histories are kept; undo with unmerge)."""
    from patron.customers.service import CustomerService

    with unit_of_work(open_store()) as session:
        log = CustomerService(session).merge(winner, loser, reason=reason, actor="cli")
        moved = ", ".join(f"{len(ids)} {name}" for name, ids in log.moved.items())
    console.print(f"merge {log.id}: {loser} into {winner}; moved {moved}")


@customers_app.command("unmerge")
def customers_unmerge(merge_id: int) -> None:
    """Undo merge MERGE_ID."""
    from patron.customers.service import CustomerService

    with unit_of_work(open_store()) as session:
        log = CustomerService(session).unmerge(merge_id, actor="cli")
    console.print(f"merge {log.id} undone: customer {log.loser_id} restored")


@customers_app.command("candidates")
def customers_candidates(
    propose: Annotated[bool, typer.Option(help="Look for new candidates first")] = True,
) -> None:
    """Possible duplicates (same birth date and city, similar name) awaiting review."""
    from patron.customers.service import CustomerService
    from patron.models import CandidateStatus

    with unit_of_work(open_store()) as session:
        service = CustomerService(session)
        if propose:
            service.propose_candidates()
        table = Table("id", "customer a", "customer b", "score", "reason")
        for c in service.repo.candidates(CandidateStatus.PENDING.value):
            table.add_row(
                str(c.id), str(c.customer_a_id), str(c.customer_b_id), f"{c.score:.0f}", c.reason
            )
        console.print(table)


@apikey_app.command("create")
def apikey_create(
    name: str,
    role: Annotated[str, typer.Option(help="admin, marketer, analyst or pos")] = "marketer",
) -> None:
    """Create an API key; the secret is printed once and only its hash is stored."""
    from patron.api.keys import create_api_key
    from patron.models import Role

    try:
        chosen = Role(role)
    except ValueError:
        raise InvalidInput(f"unknown role {role!r}: use admin, marketer, analyst or pos") from None
    with unit_of_work(open_store()) as session:
        key, secret = create_api_key(session, name=name, role=chosen)
    console.print(f"API key {key.name} ({key.role.value}): {secret}")


NewPassword = Annotated[
    str,
    typer.Option(
        prompt=True, hide_input=True, confirmation_prompt=True,
        envvar="PATRON_NEW_PASSWORD", help="At least 10 characters; asked for if not given",
    ),
]  # fmt: skip
"""A password for a web account: asked for twice, hidden, unless the variable gives it."""


@user_app.command("add")
def user_add(
    username: str,
    role: Annotated[str, typer.Option(help="admin, marketer or analyst")] = "marketer",
    password: NewPassword = "",
) -> None:  # fmt: skip
    """Create a web interface account; only a scrypt hash of the password is kept."""
    from patron.models import Role
    from patron.web.service import WebService

    try:
        chosen = Role(role)
    except ValueError:
        raise InvalidInput(f"unknown role {role!r}: use admin, marketer or analyst") from None
    with unit_of_work(open_store()) as session:
        WebService(session).create_user(username, password, role=chosen, actor="cli")
    console.print(f"user {username} ({chosen.value}) created: log in at /ui/login")


@user_app.command("password")
def user_password(
    username: str,
    password: NewPassword = "",
) -> None:  # fmt: skip
    """Set a new password for a web interface account; its open sessions end."""
    from patron.web.service import WebService

    with unit_of_work(open_store()) as session:
        WebService(session).set_password(username, password, actor="cli")
    console.print(f"user {username}: password changed, every session ended")


@user_app.command("disable")
def user_disable(username: str) -> None:
    """Stop a web interface account from logging in; its open sessions end."""
    from patron.web.service import WebService

    with unit_of_work(open_store()) as session:
        WebService(session).disable(username, actor="cli")
    console.print(f"user {username}: disabled, every session ended")


@app.command()
def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    background: Annotated[
        bool,
        typer.Option(
            "--worker/--no-worker",
            help="Also send queued messages and launch scheduled campaigns in this process",
        ),
    ] = True,
) -> None:
    """Run the REST API (OpenAPI at /docs), with a sending worker and the campaign
    scheduler in background threads unless --no-worker."""
    import uvicorn

    from patron.api.app import create_app

    factory = open_store()
    stop = threading.Event()
    threads = background_threads(factory, stop=stop, sender=background, scheduler=background)
    try:
        uvicorn.run(create_app(), host=host, port=port)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)


def background_threads(
    factory: Any, *, stop: threading.Event, sender: bool, scheduler: bool, poll: float = 1.0
) -> list[threading.Thread]:
    """Start the sending worker, the campaign scheduler and the trigger runner as daemon
    threads."""
    from patron.campaigns.tasks import run_scheduler
    from patron.dispatch.tasks import run_worker, transports
    from patron.journeys.tasks import run_journeys

    settings = get_settings()
    threads: list[threading.Thread] = []
    if sender:
        work = {"settings": settings, "poll_seconds": poll, "stop": stop}
        transport = transports(settings)
        threads.append(
            threading.Thread(
                target=run_worker, name="patron-worker", args=(factory, transport), kwargs=work
            )
        )
    if scheduler:
        plan = {"stop": stop, "poll_seconds": settings.scheduler_poll_seconds}
        threads.append(
            threading.Thread(
                target=run_scheduler, name="patron-scheduler", args=(factory,), kwargs=plan
            )
        )
        steps = {"stop": stop, "poll_seconds": settings.journey_poll_seconds}
        threads.append(
            threading.Thread(
                target=run_journeys, name="patron-journeys", args=(factory,), kwargs=steps
            )
        )
    for thread in threads:
        # daemons: a server stopped hard must not hang on a send; leases cover the rest
        thread.daemon = True
        thread.start()
    return threads


def parse_moment(text: str, *, option: str) -> datetime:
    """A date (its midnight) or an ISO date-time, as aware UTC; naive means UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"{option}: {text!r} is not a date (YYYY-MM-DD) or ISO date-time"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def load_analysis_settings(path: Path | None) -> Any:
    """Analysis settings from a YAML or JSON file, or the defaults."""
    from pydantic import ValidationError

    from patron.analytics.pipeline import AnalysisSettings

    if path is None:
        return AnalysisSettings()
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return AnalysisSettings.model_validate(data)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise InvalidInput(f"{path}: {where}: {problem['msg']}") from None


@app.command()
def analyze(
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Analyse the base as it was then (default: now)")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML/JSON analysis settings (segments, bands, margins)")
    ] = None,
) -> None:
    """RFM, spend groups, lifecycle, CLV, churn risk and next best offers for every customer;
    the scores are stored with the as-of date and model version, beside earlier runs."""
    from patron.analytics.report import print_report
    from patron.analytics.service import STEPS
    from patron.analytics.tasks import run_analysis

    moment = parse_moment(as_of, option="--as-of") if as_of else utcnow()
    settings = load_analysis_settings(config)
    factory = open_store()
    with Progress(
        TextColumn("analysing"),
        BarColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("reading the base", total=len(STEPS))

        def step(name: str) -> None:
            bar.update(task, advance=1, description=name)

        summary = run_analysis(factory, as_of=moment, settings=settings, progress=step)
    _refresh_segment_replica(factory)
    console.print(
        f"analysis run {summary.id}: {summary.customers:,} customers scored as of "
        f"{summary.as_of:%Y-%m-%d %H:%M} UTC (model {summary.model_version})"
    )
    print_report(console, summary.results, as_of=summary.as_of)


@report_app.command("customers")
def report_customers(
    run: Annotated[int | None, typer.Option(help="Analysis run id (default: the latest)")] = None,
    html: Annotated[Path | None, typer.Option(help="Also write an HTML report with charts")] = None,
) -> None:
    """RFM segments, spend groups, CLV deciles and lifecycle counts of an analysis run."""
    from patron.analytics.report import html_report, print_report
    from patron.analytics.service import AnalyticsService

    with unit_of_work(open_store()) as session:
        service = AnalyticsService(session)
        found = service.get_run(run) if run is not None else service.latest_run()
        results, moment, version = found.results, found.as_of, found.model_version
    print_report(console, results, as_of=moment)
    if html is not None:
        html.write_text(html_report(results, as_of=moment, model_version=version), encoding="utf-8")
        console.print(f"HTML report written to {html}")


@app.command()
def worker(
    until_idle: Annotated[
        bool, typer.Option(help="Stop when nothing is queued or in flight")
    ] = False,
    poll: Annotated[float, typer.Option(help="Seconds between looks at an empty outbox")] = 1.0,
    scheduler: Annotated[
        bool,
        typer.Option(
            "--scheduler/--no-scheduler",
            help="Also launch scheduled campaigns and recurring runs when they are due",
        ),
    ] = True,
) -> None:
    """Send queued messages (email over the PATRON_SMTP_* server), with retries; launch
    scheduled campaigns when their time comes; and run triggered campaigns' journeys."""
    from patron.campaigns.tasks import run_due
    from patron.dispatch.tasks import WorkerStats, run_worker, transports
    from patron.journeys.tasks import run_pass

    settings = get_settings()
    factory = open_store()
    stop = threading.Event()
    if scheduler:
        # one pass first, so that --until-idle sends what was due at the start
        for campaign in run_due(factory):
            console.print(f"campaign {campaign} launched by the scheduler")
        tally = run_pass(factory)
        if tally.entered or tally.messages:
            console.print(f"journeys: {tally.entered:,} entered, {tally.messages:,} messages")
        if not until_idle:
            background_threads(factory, stop=stop, sender=False, scheduler=True)

    def report(stats: WorkerStats) -> None:
        console.print(
            f"sent {stats.sent:,}, retrying {stats.retried:,}, failed {stats.failed:,}, "
            f"skipped {stats.skipped:,}, taken over {stats.withdrawn:,}"
        )

    try:
        done = run_worker(
            factory, transports(settings), settings=settings, until_idle=until_idle,
            poll_seconds=poll, report=report,
        )  # fmt: skip
    finally:
        stop.set()
    for campaign in done.completed:
        console.print(f"campaign {campaign} completed")
    console.print(f"worker stopped: {done.sent:,} sent, {done.failed:,} failed, "
                  f"{done.skipped:,} skipped")  # fmt: skip


@app.command()
def demo(
    customers: Annotated[int, typer.Option(help="Persons to generate")] = 20_000,
    seed: Annotated[int, typer.Option()] = 7,
    data_dir: Annotated[Path, typer.Option(help="Where the generated files go")] = Path(
        "demo-data"
    ),
) -> None:
    """Generate a synthetic retailer, import it through the normal path, and summarise."""
    from patron.cli.demo import run_demo

    run_demo(open_store(), console=console, customers=customers, seed=seed, data_dir=data_dir)


def main() -> None:
    """Entry point: run the app, turning every failure into one line and an exit code."""
    try:
        app(standalone_mode=False)
    except PatronError as exc:
        errors.print(f"error: {exc.message}", highlight=False, markup=False)
        sys.exit(2 if exc.status < 500 else 1)
    except SQLAlchemyError as exc:
        errors.print(
            f"database error: {str(exc.orig if hasattr(exc, 'orig') else exc).splitlines()[0]}",
            highlight=False,
            markup=False,
        )
        sys.exit(1)
    except (click.exceptions.Exit, typer.Exit) as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, typer.Abort, KeyboardInterrupt):
        errors.print("aborted")
        sys.exit(130)
    except OSError as exc:
        errors.print(f"error: {exc}", highlight=False, markup=False)
        sys.exit(1)
    except Exception as exc:
        # Typer carries its own copy of click, whose usage errors are not click's classes
        if callable(getattr(exc, "show", None)) and isinstance(
            getattr(exc, "exit_code", None), int
        ):
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        if os.environ.get("PATRON_DEBUG"):
            raise
        errors.print(
            f"internal error: {type(exc).__name__}: {exc} (set PATRON_DEBUG=1 for the traceback)",
            highlight=False,
            markup=False,
        )
        sys.exit(1)
