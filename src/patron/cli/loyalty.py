"""``patron loyalty``: the program's rules, accounts, corrections, jobs and reports."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from patron.kit.db import unit_of_work
from patron.kit.errors import InvalidInput
from patron.loyalty.schemas import AdjustIn, EnrolIn, ProgramRules
from patron.loyalty.service import LoyaltyService
from patron.segments.schemas import describe

loyalty_app = typer.Typer(help="Loyalty program: rules, accounts, adjustments, expiry, tiers.")
rules_app = typer.Typer(help="The program's rules, versioned.")
loyalty_app.add_typer(rules_app, name="rules")


def _console() -> Any:
    from patron.cli.main import console

    return console


def _store() -> Any:
    from patron.cli.main import open_store

    return open_store()


@rules_app.command("set")
def set_rules(
    path: Annotated[Path, typer.Argument(help="YAML or JSON rules")],
    note: Annotated[str, typer.Option(help="What changed")] = "",
) -> None:
    """Save the rules in PATH as the next version."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: not valid YAML or JSON: {exc}") from None
    try:
        rules = ProgramRules.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(f"invalid loyalty rules: {describe(exc, where=str(path))}") from None
    with unit_of_work(_store()) as session:
        program = LoyaltyService(session).configure(rules, actor="cli", note=note)
        _console().print(f"loyalty rules version {program.version} in force")


@rules_app.command("show")
def show_rules() -> None:
    """The rules in force, as YAML."""
    import yaml

    with unit_of_work(_store()) as session:
        rules = LoyaltyService(session).rules
    _console().print(yaml.safe_dump(rules.model_dump(mode="json"), sort_keys=False))


@loyalty_app.command("enrol")
def enrol(
    customer: int, card: Annotated[str | None, typer.Option(help="Card number")] = None
) -> None:
    """Enrol a customer (a new card number unless given)."""
    with unit_of_work(_store()) as session:
        account = LoyaltyService(session).enrol(
            EnrolIn(customer_id=customer, card_number=card), actor="cli"
        )
        _console().print(f"customer {customer} enrolled with card {account.card_number}")


@loyalty_app.command("account")
def account(card: str) -> None:
    """An account: points available and pending, tier, and the latest ledger entries."""
    with unit_of_work(_store()) as session:
        service = LoyaltyService(session)
        found = service.account(card)
        out = service.describe(found)
        entries = service.ledger(found, limit=20, offset=0)
    console = _console()
    console.print(
        f"card {out.card_number} (customer {out.customer_id}, {out.status.value}): tier "
        f"{out.tier}, {out.available_points:,} points available, {out.pending_points:,} "
        f"pending, {out.expiring_soon:,} expiring soon; qualifying {out.qualifying}"
    )
    table = Table("at", "kind", "points", "reason", "by")
    for entry in entries:
        table.add_row(
            f"{entry.created_at:%Y-%m-%d %H:%M}", entry.kind.value, f"{entry.points:+,}",
            entry.reason, entry.created_by,
        )  # fmt: skip
    console.print(table)


@loyalty_app.command("adjust")
def adjust(
    card: str,
    points: Annotated[int, typer.Option(help="Points to add (or take, when negative)")],
    reason: Annotated[str, typer.Option(help="Why (mandatory)")],
) -> None:
    """Correct an account by hand; the reason goes on the ledger."""
    try:
        change = AdjustIn(points=points, reason=reason)
    except ValidationError as exc:
        raise InvalidInput(describe(exc, where="adjustment")) from None
    with unit_of_work(_store()) as session:
        out = LoyaltyService(session).adjust(card, change, key=f"cli:{uuid.uuid4()}", actor="cli")
        _console().print(f"card {card}: {out.available_points:,} points available")


@loyalty_app.command("block")
def block(card: str, unblock: Annotated[bool, typer.Option("--unblock")] = False) -> None:
    """Block a card (it can neither earn nor spend), or unblock it."""
    with unit_of_work(_store()) as session:
        found = LoyaltyService(session).block(card, blocked=not unblock)
        _console().print(f"card {card} is {found.status.value}")


@loyalty_app.command("jobs")
def jobs() -> None:
    """The daily jobs: expire what is due, announce what expires soon, birthday bonuses."""
    with unit_of_work(_store()) as session:
        service = LoyaltyService(session)
        expired = service.expire()
        announced = service.announce_expiring()
        birthdays = service.birthday_bonuses()
    _console().print(
        f"{expired:,} points expired; {announced:,} expiring lots announced; "
        f"{birthdays:,} birthday bonuses"
    )


@loyalty_app.command("review-tiers")
def review_tiers() -> None:
    """The periodic tier review: moves down after the grace, up where qualified."""
    with unit_of_work(_store()) as session:
        moves = LoyaltyService(session).review_tiers()
    _console().print(f"{moves['up']:,} moved up, {moves['down']:,} moved down")


