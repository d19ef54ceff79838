"""Live count and materialisation of a five-condition segment over a stored base.

The base is Patron's synthetic retailer (``patron.ingest.synthetic``: 1M persons and
about 10M orders over six years by default), loaded into a fresh migrated store
(SQLite by default, PostgreSQL with ``--postgres URL``) through ``kit.db`` bulk inserts,
then analysed by ``AnalyticsService`` so that scores exist. None of that is timed; it is
kept in ``--data-dir`` and reused.

The segment is "best customers at risk" as a marketer would write it::

    all:
      - profile city in five large cities
      - consent: email granted (the decision in force)
      - orders: net spend over the last 365 days >= 5,000
      - score: churn risk >= 0.3
      - not: bought pets in the last 90 days

Timed, each several times (the best and the median are printed):

* **Patron count, replica**: ``SegmentService.count`` as the segment editor calls it:
  the rule compiled to one SQL statement, run in the segment replica (the columnar
  DuckDB copy, ``patron segment refresh``) after checking the store's fingerprint;
* **Patron count, store**: the same statement run in the operational store
  (``count(store=True)``);
* **Replica refresh**: copying the store into a new replica file (timed once);
* **Patron build**: ``SegmentService.build`` into an empty membership, then a rebuild of
  an unchanged base (every member stays, nothing is written);
* **Baseline**: the same rule the popular Python way: ``pandas.read_sql`` of the tables
  the rule reads (customers, consents, the year's orders, the scores, the quarter's pet
  lines), then pandas filters and group-bys. All three counts must be equal.

The machine's load average is printed before each timed part: on a shared machine it
says how far the figures are to be trusted.

Usage: ``python benchmarks/segment_bench.py [--customers 1000000 | --quick]
[--postgres URL] [--data-dir DIR] [--repeat 5] [--keep-replica]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from patron.analytics.service import AnalyticsService
from patron.ingest.synthetic import generate
from patron.kit.db import (
    bulk_insert_columns,
    make_engine,
    make_sessionmaker,
    migrate,
    recreate_postgres_database,
    refresh_statistics,
    table_of,
)
from patron.models import Consent, Customer, Identity, Order, OrderLine
from patron.segments.replica import SegmentReplica
from patron.segments.schemas import SegmentIn, parse_rule
from patron.segments.service import SegmentService

YEARS = 6.0
END = date(2026, 11, 1)
AS_OF = datetime(2026, 11, 1, tzinfo=UTC)
CITIES = ["Москва", "Санкт-Петербург", "Новосибирск", "Екатеринбург", "Казань"]
SPEND, RISK, SPEND_DAYS, PET_DAYS = 5000, 0.3, 365, 90
RULE: dict[str, Any] = {
    "all": [
        {"kind": "profile", "field": "city", "op": "in", "value": CITIES},
        {"kind": "consent", "channel": "email"},
        {"kind": "orders", "measure": "spend", "days": SPEND_DAYS, "op": "ge", "value": SPEND},
        {"kind": "score", "field": "churn_risk", "op": "ge", "value": RISK},
        {"not": {"kind": "category", "categories": ["pets"], "days": PET_DAYS}},
    ]
}
_BATCH = 500_000


# -- the stored base -----------------------------------------------------------------------


def prepare(folder: Path, *, customers: int, seed: int, url: str) -> dict[str, Any]:
    """Generate the base, load it into the store at ``url`` and analyse it, once."""
    meta_path = folder / "meta.json"
    if meta_path.exists():
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        if (meta["customers"], meta["seed"], meta["url"]) == (customers, seed, url):
            return meta
    raw = folder / "raw"
    print(f"generating {customers:,} customers into {raw} ...", flush=True)
    started = time.perf_counter()
    generate(raw, customers=customers, years=YEARS, seed=seed, end=END)
    print(f"  {time.perf_counter() - started:.0f} s; loading the store ...", flush=True)
    started = time.perf_counter()
    engine = make_engine(url)
    migrate(engine)
    factory = make_sessionmaker(engine)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    _stage(con, raw)
    counts = {}
    with factory() as session:
        for name, model in (
            ("customers", Customer),
            ("identities", Identity),
            ("consents", Consent),
            ("orders", Order),
            ("order_lines", OrderLine),
        ):
            counts[name] = _copy(con, session, name, model)
            print(f"  {name}: {counts[name]:,} rows", flush=True)
        refresh_statistics(session, [table_of(m) for m in (Customer, Consent, Order, OrderLine)])
        session.commit()
    loaded = time.perf_counter() - started
    print(f"  {loaded:.0f} s; analysing ...", flush=True)
    started = time.perf_counter()
    with factory() as session:
        run = AnalyticsService(session).analyze(as_of=AS_OF)
        session.commit()
        scored = run.customers
    engine.dispose()
    shutil.rmtree(raw)
    meta = {
        "customers": customers,
        "seed": seed,
        "url": url,
        **counts,
        "scored": scored,
        "load_s": round(loaded, 1),
        "analyse_s": round(time.perf_counter() - started, 1),
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _stage(con: duckdb.DuckDBPyConnection, raw: Path) -> None:
    """The generator's files as the store's rows, in DuckDB: primary profile rows only (the
    import would merge the web-form and call-centre duplicates into them), one order row
    per order and its lines, returns as negative orders."""
    people = raw / "customers.csv"
    con.execute(f"""
        CREATE TABLE people AS
        SELECT CAST(substr(customer_id, 2) AS BIGINT) AS id, nullif(first_name, '') AS first_name,
               nullif(last_name, '') AS last_name, nullif(city, '') AS city,
               TRY_CAST(nullif(birth_date, '') AS DATE) AS birth_date,
               lower(trim(email)) AS email,
               '+7' || right(regexp_replace(phone, '[^0-9]', '', 'g'), 10) AS phone,
               consent_email, TRY_CAST(nullif(consent_at, '') AS TIMESTAMPTZ) AS consent_at
        FROM read_csv('{people}', header = true, all_varchar = true)
        WHERE customer_id LIKE 'C%'
    """)
    con.execute("""
        CREATE VIEW customers AS
        SELECT id, first_name, last_name, city, birth_date, '{}' AS attributes,
               TIMESTAMPTZ '2026-11-01 00:00:00+00' AS created_at,
               TIMESTAMPTZ '2026-11-01 00:00:00+00' AS updated_at
        FROM people ORDER BY id
    """)
    con.execute("""
        CREATE VIEW identities AS
        SELECT id AS customer_id, kind, value, value AS raw_value, false AS verified,
               'bench' AS source, '' AS namespace,
               TIMESTAMPTZ '2026-11-01 00:00:00+00' AS created_at
        FROM (SELECT id, 'email' AS kind, email AS value FROM people WHERE email <> ''
              UNION ALL SELECT id, 'phone', phone FROM people WHERE length(phone) = 12)
        ORDER BY customer_id, kind
    """)
    con.execute("""
        CREATE VIEW consents AS
        SELECT id AS customer_id, id AS origin_customer_id, 'email' AS channel,
               'marketing' AS purpose,
               CASE consent_email WHEN 'yes' THEN 'granted' ELSE 'withdrawn' END AS status,
               'bench' AS source, NULL AS text_version, consent_at AS decided_at,
               consent_at AS recorded_at
        FROM people WHERE consent_email IN ('yes', 'no') AND consent_at IS NOT NULL
        ORDER BY id
    """)
    orders = raw / "orders.csv"
    con.execute(f"""
        CREATE TABLE lines AS
        SELECT order_id AS external_id,
               CAST(substr(nullif(customer_id, ''), 2) AS BIGINT) AS customer_id,
               placed_at, sku, nullif(category, '') AS category,
               quantity, unit_price, CAST(quantity * unit_price AS DECIMAL(18, 2)) AS amount
        FROM read_csv('{orders}', header = true, columns = {{
            'order_id': 'VARCHAR', 'customer_id': 'VARCHAR', 'card': 'VARCHAR',
            'placed_at': 'TIMESTAMPTZ', 'store': 'VARCHAR', 'channel': 'VARCHAR',
            'sku': 'VARCHAR', 'name': 'VARCHAR', 'category': 'VARCHAR',
            'quantity': 'DECIMAL(18,3)', 'unit_price': 'DECIMAL(18,4)', 'currency': 'VARCHAR'
        }})
    """)
    con.execute("""
        CREATE TABLE order_rows AS
        SELECT row_number() OVER (ORDER BY min(placed_at), external_id) AS id, external_id,
               any_value(customer_id) AS customer_id, min(placed_at) AS placed_at,
               sum(amount) AS total
        FROM lines GROUP BY external_id
    """)
    con.execute("""
        CREATE VIEW orders AS
        SELECT id, customer_id, 'bench' AS source, external_id,
               CASE WHEN total < 0 THEN 'return' ELSE 'purchase' END AS kind,
               placed_at, total, 0 AS discount, 'RUB' AS currency,
               TIMESTAMPTZ '2026-11-01 00:00:00+00' AS created_at
        FROM order_rows ORDER BY id
    """)
    con.execute("""
        CREATE VIEW order_lines AS
        SELECT o.id AS order_id,
               row_number() OVER (PARTITION BY o.id ORDER BY l.sku) AS line_no,
               l.sku, NULL AS name, l.category, l.quantity, l.unit_price, l.amount
        FROM lines l JOIN order_rows o USING (external_id) ORDER BY o.id, line_no
    """)


def _copy(con: duckdb.DuckDBPyConnection, session: Session, name: str, model: type) -> int:
    """Stream one staged table into the store's table of ``model`` in batches."""
    reader = con.sql(f"SELECT * FROM {name}").to_arrow_reader(_BATCH)
    table = table_of(model)
    rows = 0
    for batch in reader:
        columns: dict[str, list[Any]] = {}
        for field, column in zip(batch.schema.names, batch.columns, strict=True):
            values = column.to_pylist()
            if field == "attributes":
                values = [{} for _ in values]
            columns[field] = values
        bulk_insert_columns(session, table, columns)
        rows += batch.num_rows
    return rows


