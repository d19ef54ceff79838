"""The synthetic retail data generator: reproducible files that agree with their truth."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from dataclasses import asdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from patron.ingest.synthetic import Truth, generate
from patron.kit.errors import InvalidInput

FILES = ("products.csv", "customers.csv", "orders.csv", "events.jsonl", "truth.json")
END = date(2026, 11, 1)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream))


def contents(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in FILES}


def identities(row: dict[str, str]) -> set[tuple[str, str]]:
    """What an importer matches on: the email stripped and lower-cased, the phone's last
    ten digits."""
    keys = set()
    if row["email"].strip():
        keys.add(("email", row["email"].strip().lower()))
    if row["phone"]:
        keys.add(("phone", re.sub(r"\D", "", row["phone"])[-10:]))
    return keys


def owners_of_duplicates(customers: list[dict[str, str]]) -> dict[str, str]:
    """Map each duplicate row's id to the only other row that shares an identity with it,
    which must be a primary row."""
    rows_by_key: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in customers:
        for key in identities(row):
            rows_by_key[key].add(row["customer_id"])
    owners = {}
    for row in customers:
        if row["customer_id"].startswith("C"):
            continue
        keys = identities(row)
        assert keys, row
        sharing = set().union(*(rows_by_key[k] for k in keys)) - {row["customer_id"]}
        assert len(sharing) == 1, (row, sharing)
        (owner,) = sharing
        assert owner.startswith("C"), (row, owner)
        owners[row["customer_id"]] = owner
    return owners


def count_truth(folder: Path) -> Truth:
    """Every Truth field, recomputed from the files alone."""
    customers = read_csv(folder / "customers.csv")
    orders = read_csv(folder / "orders.csv")
    owners = owners_of_duplicates(customers)
    decisions: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for row in customers:
        if row["consent_email"] in {"yes", "no"}:
            person = owners.get(row["customer_id"], row["customer_id"])
            decisions[person].append(
                (datetime.fromisoformat(row["consent_at"]), row["consent_email"])
            )
    purchases = {r["order_id"] for r in orders if not r["order_id"].startswith("C")}
    amounts = [(r["customer_id"], int(r["quantity"]) * Decimal(r["unit_price"])) for r in orders]
    with (folder / "events.jsonl").open(encoding="utf-8") as stream:
        events = sum(1 for _ in stream)
    return Truth(
        persons=sum(1 for r in customers if r["customer_id"].startswith("C")),
        customer_rows=len(customers),
        duplicate_rows=len(owners),
        email_marketing_granted=sum(1 for made in decisions.values() if max(made)[1] == "yes"),
        products=len(read_csv(folder / "products.csv")),
        orders=len(purchases),
        return_orders=len({r["order_id"] for r in orders} - purchases),
        order_lines=len(orders),
        guest_orders=len(
            {r["order_id"] for r in orders if r["order_id"] in purchases and not r["customer_id"]}
        ),
        revenue=sum((a for _, a in amounts), Decimal("0.00")),
        guest_revenue=sum((a for customer, a in amounts if not customer), Decimal("0.00")),
        events=events,
    )


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Truth]:
    """2,000 persons over the default two years."""
    folder = tmp_path_factory.mktemp("synthetic-small")
    return folder, generate(folder, customers=2_000)


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory) -> tuple[Truth, list[dict[str, str]]]:
    """The default run (20,000 persons over two years): its truth and its order lines."""
    folder = tmp_path_factory.mktemp("synthetic-default")
    truth = generate(folder)
    return truth, read_csv(folder / "orders.csv")


def test_the_same_seed_writes_the_same_bytes(small: tuple[Path, Truth], tmp_path: Path) -> None:
    folder, truth = small

    again = generate(tmp_path / "again", customers=2_000)
    other = generate(tmp_path / "other", customers=2_000, seed=8)

    assert again == truth
    assert contents(tmp_path / "again") == contents(folder)
    assert (tmp_path / "other" / "orders.csv").read_bytes() != (folder / "orders.csv").read_bytes()
    assert other.persons == 2_000


def test_block_size_changes_nothing_in_the_files(tmp_path: Path) -> None:
    small_blocks = generate(tmp_path / "500", customers=2_500, block=500)
    one_block = generate(tmp_path / "50000", customers=2_500, block=50_000)

    assert small_blocks == one_block
    assert contents(tmp_path / "500") == contents(tmp_path / "50000")


def test_truth_agrees_with_the_files(small: tuple[Path, Truth]) -> None:
    folder, truth = small

    counted = count_truth(folder)
    written = json.loads((folder / "truth.json").read_text(encoding="utf-8"))

    assert counted == truth
    assert written == {k: str(v) if isinstance(v, Decimal) else v for k, v in asdict(truth).items()}
    assert truth.persons == 2_000
    assert truth.customer_rows == truth.persons + truth.duplicate_rows
    assert truth.revenue.as_tuple().exponent == -2


def test_each_duplicate_belongs_to_exactly_one_earlier_person(small: tuple[Path, Truth]) -> None:
    folder, truth = small
    customers = read_csv(folder / "customers.csv")
    position = {row["customer_id"]: i for i, row in enumerate(customers)}
    by_id = {row["customer_id"]: row for row in customers}

    owners = owners_of_duplicates(customers)

    assert len(owners) == truth.duplicate_rows > 0
    assert len(set(owners.values())) == len(owners)
    for duplicate, owner in owners.items():
        first, second = by_id[owner], by_id[duplicate]
        assert position[owner] < position[duplicate]
        assert (first["first_name"], first["last_name"]) == (
            second["first_name"],
            second["last_name"],
        )
        if first["consent_at"] and second["consent_at"]:
            assert datetime.fromisoformat(first["consent_at"]) < datetime.fromisoformat(
                second["consent_at"]
            )
    primaries = [row for row in customers if row["customer_id"].startswith("C")]
    emails = [row["email"].strip().lower() for row in primaries if row["email"]]
    phones = [re.sub(r"\D", "", row["phone"])[-10:] for row in primaries if row["phone"]]
    assert len(set(emails)) == len(emails)
    assert len(set(phones)) == len(phones)


def test_files_follow_the_importer_contract(small: tuple[Path, Truth]) -> None:
    folder, _ = small
    customers = read_csv(folder / "customers.csv")
    orders = read_csv(folder / "orders.csv")
    products = {row["sku"]: row for row in read_csv(folder / "products.csv")}
    primary = {row["customer_id"]: row for row in customers if row["customer_id"].startswith("C")}
    card_owner = {row["card"]: row["customer_id"] for row in primary.values() if row["card"]}
    window = (
        datetime.fromisoformat("2024-11-01T00:00:00+03:00"),
        datetime.fromisoformat("2026-11-01T00:00:00+03:00"),
    )

    assert list(customers[0])[:3] == ["customer_id", "first_name", "last_name"]
    assert all(re.fullmatch(r"C\d{7}", c) for c in primary)
    assert all(len(card) == 13 and card.isdigit() for card in card_owner)
    assert {row["consent_email"] for row in customers} == {"yes", "no", ""}
    assert {row["phone"][:2] for row in customers if row["phone"]} == {"+7", "8 ", "89"}
    placed = {row["order_id"]: row for row in orders}
    seen_orders: list[str] = []
    for row in orders:
        if not seen_orders or seen_orders[-1] != row["order_id"]:
            assert row["order_id"] not in seen_orders, "rows of an order must be contiguous"
            seen_orders.append(row["order_id"])
        moment = datetime.fromisoformat(row["placed_at"])
        assert window[0] <= moment < window[1]
        assert row["placed_at"].endswith("+03:00")
        assert row["unit_price"] == products[row["sku"]]["price"]
        assert row["category"] == products[row["sku"]]["category"]
        assert (row["channel"] == "online") == (row["store"] == "online")
        assert row["currency"] == "RUB"
        assert not row["customer_id"] or row["customer_id"] in primary
        assert not row["card"] or row["card"] in card_owner
        if row["order_id"].startswith("C"):
            original = placed[row["order_id"][1:]]
            assert int(row["quantity"]) < 0
            assert datetime.fromisoformat(original["placed_at"]) < moment
            assert row["customer_id"] == original["customer_id"]
        else:
            assert int(row["quantity"]) > 0
    guest_cards = {row["order_id"] for row in orders if not row["customer_id"] and row["card"]}
    assert guest_cards
    with (folder / "events.jsonl").open(encoding="utf-8") as stream:
        events = [json.loads(line) for line in stream]
    assert {e["type"] for e in events} == {"site_visit", "form_submitted", "call", "cart_abandoned"}
    assert all(e["customer_id"] in primary for e in events)
    assert len({e["event_id"] for e in events}) == len(events)


def test_default_run_has_the_articles_spend_mix(
    default: tuple[Truth, list[dict[str, str]]],
) -> None:
    truth, orders = default
    spend: defaultdict[str, Decimal] = defaultdict(Decimal)
    for row in orders:
        if row["customer_id"]:
            spend[row["customer_id"]] += int(row["quantity"]) * Decimal(row["unit_price"])

    ranked = sorted(spend.values(), reverse=True)
    total = sum(ranked)
    top = sum(ranked[: round(0.02 * len(ranked))]) / total
    bottom = sum(ranked[-round(0.38 * len(ranked)) :]) / total
    print(f"top 2% of {len(ranked)} buyers: {top:.1%} of revenue; bottom 38%: {bottom:.1%}")

    assert Decimal("0.07") <= top <= Decimal("0.14")
    assert 4 <= truth.orders / truth.persons <= 6
    assert 200_000 <= truth.order_lines <= 300_000


def test_default_run_is_busier_in_december_and_at_weekends(
    default: tuple[Truth, list[dict[str, str]]],
) -> None:
    _, orders = default
    placed = {r["order_id"]: r["placed_at"] for r in orders if not r["order_id"].startswith("C")}
    per_day = Counter(datetime.fromisoformat(at).date() for at in placed.values())

    def daily(days: list[date]) -> float:
        return sum(per_day[d] for d in days) / len(days)

    november = [date(2025, 11, 1) + timedelta(days=i) for i in range(30)]
    december = [date(2025, 12, 1) + timedelta(days=i) for i in range(31)]
    everyday = [END - timedelta(days=i + 1) for i in range(364)]
    assert daily(december) > 1.2 * daily(november)
    assert daily([d for d in everyday if d.weekday() == 5]) > 1.2 * daily(
        [d for d in everyday if d.weekday() == 1]
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"customers": 0}, "customers and block must be at least 1"),
        ({"block": 0}, "customers and block must be at least 1"),
        ({"years": 0.01}, "years must cover at least a week"),
    ],
)
def test_impossible_arguments_are_refused(
    tmp_path: Path, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        generate(tmp_path, **arguments)


def test_default_run_buys_paired_categories_together(
    default: tuple[Truth, list[dict[str, str]]],
) -> None:
    _, orders = default
    baskets: defaultdict[str, set[str]] = defaultdict(set)
    for row in orders:
        baskets[row["order_id"]].add(row["category"])

    def share_with(category: str, partner: str) -> float:
        having = [b for b in baskets.values() if category in b]
        return sum(partner in b for b in having) / len(having)

    def share_without(category: str, partner: str) -> float:
        lacking = [b for b in baskets.values() if category not in b]
        return sum(partner in b for b in lacking) / len(lacking)

    for category, partner in [
        ("baby", "household"),
        ("pets", "household"),
        ("beverages", "snacks"),
    ]:
        assert share_with(category, partner) > 1.5 * share_without(category, partner), category
