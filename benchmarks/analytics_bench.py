"""The whole of ``patron analyze`` timed against the pandas + ``lifetimes`` route.

Both routes analyse the same synthetic base, in the same run, each in a process of its
own so that its peak memory is its own:

* **Patron**: the Parquet inputs, cast to the Arrow types ``AnalyticsRepository`` reads
  from the store, loaded into in-memory DuckDB tables (as the service hands the store's
  Arrow tables to DuckDB), then ``patron.analytics.pipeline.analyze``: RFM,
  spend groups, lifecycle stages, BG/NBD and Gamma-Gamma CLV with profit CLTV, churn risk,
  next best offers and the assembled scores. The score write-back is timed on its own:
  ``service.score_columns`` and ``AnalyticsRepository.insert_scores``
  (``kit.db.bulk_insert_columns``) with the commit, into a fresh migrated SQLite store
  whose customers were inserted beforehand.
* **Baseline**: the same analysis the popular way, pandas for RFM and spend groups,
  ``lifetimes`` for BG/NBD, Gamma-Gamma and CLV, pandas features and the same
  scikit-learn classifier for churn (see ``_analytics_routes.py`` for what it does).
* **BG/NBD alone**: Patron's ``clv.BetaGeo().fit`` on the distinct ``(x, t_x, T)`` rows
  of ``pipeline.summary_table`` with their customer counts, spans in days / 7 and rounded
  to whole weeks, against ``lifetimes``' ``BetaGeoFitter().fit`` on the same per-customer
  summary in days / 7 (and on its distinct rows with ``weights=``); the day-exact
  parameters must agree with lifetimes' to 1e-3 relative.

The report gives each stage of both routes side by side: RFM, spend groups, the BG/NBD and
Gamma-Gamma fits (``fit`` of Patron's models is timed inside the pipeline's "CLV models"
step), the rest of CLV, churn scoring, then what only Patron does (lifecycle stages, next
best offers) and the assembly of the scores; the total of the first six, the set the issue
times, as a like-for-like ratio beside the whole one; the write-back; and peak memory.

Reading the inputs is reported but left out of both headline times. The data is generated
once per size and seed by ``patron.ingest.synthetic`` (six years of history, about ten
orders per customer), converted to Parquet with DuckDB and kept in ``--data-dir``; none of
that is timed.

Usage: ``python benchmarks/analytics_bench.py [--customers 1000000 | --quick]
[--seed 7] [--data-dir DIR] [--skip-baseline]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import ibis
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from _analytics_routes import Timings, baseline_route, lifetimes_bgnbd, peak_mb
from patron.analytics import clv
from patron.analytics.pipeline import analyze, summary_table
from patron.analytics.repository import LINES, TRANSACTIONS, AnalyticsRepository
from patron.analytics.service import score_columns
from patron.ingest.synthetic import generate
from patron.kit.db import bulk_insert, make_engine, make_sessionmaker, migrate, table_of
from patron.models import AnalysisRun, Customer

YEARS = 6.0  # 1M persons give about 9.9M orders of known customers (returns included)
END = date(2026, 11, 1)  # the generator's history ends at the midnight (Moscow) starting it
AS_OF = datetime(2026, 11, 1, tzinfo=UTC)  # after the last order: every order counts
TABLES = ("transactions", "order_lines", "customers")
# the Arrow types AnalyticsRepository hands the engine (order times naive UTC)
SCHEMAS = {"transactions": TRANSACTIONS, "order_lines": LINES}
_T = TypeVar("_T")


# -- data ------------------------------------------------------------------------------------


def prepare(folder: Path, *, customers: int, seed: int) -> dict[str, Any]:
    """Generate the base and write the Parquet inputs, unless ``folder`` has them already."""
    meta_path = folder / "meta.json"
    if meta_path.exists():
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        if meta.get("customers") == customers and meta.get("seed") == seed:
            return meta
    raw = folder / "raw"
    print(f"generating {customers:,} customers over {YEARS:g} years into {folder} ...")
    started = time.perf_counter()
    truth = generate(raw, customers=customers, years=YEARS, seed=seed, end=END)
    generated = time.perf_counter() - started
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    orders, people = raw / "orders.csv", raw / "customers.csv"
    # one row per order line; ids "C0000042" become 42, guests (no id) become NULL
    con.execute(f"""
        CREATE TEMP TABLE lines AS
        SELECT order_id,
               CAST(substr(nullif(customer_id, ''), 2) AS BIGINT) AS customer_id,
               placed_at AS ts, sku, nullif(category, '') AS category,
               quantity, unit_price
        FROM read_csv('{orders}', header = true, columns = {{
            'order_id': 'VARCHAR', 'customer_id': 'VARCHAR', 'card': 'VARCHAR',
            'placed_at': 'TIMESTAMPTZ', 'store': 'VARCHAR', 'channel': 'VARCHAR',
            'sku': 'VARCHAR', 'name': 'VARCHAR', 'category': 'VARCHAR',
            'quantity': 'DECIMAL(18,3)', 'unit_price': 'DECIMAL(18,4)', 'currency': 'VARCHAR'
        }})
    """)
    # the types of AnalyticsRepository's Arrow schemas, so the engine sees what it sees there
    con.execute(f"""
        COPY (
            SELECT customer_id, ts, CAST(sum(quantity * unit_price) AS DECIMAL(18,2)) AS amount
            FROM lines WHERE customer_id IS NOT NULL
            GROUP BY order_id, customer_id, ts ORDER BY ts, order_id
        ) TO '{folder / "transactions.parquet"}' (FORMAT parquet)
    """)
    con.execute(f"""
        COPY (
            SELECT customer_id, ts, sku, category, quantity, unit_price
            FROM lines WHERE customer_id IS NOT NULL ORDER BY ts, order_id, sku
        ) TO '{folder / "order_lines.parquet"}' (FORMAT parquet)
    """)
    # one profile per person: the web-form and call-centre rows ("W…", "K…") describe
    # persons who have a primary row, and the store merges them into it
    con.execute(f"""
        COPY (
            SELECT CAST(substr(customer_id, 2) AS BIGINT) AS customer_id
            FROM read_csv('{people}', header = true, all_varchar = true)
            WHERE customer_id LIKE 'C%' ORDER BY 1
        ) TO '{folder / "customers.parquet"}' (FORMAT parquet)
    """)
    tx = f"read_parquet('{folder / 'transactions.parquet'}')"
    row = con.execute(f"""
        SELECT count(*), count(*) FILTER (WHERE amount < 0), count(DISTINCT customer_id),
               min(ts)::VARCHAR, max(ts)::VARCHAR FROM {tx}
    """).fetchone()
    lines = con.execute("SELECT count(*) FROM lines WHERE customer_id IS NOT NULL").fetchone()
    assert row is not None and lines is not None
    engine = ibis.duckdb.connect()
    engine.raw_sql("SET enable_progress_bar = false")
    summary = summary_table(engine.read_parquet(folder / "transactions.parquet"), as_of=AS_OF)
    summary.to_parquet(folder / "summary.parquet")
    meta = {
        "customers": customers,
        "seed": seed,
        "years": YEARS,
        "persons": truth.persons,
        "orders": row[0],
        "returns": row[1],
        "buyers": row[2],
        "first_order": row[3],
        "last_order": row[4],
        "order_lines": lines[0],
        "guest_orders_left_out": truth.guest_orders,
        "generate_s": round(generated, 1),
        "convert_s": round(time.perf_counter() - started, 1),
    }
    shutil.rmtree(raw)  # the CSVs (3 GB at 1M customers) are not needed again
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return meta


# -- the routes, each run in a child process -------------------------------------------------


def in_child(function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """``function(*args, **kwargs)`` in a fresh spawned process, so its peak memory is its
    own."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(function, *args, **kwargs).result()


