"""Churn features, labels and model: a hand-worked example, leakage, a simulation with known
truth, and the holdout figures on CDNOW and Online Retail (quoted in the module docstring)."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import ibis
import numpy as np
import pandas as pd
import pytest
from numpy.typing import NDArray
from pydantic import ValidationError
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score

from patron.analytics.churn import (
    ChurnMetrics,
    ChurnModel,
    ChurnReport,
    ChurnSettings,
    churn_features,
    churn_labels,
    churn_scores,
    evaluate,
)
from patron.analytics.clv import ModelNotFitted
from patron.analytics.rfm import customer_days, customer_totals, rfm_table
from patron.analytics.schemas import InvalidData
from tests.fixtures.analytics import RFM_AS_OF, Row, rfm_transactions, transactions, utc
from tests.fixtures.data import shared_data

# ---------------------------------------------------------------------------------------
# A hand-worked example, as_of 2024-03-01 00:00 UTC; day numbers count back from it
# ---------------------------------------------------------------------------------------

AS_OF = utc("2024-03-01 00:00")

ROWS: list[Row] = [
    # a: purchase days -411 (100), -72 (60), -20 (40 - 10 returned the same day);
    #    a return of 20 on day -10 lowers spend but is no purchase day
    ("a", "2023-01-15 10:00", "100.00"),
    ("a", "2023-12-20 09:00", "60.00"),
    ("a", "2024-02-10 12:00", "40.00"),
    ("a", "2024-02-10 15:00", "-10.00"),
    ("a", "2024-02-20 11:00", "-20.00"),
    # b: one purchase day, -121; day -1 nets to zero
    ("b", "2023-11-01 08:00", "80.00"),
    ("b", "2024-02-29 23:00", "25.00"),
    ("b", "2024-02-29 23:30", "-25.00"),
    # c: the window edges: day -366 is outside the 365-day window, -365 inside;
    #    day -31 outside the 30-day window, -30 inside
    ("c", "2023-03-01 12:00", "5.00"),
    ("c", "2023-03-02 12:00", "7.00"),
    ("c", "2024-01-30 10:00", "20.00"),
    ("c", "2024-01-31 10:00", "50.00"),
    # d: a purchase day -1
    ("d", "2024-02-29 08:00", "15.00"),
    # e: only a return; f: only after as_of
    ("e", "2024-02-01 10:00", "-30.00"),
    ("f", "2024-03-02 10:00", "60.00"),
    # the label window [Mar 1, Mar 31) for a 30-day horizon:
    ("a", "2024-03-01 00:00", "500.00"),  # at as_of: a bought again
    ("b", "2024-03-10 10:00", "-15.00"),  # a return is no purchase: b churned
    ("c", "2024-03-30 23:59", "10.00"),  # the last minute of the window: c bought again
    ("d", "2024-03-31 00:00", "15.00"),  # the first instant after it: d churned
]

FEATURE_COLUMNS = [
    "recency_days",
    "age_days",
    "purchase_days",
    "net_spend",
    "mean_spend",
    "mean_gap_days",
    "return_share",
    "spend_30d",
    "purchase_days_30d",
    "spend_90d",
    "purchase_days_90d",
    "spend_365d",
    "purchase_days_365d",
]

NAN = float("nan")
EXPECTED_FEATURES: dict[str, list[float]] = {
    #     rec  age  days net  mean     gap    returns 30d     90d     365d
    "a": [20, 411, 3, 170, 170 / 3, 195.5, 30 / 200, 10, 1, 70, 2, 70, 2],
    "b": [121, 121, 1, 80, 80, NAN, 25 / 105, 0, 0, 0, 0, 80, 1],
    "c": [30, 366, 4, 82, 20.5, 112, 0, 50, 1, 70, 2, 77, 3],
    "d": [1, 1, 1, 15, 15, NAN, 0, 15, 1, 15, 1, 15, 1],
}


def hand_made() -> Any:
    return transactions(ROWS)


def by_customer(table: Any) -> pd.DataFrame:
    return table.to_pandas().set_index("customer_id").sort_index()


def test_features_are_the_hand_worked_values() -> None:
    # given the hand-made transactions
    # when
    frame = by_customer(churn_features(hand_made(), as_of=AS_OF))

    # then: e (only a return) and f (only after as_of) are not customers yet
    assert list(frame.columns) == FEATURE_COLUMNS
    assert list(frame.index) == ["a", "b", "c", "d"]
    assert all(dtype == np.float64 for dtype in frame.dtypes)
    expected = pd.DataFrame.from_dict(EXPECTED_FEATURES, orient="index", columns=FEATURE_COLUMNS)
    pd.testing.assert_frame_equal(
        frame, expected.astype(np.float64), check_names=False, rtol=1e-12, atol=0
    )


def test_features_follow_the_windows_asked_for() -> None:
    frame = by_customer(churn_features(hand_made(), as_of=AS_OF, windows=(10,)))

    assert list(frame.columns)[-2:] == ["spend_10d", "purchase_days_10d"]
    # a's day -10 holds only the return; d's day -1 is a purchase
    assert frame["spend_10d"].to_dict() == {"a": -20.0, "b": 0.0, "c": 0.0, "d": 15.0}
    assert frame["purchase_days_10d"].to_dict() == {"a": 0.0, "b": 0.0, "c": 0.0, "d": 1.0}


def test_features_agree_with_rfm_table() -> None:
    # given the RFM example of tests/fixtures/analytics.py
    tx = rfm_transactions()

    # when
    features = by_customer(churn_features(tx, as_of=RFM_AS_OF))
    rfm = by_customer(rfm_table(tx, as_of=RFM_AS_OF, unit="D"))

    # then the shared statistics are the same numbers
    assert list(features.index) == list(rfm.index)
    for ours, theirs in [
        ("recency_days", "recency"),
        ("purchase_days", "frequency"),
        ("age_days", "T"),
        ("net_spend", "monetary_total"),
    ]:
        assert features[ours].tolist() == rfm[theirs].astype(float).tolist()


def test_labels_are_the_hand_worked_values() -> None:
    labels = by_customer(churn_labels(hand_made(), as_of=AS_OF, horizon_days=30))

    # f first buys after as_of, so it is not a customer to label
    assert labels["churned"].to_dict() == {"a": False, "b": True, "c": False, "d": True}


def test_rows_at_or_after_as_of_do_not_change_the_features() -> None:
    # given the example and the same with more rows at and after as_of
    later: list[Row] = [
        ("a", "2024-03-01 00:00", "1000.00"),
        ("b", "2024-03-01 00:00", "-80.00"),
        ("c", "2025-01-01 00:00", "3.00"),
        ("g", "2024-03-01 00:00", "9.00"),
    ]

    # when
    before = by_customer(churn_features(hand_made(), as_of=AS_OF))
    after = by_customer(churn_features(transactions(ROWS + later), as_of=AS_OF))

    # then
    pd.testing.assert_frame_equal(before, after)


def test_churn_features_name_a_missing_column() -> None:
    tx = hand_made().rename(when="ts")
    with pytest.raises(InvalidData, match="lack column 'ts'"):
        churn_features(tx, as_of=AS_OF)
    with pytest.raises(InvalidData, match="windows"):
        churn_features(hand_made(), as_of=AS_OF, windows=(30, 30))


def test_settings_are_validated_frozen_data() -> None:
    settings = ChurnSettings()
    assert (settings.horizon_days, settings.unit, settings.random_state) == (90, "W", 0)
    with pytest.raises(ValidationError):
        ChurnSettings(horizon_day=30)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        ChurnSettings(windows=(0, 30))
    with pytest.raises(ValidationError):
        settings.horizon_days = 30  # type: ignore[misc]


def test_evaluate_refuses_overlapping_windows_naming_the_dates() -> None:
    # given a test cut-off 89 days after the training cut-off, inside its 90-day label window
    with pytest.raises(InvalidData) as caught:
        evaluate(
            hand_made(),
            train_cutoff=utc("2024-01-01 00:00"),
            test_cutoff=utc("2024-03-30 00:00"),
        )

    # then the message names the three dates
    assert str(caught.value) == (
        "test_cutoff 2024-03-30 00:00 falls inside the training label window "
        "[2024-01-01 00:00, 2024-03-31 00:00) UTC: it must be at or after 2024-03-31 00:00"
    )


def test_a_label_window_beyond_the_data_is_refused() -> None:
    # the data ends on 2024-03-31; a 90-day window from Mar 1 would label everyone churned
    with pytest.raises(InvalidData, match="ends 2024-05-30 00:00 UTC but the transactions end"):
        ChurnModel().fit(hand_made(), cutoff=AS_OF)
    with pytest.raises(ModelNotFitted):
        ChurnModel().predict(hand_made(), as_of=AS_OF)


# ---------------------------------------------------------------------------------------
# A simulation with known truth
# ---------------------------------------------------------------------------------------

SIM_START = datetime(2022, 1, 1, tzinfo=UTC)


def simulate(
    rng: np.random.Generator, customers: int, *, days: int = 730
) -> tuple[pd.DataFrame, NDArray[np.float64]]:
    """A simulated base (not data): transactions, and the day each customer stops buying.

    Customers join on a uniform day of the first ``days / 4`` and buy as a Poisson process
    with a Gamma(2, 1/30)-distributed daily rate (a purchase every 15 days on average). Half
    of them stop for good on a uniform day between ``0.4 days`` and ``0.95 days``; the other
    half never stop (their stop day is ``inf``). Amounts are log-normal around 30.
    """
    join = rng.uniform(0, days / 4, customers)
    rate = rng.gamma(2.0, 1 / 30, customers)
    stops = rng.random(customers) < 0.5
    stop = np.where(stops, rng.uniform(0.4 * days, 0.95 * days, customers), np.inf)
    end = np.minimum(stop, days)
    counts = rng.poisson(rate * (end - join))
    owner = np.repeat(np.arange(customers), counts)
    when = join[owner] + rng.random(len(owner)) * (end - join)[owner]
    tx = pd.DataFrame(
        {
            "customer_id": np.char.add("s", owner.astype(str)),
            "ts": pd.Timestamp(SIM_START) + pd.to_timedelta(np.round(when * 86_400), unit="s"),
            "amount": np.round(rng.lognormal(np.log(30), 0.5, len(owner)), 2),
        }
    )
    return tx, stop


@pytest.mark.filterwarnings("ignore:BetaGeo fit stopped")  # BG/NBD is not the simulated story
def test_model_finds_the_customers_who_stopped_in_a_simulation() -> None:
    # given 3,000 simulated customers over two years, half of whom stop at known days
    tx, stop = simulate(np.random.default_rng(7), 3_000)
    table = ibis.memtable(tx)
    train_cutoff, test_cutoff = SIM_START + timedelta(days=400), SIM_START + timedelta(days=600)

    # when the model is trained at day 400 and scores the base at day 600
    model = ChurnModel().fit(table, cutoff=train_cutoff)
    scored = model.predict(table, as_of=test_cutoff)

    # then its churn risk separates the customers who had stopped by day 600 from the rest
    owner = scored["customer_id"].str.removeprefix("s").astype(int).to_numpy()
    stopped = stop[owner] < 600
    assert (len(scored), int(stopped.sum())) == (SIM_AUC["customers"], SIM_AUC["stopped"])
    assert round(roc_auc_score(stopped, scored["churn_risk"]), 3) == SIM_AUC["model"]
    assert round(roc_auc_score(stopped, 1 - scored["p_alive"]), 3) == SIM_AUC["p_alive"]


SIM_AUC: dict[str, float] = {"customers": 2_986, "stopped": 1_127, "model": 0.945, "p_alive": 0.939}


@pytest.mark.filterwarnings("ignore:BetaGeo fit stopped")
@pytest.mark.parametrize("time_of_day", [timedelta(0), timedelta(hours=15, minutes=30)])
def test_churn_scores_train_on_the_window_that_ends_at_as_of_and_see_nothing_later(
    time_of_day: timedelta,
) -> None:
    # given a simulated base over two years, scored at day 700 (at midnight, or at 15:30,
    # when the day of the training cut-off is split in two by it)
    tx, _ = simulate(np.random.default_rng(11), 1_000)
    as_of = SIM_START + timedelta(days=700) + time_of_day
    settings = ChurnSettings(horizon_days=60)

    # when
    scores = churn_scores(ibis.memtable(tx), as_of=as_of, settings=settings)

    # then it is the model trained at as_of - 60 days, scoring every customer at as_of
    table = ibis.memtable(tx)
    model = ChurnModel(settings).fit(table, cutoff=as_of - timedelta(days=60))
    pd.testing.assert_frame_equal(scores, model.predict(table, as_of=as_of))
    # and so it is from the customer days and totals that analyze() hands it
    days = customer_days(table, as_of=as_of)
    totals = customer_totals(days, windows=settings.windows)
    pd.testing.assert_frame_equal(
        churn_scores(table, as_of=as_of, settings=settings, days=days, totals=totals), scores
    )
    # but totals made without the churn windows are refused, naming the first one missing
    with pytest.raises(InvalidData, match=r"customer totals .* lack column 'spend_30d'"):
        churn_scores(table, as_of=as_of, settings=settings, days=days, totals=customer_totals(days))
    assert list(scores.columns) == ["customer_id", "p_alive", "churn_risk"]
    assert scores["customer_id"].is_unique and scores["customer_id"].is_monotonic_increasing
    assert ((scores["churn_risk"] > 0) & (scores["churn_risk"] < 1)).all()
    # and the classifier scores the same on one thread as on every core
    one = ChurnSettings(horizon_days=60, scoring_threads=1)
    pd.testing.assert_frame_equal(
        churn_scores(table, as_of=as_of, settings=one, days=days, totals=totals),
        scores, check_exact=True,
    )  # fmt: skip
    # and the 30 days of rows after as_of play no part in it
    before = tx[tx["ts"] < pd.Timestamp(as_of)]
    assert len(before) < len(tx)
    pd.testing.assert_frame_equal(
        churn_scores(ibis.memtable(before), as_of=as_of, settings=settings), scores
    )


@pytest.mark.filterwarnings("ignore:BetaGeo fit stopped")
def test_churn_scores_split_the_day_of_the_training_cutoff_at_its_time() -> None:
    # given the example and a purchase of b at 13:00 on Mar 1; scored at Mar 31 12:00 with a
    # 30-day horizon, the model trains at Mar 1 12:00: a's purchase at 00:00 that day is
    # history, b's at 13:00 is in the label window, so only a churned (1 of a, b, c, d)
    tx = transactions([*ROWS, ("b", "2024-03-01 13:00", "5.00")])
    as_of = utc("2024-03-31 12:00")
    settings = ChurnSettings(horizon_days=30)

    # when
    scores = churn_scores(tx, as_of=as_of, settings=settings)

    # then four customers are too few to split on, so the model forecasts the training
    # churn rate for everyone (f, whose first purchase was on Mar 2, included)
    assert scores["customer_id"].tolist() == ["a", "b", "c", "d", "f"]
    assert scores["churn_risk"].tolist() == pytest.approx([0.25] * 5, abs=1e-12)
    model = ChurnModel(settings).fit(tx, cutoff=utc("2024-03-01 12:00"))
    assert model.churn_rate_train == 0.25
    pd.testing.assert_frame_equal(scores, model.predict(tx, as_of=as_of))


def test_a_window_where_everyone_churned_has_nothing_to_teach() -> None:
    # nobody buys on 2024-03-15
    with pytest.raises(InvalidData, match="every customer known at 2024-03-15 churned"):
        ChurnModel(ChurnSettings(horizon_days=1)).fit(hand_made(), cutoff=utc("2024-03-15 00:00"))


# ---------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------


def test_metrics_are_worked_by_hand_and_bin_as_sklearn_does() -> None:
    # given three churners and two stayers; risks away from the bin edges
    churned = np.array([True, False, True, True, False])
    risk = np.array([0.95, 0.15, 0.65, 0.35, 0.35])

    # when
    metrics = ChurnMetrics.of(churned, risk)

    # then: of the 6 (churner, stayer) pairs 5 are ranked right and one is tied
    assert metrics.roc_auc == pytest.approx(5.5 / 6, abs=1e-12)
    # precision 1, 1, 3/4 as recall steps by 1/3
    assert metrics.pr_auc == pytest.approx(1 / 3 + 1 / 3 + 1 / 4, abs=1e-12)
    assert metrics.brier == pytest.approx(
        (0.05**2 + 0.15**2 + 0.35**2 + 0.65**2 + 0.35**2) / 5, abs=1e-12
    )
    bins = [
        (b.low, b.high, b.count, round(b.mean_predicted, 12), b.observed_rate)
        for b in metrics.calibration
    ]
    assert bins == [
        (0.1, 0.2, 1, 0.15, 0.0),
        (0.3, 0.4, 2, 0.35, 0.5),
        (0.6, 0.7, 1, 0.65, 1.0),
        (0.9, 1.0, 1, 0.95, 1.0),
    ]
    observed, predicted = calibration_curve(churned, risk, n_bins=10)
    assert [b.observed_rate for b in metrics.calibration] == observed.tolist()
    assert [b.mean_predicted for b in metrics.calibration] == predicted.tolist()
    with pytest.raises(FrozenInstanceError):
        metrics.brier = 0.0  # type: ignore[misc]


# ---------------------------------------------------------------------------------------
# Real data: a later holdout window on CDNOW master and on Online Retail
# ---------------------------------------------------------------------------------------


def read_cdnow_master(path: Path) -> pd.DataFrame:
    """CDNOW master as ``customer_id, ts, amount``, one row per customer and day."""
    names = ["customer_id", "date", "cds", "amount"]
    raw = pd.read_csv(path, sep=r"\s+", header=None, names=names, dtype=str)
    raw = raw[raw["date"].str.fullmatch(r"\d{8}")]  # the file may open with a header line
    assert (len(raw), raw["customer_id"].nunique()) == (69_659, 23_570)
    raw = raw.assign(amount=raw["amount"].astype(float))
    daily = raw.groupby(["customer_id", "date"], as_index=False)["amount"].sum()
    ts = pd.to_datetime(daily["date"], format="%Y%m%d").dt.tz_localize("UTC")
    return pd.DataFrame({"customer_id": daily["customer_id"], "ts": ts, "amount": daily["amount"]})


def read_online_retail(path: Path) -> pd.DataFrame:
    """Online Retail lines with a customer as ``customer_id, ts, amount``; returns negative."""
    columns = ["Quantity", "InvoiceDate", "UnitPrice", "CustomerID"]
    raw = pd.read_csv(path, usecols=columns, dtype={"CustomerID": str})
    raw = raw.dropna(subset=["CustomerID"])
    return pd.DataFrame(
        {
            "customer_id": raw["CustomerID"].str.removesuffix(".0"),
            "ts": pd.to_datetime(raw["InvoiceDate"], format="ISO8601").dt.tz_localize("UTC"),
            # a cancellation has a negative quantity, so its amount is negative
            "amount": raw["Quantity"] * raw["UnitPrice"],
        }
    )


@pytest.fixture(scope="module")
def cdnow() -> Any:
    return ibis.memtable(read_cdnow_master(shared_data("cdnow") / "CDNOW_master.txt"))


@pytest.fixture(scope="module")
def online_retail() -> Any:
    path = shared_data("online_retail") / "online_retail_uci_full.csv.xz"
    return ibis.memtable(read_online_retail(path))


def figures(report: ChurnReport) -> dict[str, float]:
    return {
        "churn_rate": round(report.churn_rate_test, 3),
        "roc_auc": round(report.roc_auc, 3),
        "pr_auc": round(report.pr_auc, 3),
        "brier": round(report.brier, 3),
        "base_roc_auc": round(report.baseline.roc_auc, 3),
        "base_pr_auc": round(report.baseline.pr_auc, 3),
        "base_brier": round(report.baseline.brier, 3),
    }


@pytest.mark.shared_data
def test_cdnow_holdout_window(cdnow: Any) -> None:
    # given CDNOW master (1997-01-01..1998-06-30): train on the window from 1998-01-01,
    # test on the 90 days from 1998-04-02, which end with the data on 1998-06-30
    # when
    report = evaluate(
        cdnow, train_cutoff=utc("1998-01-01 00:00"), test_cutoff=utc("1998-04-02 00:00")
    )

    # then: 68 of the 23,570 customers bought only for $0 and have no purchase day
    assert (report.n_train, report.n_test) == CDNOW_FIGURES["customers"]
    assert figures(report) == CDNOW_FIGURES["metrics"]
    assert sum(b.count for b in report.calibration) == report.n_test
    table = report.table().round(3)
    assert table.to_dict("index") == {
        "model": {"roc_auc": 0.836, "pr_auc": 0.958, "brier": 0.089},
        "1 - P(alive)": {"roc_auc": 0.344, "pr_auc": 0.861, "brier": 0.643},
    }


@pytest.mark.shared_data
def test_online_retail_holdout_window(online_retail: Any) -> None:
    # given Online Retail (2010-12-01..2011-12-09), customers with an id, returns negative:
    # train on the window from 2011-06-01, test on the 90 days from 2011-09-10 (to Dec 9)
    # when
    report = evaluate(
        online_retail, train_cutoff=utc("2011-06-01 00:00"), test_cutoff=utc("2011-09-10 00:00")
    )

    # then
    assert (report.n_train, report.n_test) == RETAIL_FIGURES["customers"]
    assert figures(report) == RETAIL_FIGURES["metrics"]
    assert sum(b.count for b in report.calibration) == report.n_test


CDNOW_FIGURES: dict[str, Any] = {
    "customers": (23_502, 23_502),
    "metrics": {
        "churn_rate": 0.86,
        "roc_auc": 0.836,
        "pr_auc": 0.958,
        "brier": 0.089,
        "base_roc_auc": 0.344,
        "base_pr_auc": 0.861,
        "base_brier": 0.643,
    },
}
RETAIL_FIGURES: dict[str, Any] = {
    "customers": (2_715, 3_367),
    "metrics": {
        "churn_rate": 0.43,
        "roc_auc": 0.736,
        "pr_auc": 0.62,
        "brier": 0.212,
        "base_roc_auc": 0.356,
        "base_pr_auc": 0.409,
        "base_brier": 0.43,
    },
}
