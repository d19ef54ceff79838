"""The whole analysis on DuckDB: one row per customer, tables that add up, the simulator's
parameters recovered, nothing after the as-of date used."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import ibis
import pandas as pd
import pytest

from patron.analytics import clv
from patron.analytics.lifecycle import STAGES
from patron.analytics.pipeline import (
    SCORE_COLUMNS,
    AnalysisResult,
    AnalysisSettings,
    _best,
    analyze,
    summary_table,
)
from patron.analytics.rfm import customer_days, customer_totals
from tests.fixtures.analytics import RFM_AS_OF, rfm_transactions
from tests.fixtures.data import shared_data
from tests.fixtures.simulated import AS_OF, TRUTH, Base, simulate


def tables(base: Base) -> tuple[Any, Any, Any]:
    con = ibis.duckdb.connect()
    tx = con.create_table("tx", base.orders[["customer_id", "ts", "amount"]])
    lines = con.create_table(
        "lines", base.lines[["customer_id", "ts", "sku", "category", "quantity", "unit_price"]]
    )
    customers = con.create_table("customers", base.customers[["customer_id"]])
    return tx, lines, customers


@pytest.fixture(scope="module")
def small() -> Base:
    return simulate(1500, seed=3, prospects=40)


@pytest.fixture(scope="module")
def result(small: Base) -> AnalysisResult:
    tx, lines, customers = tables(small)
    return analyze(tx, lines, customers, as_of=AS_OF)


def test_every_customer_gets_one_row_prospects_included(
    small: Base, result: AnalysisResult
) -> None:
    scores = result.scores
    assert set(SCORE_COLUMNS) <= set(scores.columns)
    assert len(scores) == 1540
    assert scores["customer_id"].is_unique
    prospects = scores[scores["lifecycle_stage"] == "prospect"]
    assert sorted(prospects["customer_id"]) == list(range(1501, 1541))
    assert prospects["rfm_segment"].isna().all()
    assert prospects["clv"].isna().all()
    assert set(scores["lifecycle_stage"]) <= set(STAGES)


def test_rfm_of_one_customer_matches_its_orders(small: Base, result: AnalysisResult) -> None:
    # given customer 1's orders, when analysed, then recency and net spend are theirs
    own = small.orders[small.orders["customer_id"] == 1]
    row = result.scores.set_index("customer_id").loc[1]
    last = own[own["amount"] > 0]["ts"].max()
    assert row["recency_days"] == (AS_OF.date() - last.date()).days
    assert row["monetary"] == own["amount"].sum()
    assert row["frequency"] == own[own["amount"] > 0]["ts"].dt.date.nunique()


def test_report_tables_add_up(result: AnalysisResult) -> None:
    t = result.tables
    buyers = int(result.scores["rfm_segment"].notna().sum())
    assert sum(r["customers"] for r in t["rfm_segments"]) == buyers
    assert sum(r["customers"] for r in t["rfm_grid"]) == buyers
    assert sum(r["customers"] for r in t["lifecycle"]) == 1540
    assert [r["stage"] for r in t["lifecycle"]] == list(STAGES)
    assert sum(r["share_of_turnover"] for r in t["spend_groups"]) == pytest.approx(1.0, abs=1e-5)
    assert len(t["spend_groups"]) == 11
    assert [r["decile"] for r in t["clv_deciles"]] == list(range(1, 11))
    assert sum(r["share_of_clv"] for r in t["clv_deciles"]) == pytest.approx(1.0, abs=1e-5)
    means = [r["mean_clv"] for r in t["clv_deciles"]]
    assert means == sorted(means, reverse=True)
    # the top 2% of the customers who spent in the trailing year, ties by id
    spenders = int(result.scores["period_spend"].notna().sum())
    best = result.scores["best_customer"].sum()
    assert best == t["best_customers"][0]["customers"] == -(-spenders * 2 // 100)
    top = result.scores.sort_values(["period_spend", "customer_id"], ascending=[False, True])
    assert top["best_customer"].iloc[:best].all() and not top["best_customer"].iloc[best:].any()
    assert 0 < result.models["gini"] < 1


def test_scores_are_consistent_with_the_fitted_models(result: AnalysisResult) -> None:
    s = result.scores.dropna(subset=["p_alive"])
    assert ((s["p_alive"] > 0) & (s["p_alive"] <= 1)).all()
    assert ((s["churn_risk"] >= 0) & (s["churn_risk"] <= 1)).all()
    assert (s["expected_purchases"] >= 0).all()
    # a customer's value is spend per purchase times discounted purchases: never more than
    # the undiscounted expectation
    bound = s["expected_spend"].astype(float) * s["expected_purchases"]
    assert (s["clv"].astype(float) <= bound + 1e-9).all()


def test_the_same_input_gives_the_same_scores(small: Base, result: AnalysisResult) -> None:
    tx, lines, customers = tables(small)
    again = analyze(tx, lines, customers, as_of=AS_OF)
    pd.testing.assert_frame_equal(again.scores, result.scores)
    assert again.models == result.models


def test_rows_after_as_of_change_nothing(small: Base, result: AnalysisResult) -> None:
    later = small.orders.iloc[:50].copy()
    later["ts"] = AS_OF
    later["order_id"] += 10**6
    grown = Base(
        customers=small.customers,
        orders=pd.concat([small.orders, later], ignore_index=True),
        lines=small.lines,
    )
    tx, lines, customers = tables(grown)
    again = analyze(tx, lines, customers, as_of=AS_OF)
    pd.testing.assert_frame_equal(again.scores, result.scores)


def test_bg_nbd_recovers_the_simulators_parameters() -> None:
    # given 30,000 simulated buyers, when the whole analysis runs, then the BG/NBD fit on
    # the distinct (x, t_x, T) triples lands near the simulator's truth
    base = simulate(30_000, seed=11)
    tx, lines, customers = tables(base)
    result = analyze(tx, lines, customers, as_of=AS_OF)
    fitted = result.models["bg_nbd"]
    for name in ("r", "alpha", "a", "b"):
        assert fitted[name] == pytest.approx(TRUTH[name], rel=0.12), name
    assert fitted["distinct_triples"] < 30_000
    spend = result.models["gamma_gamma"]
    # p and q/gamma are only identified together; the mean spend p*gamma/(q-1) is sharp
    assert spend["p"] * spend["gamma"] / (spend["q"] - 1) == pytest.approx(
        TRUTH["p"] * TRUTH["gamma"] / (TRUTH["q"] - 1), rel=0.05
    )


@pytest.mark.shared_data
def test_summary_table_matches_the_standard_cdnow_preparation() -> None:
    # given the CDNOW sample, when summarised in the engine as of 1997-10-01, then it is the
    # literature's calibration summary (x, t_x, T to the day, mean repeat spend)
    raw = pd.read_csv(
        shared_data("cdnow") / "CDNOW_sample.txt",
        sep=r"\s+",
        header=None,
        names=["master", "customer_id", "date", "cds", "amount"],
    )
    raw["ts"] = pd.to_datetime(raw["date"].astype(str), format="%Y%m%d").dt.tz_localize(UTC)
    engine = summary_table(
        ibis.memtable(raw[["customer_id", "ts", "amount"]]),
        as_of=datetime(1997, 10, 1, tzinfo=UTC),
    ).to_pandas()
    reference = clv.summarize(
        raw.drop(columns=["date"]).rename(columns={"ts": "date"}),
        calibration_end="1997-09-30",
        unit="W",
    ).reset_index()
    merged = engine.merge(reference, on="customer_id", suffixes=("", "_ref"))
    # the sample's 8 zero-dollar rows are each a customer's only purchase: a day that nets
    # to no money is no purchase occasion in Patron (it is how a same-day return looks)
    zero_only = set(raw.loc[raw["amount"] == 0, "customer_id"])
    assert len(zero_only) == 8
    assert set(reference["customer_id"]) - set(engine["customer_id"]) == zero_only
    assert len(merged) == len(engine) == 2349
    assert (merged["x"] == merged["x_ref"]).all()
    assert (merged["t_x"] - merged["t_x_ref"]).abs().max() < 1e-9
    assert (merged["T"] - merged["T_ref"]).abs().max() < 1e-9
    assert (merged["monetary"] - merged["monetary_ref"]).abs().max() < 1e-9
    assert int(engine["x"].sum()) == 2457


def test_settings_are_data_with_a_version() -> None:
    default = AnalysisSettings()
    other = AnalysisSettings.model_validate({"rfm_bins": 4, "spend": {"bands": 5}})
    assert default.model_version != other.model_version
    assert default.model_version == AnalysisSettings().model_version
    with pytest.raises(ValueError, match="rfm_bins"):
        AnalysisSettings.model_validate({"rfm_bins": 1})


@pytest.mark.parametrize(("by", "column"), [("spend", "period_spend"), ("clv", "clv")])
def test_best_customers_are_the_top_share_ties_going_to_the_lower_id(by: str, column: str) -> None:
    scores = pd.DataFrame(
        {
            "customer_id": [9, 4, 7, 2, 5, 8, 1],
            column: [50.0, 80.0, 80.0, None, 80.0, 10.0, 30.0],
        }
    )
    settings = AnalysisSettings.model_validate({"best_by": by, "spend": {"top_share": 0.4}})
    flagged = _best(scores, settings)
    # six customers have a value; 40% of six rounds up to three: the three 80s (in the
    # frame's order); a share that cuts through the tie (30%: two) keeps the lower ids
    assert flagged.loc[flagged["best_customer"], "customer_id"].tolist() == [4, 7, 5]
    settings = AnalysisSettings.model_validate({"best_by": by, "spend": {"top_share": 0.3}})
    flagged = _best(scores.drop(columns="best_customer"), settings)
    assert sorted(flagged.loc[flagged["best_customer"], "customer_id"]) == [4, 5]


def test_summary_table_from_customer_totals_is_the_summary_from_the_transactions() -> None:
    # given the RFM example (returns, a same-day return, rows after as_of) and its totals
    tx = rfm_transactions()
    days = customer_days(tx, as_of=RFM_AS_OF)

    # when summarised from the transactions, from the days and from the totals
    def summary(**given: Any) -> pd.DataFrame:
        table = summary_table(tx, as_of=RFM_AS_OF, **given).to_pandas()
        return table.sort_values("customer_id").reset_index(drop=True)

    # then the three agree: c5's two purchase days of 50 and 25 repeat once for 25
    expected = summary()
    pd.testing.assert_frame_equal(summary(days=days), expected)
    pd.testing.assert_frame_equal(summary(totals=customer_totals(days)), expected)
    c5 = expected.set_index("customer_id").loc["c5"]
    assert (c5["x"], c5["t_x_days"], c5["T_days"], c5["monetary"]) == (1, 71, 90, 25.0)