def _quiet() -> None:
    # Ibis 12 reads pandas' deprecated option on every result (see pyproject.toml)
    warnings.filterwarnings("ignore", "The 'future.infer_string' option is deprecated")
    warnings.filterwarnings("ignore", "fetch_arrow_table")


def patron_route(folder: Path) -> tuple[Timings, Timings, dict[str, Any]]:
    """``analyze`` with its steps, then the score write-back; and what the run found."""
    _quiet()
    clock = Timings()
    engine = ibis.duckdb.connect()
    engine.raw_sql("SET enable_progress_bar = false")
    tx, lines, customers = (
        engine.create_table(name, _as_stored(name, pq.read_table(folder / f"{name}.parquet")))
        for name in TABLES
    )
    clock.lap("read Parquet")
    fits = _time_fits()

    def step(name: str) -> None:
        # the pipeline reports its CLV models as one step; the fits inside it are timed
        # apart so that they line up with the baseline's steps
        clock.lap(name)
        if name == "CLV models":
            for fit in ("BG/NBD fit", "Gamma-Gamma fit"):
                clock.steps[fit] = fits.get(fit, 0.0)
                clock.steps[name] -= clock.steps[fit]
        fits.clear()

    result = analyze(tx, lines, customers, as_of=AS_OF, progress=step)
    clock.record_peak()
    found = {
        "scores": len(result.scores),
        "bg_nbd": result.models["bg_nbd"],
        "gamma_gamma": result.models.get("gamma_gamma"),
        "churn_scored": result.models["churn"]["scored"],
    }

    write = Timings()
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        store = make_engine(f"sqlite:///{Path(tmp) / 'patron.db'}")
        migrate(store)
        factory = make_sessionmaker(store)
        with factory() as session:
            ids = result.scores["customer_id"].astype("int64").tolist()
            bulk_insert(session, table_of(Customer), [{"id": i} for i in ids])
            session.add(AnalysisRun(id=1, as_of=AS_OF, model_version=result.model_version))
            session.commit()
        write.restart()
        rows = score_columns(result, run_id=1)
        write.lap("score_columns")
        with factory() as session:
            AnalyticsRepository(session).insert_scores(rows)
            session.commit()
        write.lap("insert + commit")
        write.record_peak()
        with factory() as session:
            found["stored"] = AnalyticsRepository(session).count_scores(1)
        store.dispose()
    return clock, write, found


