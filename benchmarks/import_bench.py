"""Order lines per second imported by Patron, against pandas ``read_csv`` + ``to_sql``.

Both sides load the same generated ``orders.csv`` into an empty store, in the same run:

* **Patron**: ``patron import orders`` as a user runs it: streaming CSV reading, per-field
  validation (times, money, quantities), identity resolution of every customer reference
  (creating profiles for new ones), grouping lines into orders, returns linked to their
  purchases, the rejects report, one transaction per 50,000-line chunk.
* **Baseline**: ``pandas.read_csv`` of the whole file, then ``DataFrame.to_sql`` into one
  table, with no validation, no identities and no orders, i.e. the raw cost of moving the
  rows into the database.

Usage: ``python benchmarks/import_bench.py [--lines 1000000] [--postgres URL]``.
The PostgreSQL rows are skipped when the server cannot be reached.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd

from patron.ingest.mapping import Mapping
from patron.ingest.synthetic import generate
from patron.ingest.tasks import import_file
from patron.kit.db import make_engine, make_sessionmaker, migrate, recreate_postgres_database

LINES_PER_PERSON = 12.0  # about what the generator gives per person over two years


def _postgres_url(server: str, name: str) -> str | None:
    try:
        return recreate_postgres_database(server, name)
    except Exception as exc:
        print(f"PostgreSQL skipped: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        return None


def patron_import(url: str, orders: Path) -> tuple[float, int]:
    engine = make_engine(url)
    migrate(engine)
    started = time.perf_counter()
    summary = import_file(
        make_sessionmaker(engine),
        "orders",
        orders,
        mapping=Mapping(),
        source="bench",
        rejects=orders.with_suffix(".rejects.csv"),
    )
    seconds = time.perf_counter() - started
    engine.dispose()
    assert summary.read == summary.imported + summary.merged + summary.rejected
    return seconds, summary.imported


def pandas_baseline(url: str, orders: Path) -> float:
    engine = make_engine(url)
    started = time.perf_counter()
    frame = pd.read_csv(orders)
    frame.to_sql("baseline_lines", engine, if_exists="replace", index=False, chunksize=50_000)
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="order lines, about")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "PATRON_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432"
        ),
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        truth = generate(folder / "data", customers=round(args.lines / LINES_PER_PERSON), seed=11)
        orders = folder / "data" / "orders.csv"
        print(
            f"input: {truth.order_lines:,} order lines of {truth.persons:,} persons "
            f"({orders.stat().st_size / 1e6:.0f} MB)"
        )
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}"
        )
        targets = [
            ("SQLite", f"sqlite:///{folder / 'patron.db'}", f"sqlite:///{folder / 'base.db'}")
        ]
        patron_pg = _postgres_url(args.postgres, "patron_bench_import")
        base_pg = _postgres_url(args.postgres, "patron_bench_baseline") if patron_pg else None
        if patron_pg and base_pg:
            targets.append(("PostgreSQL", patron_pg, base_pg))
        print()
        header = ("store", "Patron lines/s", "pandas lines/s", "ratio", "Patron s")
        print(f"{header[0]:<11} {header[1]:>15} {header[2]:>15} {header[3]:>7} {header[4]:>9}")
        for name, patron_url, base_url in targets:
            seconds, imported = patron_import(patron_url, orders)
            base = pandas_baseline(base_url, orders)
            ours, theirs = imported / seconds, truth.order_lines / base
            print(
                f"{name:<11} {ours:>15,.0f} {theirs:>15,.0f} {ours / theirs:>6.2f}x {seconds:>9.1f}"
            )


if __name__ == "__main__":
    main()