# -- the timed routes ------------------------------------------------------------------------


def timed(function: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    """Wall times of ``repeat`` calls and the last result."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return times, result


def pandas_count(engine: sa.Engine) -> int:
    """The rule the popular way: read what it needs with pandas, then filter in pandas."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        year = (AS_OF - timedelta(days=SPEND_DAYS)).replace(tzinfo=None)
        quarter = (AS_OF - timedelta(days=PET_DAYS)).replace(tzinfo=None)
        bound = AS_OF.replace(tzinfo=None)
        customers = pd.read_sql(
            "SELECT id, city FROM customers WHERE merged_into_id IS NULL", engine
        )
        consents = pd.read_sql(
            "SELECT id, customer_id, status, decided_at FROM consents "
            "WHERE channel = 'email' AND purpose = 'marketing' AND status <> 'pending'",
            engine,
        )
        orders = pd.read_sql(
            sa.text(
                "SELECT customer_id, total FROM orders WHERE customer_id IS NOT NULL "
                "AND placed_at >= :start AND placed_at < :end"
            ),
            engine,
            params={"start": year, "end": bound},
        )
        run = pd.read_sql(
            "SELECT id FROM analysis_runs WHERE status = 'completed' ORDER BY as_of DESC, id DESC "
            "LIMIT 1",
            engine,
        )["id"].iloc[0]
        scores = pd.read_sql(
            sa.text("SELECT customer_id, churn_risk FROM customer_scores WHERE run_id = :run"),
            engine,
            params={"run": int(run)},
        )
        pets = pd.read_sql(
            sa.text(
                "SELECT DISTINCT o.customer_id FROM order_lines l JOIN orders o "
                "ON o.id = l.order_id WHERE o.customer_id IS NOT NULL AND o.kind = 'purchase' "
                "AND l.category = 'pets' AND o.placed_at >= :start AND o.placed_at < :end"
            ),
            engine,
            params={"start": quarter, "end": bound},
        )
    consents["decided_at"] = pd.to_datetime(consents["decided_at"], utc=True, format="mixed")
    latest = consents.sort_values(["decided_at", "id"]).groupby("customer_id").tail(1)
    granted = set(latest.loc[latest["status"] == "granted", "customer_id"])
    spend = orders.groupby("customer_id")["total"].sum()
    spenders = set(spend[spend.astype(float) >= SPEND].index)
    risky = set(scores.loc[scores["churn_risk"] >= RISK, "customer_id"])
    chosen = customers[customers["city"].isin(CITIES)]
    chosen = chosen[chosen["id"].isin(granted & spenders & risky)]
    chosen = chosen[~chosen["id"].isin(set(pets["customer_id"]))]
    return len(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 customers")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--postgres", help="PostgreSQL server URL (default: a SQLite file)")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--keep-replica", action="store_true", help="reuse a fresh replica (refresh untimed)"
    )
    args = parser.parse_args()
    customers = 100_000 if args.quick else args.customers
    backend = "postgres" if args.postgres else "sqlite"
    folder = args.data_dir or Path(tempfile.gettempdir()) / (
        f"patron-segment-bench-{backend}-{customers}-{args.seed}"
    )
    folder.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{folder / 'patron.db'}"
    if args.postgres:
        saved = folder / "meta.json"
        url = (
            json.loads(saved.read_text())["url"]
            if saved.exists()
            else recreate_postgres_database(args.postgres, f"patron_segment_bench_{customers}")
        )
    meta = prepare(folder, customers=customers, seed=args.seed, url=url)

    engine = make_engine(url)
    migrate(engine)  # a base kept from an older Patron gets the newer indexes
    factory: sessionmaker[Session] = make_sessionmaker(engine)
    rule = parse_rule(RULE)
    replica = SegmentReplica(folder / "replica.duckdb")
    loads: dict[str, str] = {}
    with factory() as session:
        service = SegmentService(session, replica=replica)
        refresh_s: float | None = None
        if not (args.keep_replica and replica.fresh(session, score_run=None)):
            loads["refresh"] = load()
            print(f"refreshing the replica (load {loads['refresh']}) ...", flush=True)
            refresh_s = replica.refresh(session).seconds
        # warm each route once, as a live editor would have
        if service.count(rule, as_of=AS_OF).route != "replica":
            raise SystemExit("the replica is not fresh: is another process writing the store?")
        service.count(rule, as_of=AS_OF, store=True)
        loads["counts"] = load()
        fast_times, fast = timed(lambda: service.count(rule, as_of=AS_OF).customers, args.repeat)
        slow_times, slow = timed(
            lambda: service.count(rule, as_of=AS_OF, store=True).customers, args.repeat
        )
        loads["pandas"] = load()
        pandas_times, pandas_found = timed(lambda: pandas_count(engine), max(1, args.repeat // 2))
        if not fast == slow == pandas_found:
            raise SystemExit(
                f"counts differ: replica {fast:,}, store {slow:,}, pandas {pandas_found:,}"
            )
        segment = service.create(SegmentIn(name="bench", rule=rule), actor="bench")
        session.execute(sa.text("DELETE FROM segment_memberships"))
        session.execute(sa.text("DELETE FROM segment_builds"))
        loads["builds"] = load()
        started = time.perf_counter()
        first = service.build(segment, at=AS_OF)
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        again = service.build(segment, at=AS_OF + timedelta(hours=1))
        rebuild_s = time.perf_counter() - started
        session.rollback()  # the bench leaves the store as it found it
    engine.dispose()

    print(
        f"\nSegment benchmark: {meta['customers']:,} persons, {meta['orders']:,} orders, "
        f"{meta['order_lines']:,} order lines, {meta['scored']:,} scored; store {backend}"
    )
    print(f"machine: {machine()}")
    print("load average (1, 5, 15 min) before: " + "; ".join(f"{k} {v}" for k, v in loads.items()))
    print(f"rule: {json.dumps(RULE, ensure_ascii=False)}")
    print(f"members: {fast:,}\n")
    best = min(fast_times)

    def row(name: str, times: list[float]) -> str:
        mine = min(times)
        ratio = "1.0x" if times is fast_times else f"{mine / best:.1f}x slower"
        return f"| {name} | {mine:.3f} | {statistics.median(times):.3f} | {ratio} |"

    print("| route | best s | median s | vs replica count |")
    print("|---|---:|---:|---:|")
    print(row("Patron live count, replica (DuckDB)", fast_times))
    print(row(f"Patron live count, store ({backend})", slow_times))
    print(row("pandas read_sql + filters", pandas_times))
    if refresh_s is not None:
        print(f"| replica refresh (full copy) | {refresh_s:.3f} | | |")
    print(f"| Patron build, {first.entered:,} entered | {build_s:.3f} | | |")
    print(f"| Patron rebuild, {again.entered} entered, {again.left} left | {rebuild_s:.3f} | | |")
    print(f"\ncount goal <= 1 s: {'met' if best <= 1 else 'NOT met'} ({best:.3f} s)")


def load() -> str:
    return ", ".join(f"{v:.1f}" for v in os.getloadavg())


def machine() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines()
         if line.startswith("model name")),
        platform.processor() or platform.machine(),
    )  # fmt: skip
    return (
        f"{cpu}, {os.cpu_count()} cores, load average {load()} after; "
        f"Python {platform.python_version()}"
    )


if __name__ == "__main__":
    main()