def _as_stored(name: str, table: pa.Table) -> pa.Table:
    """``table`` with the types the service reads from the store."""
    return table.cast(SCHEMAS[name]) if name in SCHEMAS else table


def _time_fits() -> dict[str, float]:
    """Seconds spent in ``BetaGeo.fit`` and ``GammaGamma.fit`` since the dict was last
    cleared; the classes are wrapped for the rest of this (child) process."""
    spent: dict[str, float] = {}

    def wrap(model: Any, label: str) -> None:
        original = model.fit

        def fit(self: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(self, *args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - started

        model.fit = fit

    wrap(clv.BetaGeo, "BG/NBD fit")
    wrap(clv.GammaGamma, "Gamma-Gamma fit")
    return spent


def patron_bgnbd(
    summary_path: Path, *, weeks: bool
) -> tuple[float, float, float, int, dict[str, float]]:
    """Patron's BG/NBD fit on the distinct triples with their counts, as the pipeline fits
    it, spans in days / 7 or in whole weeks: grouping seconds, fit seconds, peak MB,
    distinct rows and the parameters."""
    summary = pd.read_parquet(summary_path, columns=["x", "t_x_days", "T_days"])
    started = time.perf_counter()
    # k / 7 is never a half, so numpy's rounding agrees with the engine's
    spans = summary[["t_x_days", "T_days"]] / 7.0
    summary[["t_x", "T"]] = spans.round().to_numpy() if weeks else spans.to_numpy()
    triples = summary.groupby(["x", "t_x", "T"]).size().rename("customers").reset_index()
    grouping = time.perf_counter() - started
    with warnings.catch_warnings():  # a warm-up on a sample; lifetimes gets one too
        warnings.simplefilter("ignore")
        clv.BetaGeo().fit(
            triples.sample(min(len(triples), 1000), random_state=0), weights="customers"
        )
    started = time.perf_counter()
    model = clv.BetaGeo().fit(triples, weights="customers")
    fit = time.perf_counter() - started
    return grouping, fit, peak_mb(), len(triples), model.params


# -- report ----------------------------------------------------------------------------------


def machine() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in info.splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or platform.machine(),
    )
    memory = ""
    if Path("/proc/meminfo").exists():
        kib = int(Path("/proc/meminfo").read_text().split()[1])  # MemTotal comes first
        memory = f", {kib / 2**20:.0f} GB RAM"
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}, load average {load}; Python "
        f"{platform.python_version()}, DuckDB {duckdb.__version__}, pandas {pd.__version__}"
    )


def _row(name: str, seconds: float, peak: float, against: float | None) -> None:
    """One table row; the ratio is ``against / seconds``, how many times faster."""
    ratio = "" if against is None else f"{against / seconds:.1f}x"
    print(f"| {name:<48} | {seconds:>9.2f} | {peak:>8,.0f} | {ratio:>8} |")


def _steps(title: str, clock: Timings, *, without: tuple[str, ...] = ()) -> None:
    total = clock.total(without=without)
    print(f"\n{title}")
    for step, seconds in clock.steps.items():
        share = "" if step in without else f"{seconds / total:>6.1%}"
        print(f"  {step:<22} {seconds:>8.2f} s {share}")