@loyalty_app.command("verify")
def verify() -> None:
    """Check every cached balance against the sum of its ledger."""
    with unit_of_work(_store()) as session:
        result = LoyaltyService(session).verify()
    if result.mismatches or result.negative:
        raise InvalidInput(
            f"ledger check failed: {len(result.mismatches)} balances differ from their ledger "
            f"{result.mismatches[:5]}, negative: {result.negative[:5]}"
        )
    _console().print(f"{result.accounts:,} accounts: every balance equals its ledger")


@loyalty_app.command("liability")
def liability() -> None:
    """Points outstanding, expected breakage and the liability in money; tiers."""
    with unit_of_work(_store()) as session:
        service = LoyaltyService(session)
        report = service.liability()
        tiers = service.tier_counts()
    console = _console()
    console.print(
        f"{report.accounts:,} accounts: {report.available_points:,} points available and "
        f"{report.pending_points:,} pending; breakage {report.breakage_rate:.1%} "
        f"({report.breakage_source}); liability {report.liability:,} {report.currency}; "
        f"{report.expiring_next_30_days:,} points expire in the next 30 days"
    )
    table = Table("tier", "members")
    for name, count in tiers.items():
        table.add_row(name, f"{count:,}")
    console.print(table)


coupons_app = typer.Typer(help="Coupon pools and codes.")
loyalty_app.add_typer(coupons_app, name="coupons")


@coupons_app.command("create")
def create_pool(path: Annotated[Path, typer.Argument(help="YAML or JSON pool")]) -> None:
    """A coupon pool from PATH (name, discount_percent or discount_amount, bonus_points,
    min_basket, uses_per_code, uses_per_customer, valid_from, valid_until)."""
    import yaml

    from patron.loyalty.schemas import CouponPoolIn

    try:
        pool_in = CouponPoolIn.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: not valid YAML or JSON: {exc}") from None
    except ValidationError as exc:
        raise InvalidInput(f"invalid coupon pool: {describe(exc, where=str(path))}") from None
    with unit_of_work(_store()) as session:
        pool = LoyaltyService(session).coupons.create_pool(pool_in)
        _console().print(f"coupon pool {pool.id} {pool.name!r} created")


@coupons_app.command("generate")
def generate(
    pool: str,
    count: Annotated[int, typer.Option(min=1, max=1_000_000)],
    prefix: Annotated[str, typer.Option()] = "",
    out: Annotated[Path | None, typer.Option(help="Write the codes here, one a line")] = None,
) -> None:
    """New random codes for a pool."""
    with unit_of_work(_store()) as session:
        coupons = LoyaltyService(session).coupons
        codes = coupons.generate(coupons.pool(pool), count=count, prefix=prefix.upper())
    if out is not None:
        out.write_text("\n".join(codes) + "\n", encoding="utf-8")
        _console().print(f"{len(codes):,} codes written to {out}")
    else:
        for code in codes:
            _console().print(code)


@coupons_app.command("list")
def list_pools() -> None:
    """Pools with their codes, redemptions and the discount given."""
    table = Table("id", "name", "campaign", "codes", "redeemed", "customers", "discount given")
    with unit_of_work(_store()) as session:
        coupons = LoyaltyService(session).coupons
        for pool in coupons.pools():
            stats = coupons.stats(pool)
            table.add_row(
                str(pool.id), pool.name, str(pool.campaign_id or ""), f"{stats.codes:,}",
                f"{stats.redeemed:,}", f"{stats.customers:,}", f"{stats.discount_given:,}",
            )  # fmt: skip
    _console().print(table)


mini_app = typer.Typer(help="Mini-programs: short goals for a segment.")
loyalty_app.add_typer(mini_app, name="mini")


@mini_app.command("create")
def create_mini(path: Annotated[Path, typer.Argument(help="YAML or JSON mini-program")]) -> None:
    """A mini-program from PATH (name, segment, measure, goal, reward_points, starts_at,
    ends_at)."""
    import yaml

    from patron.loyalty.schemas import MiniProgramIn

    try:
        data = MiniProgramIn.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: not valid YAML or JSON: {exc}") from None
    except ValidationError as exc:
        raise InvalidInput(f"invalid mini-program: {describe(exc, where=str(path))}") from None
    with unit_of_work(_store()) as session:
        program = LoyaltyService(session).minis.create(data, actor="cli")
        _console().print(f"mini-program {program.id} {program.name!r} created")


@mini_app.command("start")
def start_mini(program: str) -> None:
    """Take the segment's members as participants."""
    with unit_of_work(_store()) as session:
        minis = LoyaltyService(session).minis
        joined = minis.start(minis.find(program))
    _console().print(f"{joined:,} members joined")


@mini_app.command("list")
def list_minis() -> None:
    """Mini-programs with their members and how many reached the goal."""
    table = Table("id", "name", "goal", "period", "members", "reached", "mean progress")
    with unit_of_work(_store()) as session:
        minis = LoyaltyService(session).minis
        for program in minis.listing():
            out = minis.standing(program)
            table.add_row(
                str(out.id), out.name, f"{out.measure} {out.goal}",
                f"{out.starts_at:%Y-%m-%d} – {out.ends_at:%Y-%m-%d}", f"{out.members:,}",
                f"{out.reached:,}", str(out.mean_progress),
            )  # fmt: skip
    _console().print(table)