# The stages of the report: (label, Patron steps, baseline steps). The first six are the
# set the issue times, "RFM, spend groups, BG/NBD, Gamma-Gamma, CLV, churn scoring".
# Patron's RFM step also builds the customer-day table that its later steps share.
STAGES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("RFM", ("RFM",), ("RFM",)),
    ("spend groups", ("spend groups",), ("spend groups",)),
    ("BG/NBD fit", ("BG/NBD fit",), ("BG/NBD fit",)),
    ("Gamma-Gamma fit", ("Gamma-Gamma fit",), ("Gamma-Gamma fit",)),
    ("CLV (summary, predictions)", ("CLV models",), ("lifetimes summary", "CLV")),
    ("churn scoring", ("churn",), ("churn features", "churn BG/NBD fit", "churn classifier")),
    ("lifecycle stages", ("lifecycle",), ()),
    ("next best offer", ("next best offer",), ()),
    ("assemble scores", ("scores",), ("assemble scores",)),
)
LIKE_FOR_LIKE = 6


def _stage_table(patron: Timings, write: Timings, base: Timings | None) -> None:
    """Seconds per stage for both routes, the like-for-like subset, the whole and the
    write-back, with the baseline / Patron ratio."""

    def seconds(clock: Timings | None, steps: tuple[str, ...]) -> float | None:
        if clock is None or not steps:
            return None
        return sum(clock.steps.get(step, 0.0) for step in steps)

    def row(label: str, ours: float | None, theirs: float | None) -> None:
        mine = "" if ours is None else f"{ours:.2f}"
        other = "" if theirs is None else f"{theirs:.2f}"
        ratio = f"{theirs / ours:.1f}x" if ours and theirs else ""
        print(f"| {label:<44} | {mine:>9} | {other:>9} | {ratio:>7} |")

    print("\nBy stage (s); ratio: baseline / Patron")
    print(f"| {'stage':<44} | {'Patron':>9} | {'baseline':>9} | {'ratio':>7} |")
    print(f"|{'-' * 46}|{'-' * 10}:|{'-' * 10}:|{'-' * 8}:|")
    subset = [0.0, 0.0]
    for index, (label, ours, theirs) in enumerate(STAGES):
        mine, other = seconds(patron, ours), seconds(base, theirs)
        row(label, mine, other)
        if index < LIKE_FOR_LIKE:
            subset[0] += mine or 0.0
            subset[1] += other or 0.0
        if index == LIKE_FOR_LIKE - 1:
            row("like-for-like subset (the six above)", subset[0], subset[1] if base else None)
    read = ("read Parquet",)
    row("whole analyze()", patron.total(without=read), base.total(without=read) if base else None)
    row("score write-back to SQLite", write.total(), None)
    row("analyze() + write-back", patron.total(without=read) + write.total(), None)
    print(
        f"peak memory: Patron analyze() {patron.peak_mb:,.0f} MB, with the write-back "
        f"{write.peak_mb:,.0f} MB" + (f"; baseline {base.peak_mb:,.0f} MB" if base else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000, help="persons")
    parser.add_argument("--quick", action="store_true", help="100,000 customers")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data-dir", type=Path, default=None, help="cache of the inputs")
    parser.add_argument("--skip-baseline", action="store_true", help="no pandas+lifetimes route")
    args = parser.parse_args()
    customers = 100_000 if args.quick else args.customers
    folder = args.data_dir or Path(tempfile.gettempdir()) / (
        f"patron-analytics-bench-{customers}-{args.seed}"
    )
    folder.mkdir(parents=True, exist_ok=True)
    meta = prepare(folder, customers=customers, seed=args.seed)
    print(
        f"input: {meta['persons']:,} customers ({meta['buyers']:,} buyers), "
        f"{meta['orders']:,} orders of known customers ({meta['returns']:,} returns; "
        f"{meta['guest_orders_left_out']:,} guest orders left out), "
        f"{meta['order_lines']:,} order lines, {meta['first_order'][:10]} to "
        f"{meta['last_order'][:10]}; as of {AS_OF:%Y-%m-%d}; data in {folder}"
    )
    print(f"machine: {machine()}")

    patron, write, found = in_child(patron_route, folder)
    base = None if args.skip_baseline else in_child(baseline_route, folder, pd.Timestamp(AS_OF))
    summary = folder / "summary.parquet"
    grouping, ours, ours_peak, distinct, ours_params = in_child(patron_bgnbd, summary, weeks=False)
    _, weekly, weekly_peak, weekly_distinct, weekly_params = in_child(
        patron_bgnbd, summary, weeks=True
    )
    theirs, theirs_peak, theirs_params = in_child(lifetimes_bgnbd, summary, grouped=False)
    weighted, weighted_peak, _ = in_child(lifetimes_bgnbd, summary, grouped=True)

    read = ("read Parquet",)
    analysis = patron.total(without=read)
    baseline = base.total(without=read) if base else None
    print(
        "\nWall time and peak memory of the route's process (the write-back runs in the\n"
        "process of analyze(), so its peak includes the analysis); inputs already read.\n"
        "Ratio: baseline time / this time."
    )
    print(f"| {'route':<48} | {'wall s':>9} | {'peak MB':>8} | {'ratio':>8} |")
    print(f"|{'-' * 50}|{'-' * 10}:|{'-' * 9}:|{'-' * 9}:|")
    _row("Patron analyze()", analysis, patron.peak_mb, baseline)
    _row("Patron score write-back (SQLite)", write.total(), write.peak_mb, None)
    if base and baseline:
        _row("pandas + lifetimes route (baseline)", baseline, base.peak_mb, baseline)
    _row(f"BG/NBD fit, Patron, days ({distinct:,} distinct)", ours, ours_peak, theirs)
    _row(f"BG/NBD fit, Patron, weeks ({weekly_distinct:,} distinct)", weekly, weekly_peak, theirs)
    _row("BG/NBD fit, lifetimes per customer (baseline)", theirs, theirs_peak, theirs)
    _row("BG/NBD fit, lifetimes, days, distinct rows", weighted, weighted_peak, theirs)

    _stage_table(patron, write, base)
    _steps("Patron analyze() by step (s, share of analyze):", patron, without=read)
    print(
        "  (a step is timed when it reports: work it leaves as an Ibis expression not yet\n"
        "  executed, such as the lifecycle stages, is paid for in 'scores', whose joins run it)"
    )
    _steps("Patron score write-back by step:", write)
    if base:
        _steps("pandas + lifetimes route by step:", base, without=read)
        print("  (no lifecycle stages, next best offers or profit CLV: less work than analyze)")
    print(f"\nBG/NBD grouping into distinct rows (pandas) before Patron's fit: {grouping:.2f} s")
    names = ("r", "alpha", "a", "b")

    def worst(ours: dict[str, float], theirs: dict[str, float]) -> float:
        return max(abs(ours[k] - theirs[k]) / abs(theirs[k]) for k in names)

    print("BG/NBD parameters (time unit a week):")
    fits = (
        ("Patron, days", ours_params),
        ("lifetimes, days", theirs_params),
        ("Patron, weeks", weekly_params),
    )
    for label, params in fits:
        print(f"  {label:<16} " + "  ".join(f"{k}={params[k]:.6g}" for k in names))
    gap = worst(ours_params, theirs_params)
    verdict = "agree" if gap <= 1e-3 else "DISAGREE"
    print(f"  Patron and lifetimes on days: largest relative difference {gap:.1e}, {verdict}")
    drift = worst(weekly_params, ours_params)
    print(f"  Patron in whole weeks against days: largest relative difference {drift:.1e}")
    print(
        f"\nPatron: {found['scores']:,} score rows, {found['stored']:,} stored, "
        f"{found['churn_scored']:,} churn scores; pipeline BG/NBD {found['bg_nbd']}"
    )
    if base:
        print(f"baseline: {base.notes['scores']}; BG/NBD in days {base.notes['bg_nbd']}")
    print("\nGoals:")
    print(f"  whole analysis <= 30 s: {analysis:.1f} s")
    if baseline:
        print(f"  >= 20x the pandas + lifetimes route: {baseline / analysis:.1f}x (whole)")
        ours_steps = [step for _, ours, _ in STAGES[:LIKE_FOR_LIKE] for step in ours]
        theirs_steps = [step for _, _, theirs in STAGES[:LIKE_FOR_LIKE] for step in theirs]
        ours_subset = sum(patron.steps.get(step, 0.0) for step in ours_steps)
        theirs_subset = sum(base.steps.get(step, 0.0) for step in theirs_steps) if base else 0.0
        print(f"     like-for-like subset: {theirs_subset / ours_subset:.1f}x")
    print(f"  BG/NBD fit <= 1 s: {ours:.2f} s in days, {weekly:.2f} s in whole weeks")


if __name__ == "__main__":
    main()
