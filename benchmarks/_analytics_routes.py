"""The pandas + ``lifetimes`` route that ``analytics_bench.py`` measures Patron against.

It is the analysis as tutorials and notebooks do it, on the same Parquet inputs:

* RFM with a pandas group-by and ``pd.qcut`` quintiles of the ranks (ranking first keeps
  ``qcut`` from failing on the many equal frequencies), segments from the usual regular
  expressions over the R and F scores;
* spend per week over the last 364 days, eleven ``qcut`` bands, the band table and Gini;
* ``lifetimes.utils.summary_data_from_transaction_data`` with ``freq="D"`` (its default
  and what the lifetimes documentation and most tutorials use), on the purchases only:
  return rows are dropped first, as tutorials drop cancelled invoices, because lifetimes
  would count a return day as a purchase and the Gamma-Gamma fit needs positive spend;
* ``BetaGeoFitter().fit`` and ``GammaGammaFitter().fit`` (repeat buyers with positive
  spend), then ``P(alive)``, expected purchases and ``customer_lifetime_value`` over 12
  months at the monthly rate equivalent to Patron's 10% a year;
* churn: the features of ``patron.analytics.churn`` built with pandas at the cut-off
  ``as_of - 90 days`` and at ``as_of``, ``P(alive)`` from a second ``BetaGeoFitter`` at the
  cut-off (Patron fits BG/NBD there too), labels from the 90 days before ``as_of``, and a
  ``HistGradientBoostingClassifier`` with the defaults of ``ChurnSettings`` trained on a
  sample of 100,000 customers and scoring all of them;
* one score row per customer, prospects included, as a left join.

It does less than ``analyze``: no lifecycle stages, next best offers or profit CLV.
The classifier runs under ``threadpool_limits(1)`` as Patron's does, so that a busy
machine's spin-waiting does not count against the baseline.
"""

from __future__ import annotations

import resource
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes.utils import summary_data_from_transaction_data
from threadpoolctl import threadpool_limits

from patron.analytics.churn import ChurnSettings
from patron.analytics.pipeline import AnalysisSettings

# The segment map of the RFM tutorials: regular expressions over "<R><F>".
SEGMENTS = {
    r"[1-2][1-2]": "hibernating",
    r"[1-2][3-4]": "at risk",
    r"[1-2]5": "can't lose",
    r"3[1-2]": "about to sleep",
    r"33": "need attention",
    r"[3-4][4-5]": "loyal customers",
    r"41": "promising",
    r"51": "new customers",
    r"[4-5][2-3]": "potential loyalists",
    r"5[4-5]": "champions",
}
_DAY = pd.Timedelta(days=1)


@dataclass
class Timings:
    """Wall time per step (in order) and the peak resident memory of the process."""

    steps: dict[str, float] = field(default_factory=dict)
    peak_mb: float = 0.0
    notes: dict[str, str] = field(default_factory=dict)
    _mark: float = field(default_factory=time.perf_counter, repr=False)

    def restart(self) -> None:
        self._mark = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.steps[step] = self.steps.get(step, 0.0) + now - self._mark
        self._mark = now

    def total(self, *, without: tuple[str, ...] = ()) -> float:
        return sum(seconds for step, seconds in self.steps.items() if step not in without)

    def record_peak(self) -> None:
        self.peak_mb = peak_mb()


def peak_mb() -> float:
    """Peak resident memory of this process so far, in MB.

    Linux's ``VmHWM`` first: ``ru_maxrss`` survives ``exec``, so a spawned child would
    report at least the size of its parent at the fork.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def read_frame(path: Path) -> pd.DataFrame:
    """A Parquet file as pandas, decimals as float64 the way a pandas user holds money."""
    table = pq.read_table(path)
    schema = pa.schema(
        [pa.field(f.name, pa.float64()) if pa.types.is_decimal(f.type) else f for f in table.schema]
    )
    return table.cast(schema).to_pandas()


def baseline_route(data_dir: Path, as_of: pd.Timestamp) -> Timings:
    """Run the pandas + lifetimes analysis, timing each step; ``as_of`` is a UTC midnight."""
    warnings.simplefilter("ignore")
    settings = AnalysisSettings()
    clock = Timings()
    tx = read_frame(data_dir / "transactions.parquet")
    customers = read_frame(data_dir / "customers.parquet")
    clock.lap("read Parquet")

    tx = tx[tx["ts"] < as_of]
    tx["day"] = tx["ts"].dt.floor("D")
    rfm = _rfm(tx, as_of)
    clock.lap("RFM")
    bands = _spend_bands(tx, as_of, settings)
    clock.lap("spend groups")

    purchases = tx.loc[tx["amount"] > 0, ["customer_id", "ts", "amount"]]
    purchases["ts"] = purchases["ts"].dt.tz_localize(None)
    summary = summary_data_from_transaction_data(
        purchases,
        "customer_id",
        "ts",
        monetary_value_col="amount",
        observation_period_end=(as_of - _DAY).tz_localize(None),
        freq="D",
    )
    clock.lap("lifetimes summary")
    bgf = BetaGeoFitter(penalizer_coef=0.0).fit(
        summary["frequency"], summary["recency"], summary["T"]
    )
    clock.lap("BG/NBD fit")
    repeat = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
    ggf = GammaGammaFitter(penalizer_coef=0.0).fit(repeat["frequency"], repeat["monetary_value"])
    clock.lap("Gamma-Gamma fit")
    value = _value(summary, bgf, ggf, settings)
    clock.lap("CLV")
    churn = _churn(tx, as_of, settings.churn, clock)
    scores = (
        customers[["customer_id"]]
        .merge(rfm, on="customer_id", how="left")
        .merge(bands, on="customer_id", how="left")
        .merge(value, on="customer_id", how="left")
        .merge(churn, on="customer_id", how="left")
    )
    clock.lap("assemble scores")
    clock.record_peak()
    clock.notes["scores"] = f"{len(scores):,} rows"
    clock.notes["bg_nbd"] = ", ".join(f"{k}={v:.4g}" for k, v in bgf.params_.items())
    return clock


def _rfm(tx: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    daily = tx.groupby(["customer_id", "day"], as_index=False)["amount"].sum()
    bought = daily[daily["amount"] > 0]
    rfm = bought.groupby("customer_id").agg(
        first_purchase=("day", "min"), last_purchase=("day", "max"), frequency=("day", "size")
    )
    rfm["monetary"] = tx.groupby("customer_id")["amount"].sum()
    rfm["recency"] = (as_of - rfm["last_purchase"]).dt.days
    scores = [5, 4, 3, 2, 1]
    rfm["R"] = pd.qcut(rfm["recency"].rank(method="first"), 5, labels=scores).astype(int)
    rfm["F"] = pd.qcut(rfm["frequency"].rank(method="first"), 5, labels=scores[::-1]).astype(int)
    rfm["M"] = pd.qcut(rfm["monetary"].rank(method="first"), 5, labels=scores[::-1]).astype(int)
    cell = rfm["R"].astype(str) + rfm["F"].astype(str)
    rfm["segment"] = cell.replace(SEGMENTS, regex=True)
    # the report tables: segments and the R x F grid
    segments = rfm.groupby("segment").agg(
        customers=("R", "size"),
        recency=("recency", "mean"),
        frequency=("frequency", "mean"),
        monetary=("monetary", "mean"),
    )
    grid = rfm.groupby(["R", "F"]).size()
    assert segments["customers"].sum() == grid.sum() == len(rfm)
    return rfm.reset_index()


def _spend_bands(tx: pd.DataFrame, as_of: pd.Timestamp, settings: AnalysisSettings) -> pd.DataFrame:
    days = settings.spend_window_days
    window = tx[tx["ts"] >= as_of - days * _DAY]
    spend = window.groupby("customer_id")["amount"].sum() / (days / 7)
    count = settings.spend.count
    band = pd.qcut(spend.rank(method="first"), count, labels=range(1, count + 1)).astype(int)
    table = spend.groupby(band).agg(["size", "sum"])
    ordered = np.sort(spend.to_numpy())
    cumulative = np.cumsum(ordered)
    n = len(ordered)
    gini = (n + 1 - 2 * cumulative.sum() / cumulative[-1]) / n
    lorenz = cumulative[np.linspace(0, n - 1, 50).astype(int)] / cumulative[-1]
    assert np.isfinite(gini) and len(lorenz) == 50 and table["size"].sum() == n
    return pd.DataFrame(
        {"customer_id": spend.index.to_numpy(), "spend": spend.to_numpy(), "band": band.to_numpy()}
    )


def _value(
    summary: pd.DataFrame, bgf: BetaGeoFitter, ggf: GammaGammaFitter, settings: AnalysisSettings
) -> pd.DataFrame:
    x, t_x, big_t = summary["frequency"], summary["recency"], summary["T"]
    monthly = (1 + settings.clv.annual_discount_rate) ** (1 / 12) - 1
    months = settings.clv.horizon_months
    out = pd.DataFrame(index=summary.index)
    out["p_alive"] = bgf.conditional_probability_alive(x, t_x, big_t)
    out["expected_purchases"] = bgf.conditional_expected_number_of_purchases_up_to_time(
        months * 365.25 / 12, x, t_x, big_t
    )
    out["expected_spend"] = ggf.conditional_expected_average_profit(x, summary["monetary_value"])
    out["clv"] = ggf.customer_lifetime_value(
        bgf, x, t_x, big_t, summary["monetary_value"], time=months, freq="D",
        discount_rate=monthly,
    )  # fmt: skip
    return out.reset_index()


def _churn(
    tx: pd.DataFrame, as_of: pd.Timestamp, settings: ChurnSettings, clock: Timings
) -> pd.DataFrame:
    """Features at the cut-off and at ``as_of``, P(alive), labels, the classifier."""
    horizon = settings.horizon_days
    days = tx.assign(
        dayno=(tx["day"] - as_of) // _DAY,
        gross=tx["amount"].clip(lower=0),
        returned=(-tx["amount"]).clip(lower=0),
    )
    days = days.groupby(["customer_id", "dayno"], as_index=False)[
        ["amount", "gross", "returned"]
    ].sum()
    train = _features(days, end=-horizon, windows=settings.windows)
    recent = days[(days["dayno"] >= -horizon) & (days["amount"] > 0)]["customer_id"].unique()
    churned = ~train.index.isin(recent)
    current = _features(days, end=0, windows=settings.windows)
    clock.lap("churn features")

    at_cutoff = _summary(train)
    bgf = BetaGeoFitter(penalizer_coef=0.0).fit(
        at_cutoff["frequency"], at_cutoff["recency"], at_cutoff["T"]
    )
    train["p_alive"] = bgf.conditional_probability_alive(
        at_cutoff["frequency"], at_cutoff["recency"], at_cutoff["T"]
    )
    now = _summary(current)
    current["p_alive"] = bgf.conditional_probability_alive(
        now["frequency"], now["recency"], now["T"]
    )
    clock.lap("churn BG/NBD fit")

    rng = np.random.default_rng(settings.random_state)
    rows = np.sort(
        rng.choice(len(train), size=min(len(train), settings.max_train_rows), replace=False)
    )
    classifier = settings.classifier()
    with threadpool_limits(limits=1):
        classifier.fit(train.to_numpy(np.float64)[rows], churned[rows])
        risk = classifier.predict_proba(current.to_numpy(np.float64))[:, 1]
    clock.lap("churn classifier")
    return pd.DataFrame({"customer_id": current.index, "churn_risk": risk})


def _features(days: pd.DataFrame, *, end: int, windows: tuple[int, ...]) -> pd.DataFrame:
    """``patron.analytics.churn.churn_features`` in pandas, at day ``end`` (0 = as_of)."""
    before = days[days["dayno"] < end].assign(rel=lambda d: d["dayno"] - end)
    bought = before[before["amount"] > 0]
    per = bought.groupby("customer_id").agg(
        first=("rel", "min"), last=("rel", "max"), purchase_days=("rel", "size")
    )
    totals = before.groupby("customer_id")[["amount", "gross", "returned"]].sum()
    per = per.join(totals)
    out = pd.DataFrame(index=per.index)
    out["recency_days"] = -per["last"].astype(float)
    out["age_days"] = -per["first"].astype(float)
    out["purchase_days"] = per["purchase_days"].astype(float)
    out["net_spend"] = per["amount"]
    out["mean_spend"] = per["amount"] / out["purchase_days"]
    span = (per["last"] - per["first"]).astype(float)
    out["mean_gap_days"] = (span / (out["purchase_days"] - 1)).where(out["purchase_days"] > 1)
    out["return_share"] = per["returned"] / per["gross"]
    for width in windows:
        inside = before[before["rel"] >= -width]
        out[f"spend_{width}d"] = inside.groupby("customer_id")["amount"].sum()
        out[f"purchase_days_{width}d"] = (
            inside[inside["amount"] > 0].groupby("customer_id").size().astype(float)
        )
        out[[f"spend_{width}d", f"purchase_days_{width}d"]] = out[
            [f"spend_{width}d", f"purchase_days_{width}d"]
        ].fillna(0.0)
    return out


def _summary(features: pd.DataFrame) -> pd.DataFrame:
    """BG/NBD statistics in days from the churn features, as Patron derives them."""
    age = features["age_days"]
    return pd.DataFrame(
        {
            "frequency": features["purchase_days"] - 1,
            "recency": age - features["recency_days"],
            "T": age,
        }
    )


def lifetimes_bgnbd(summary_path: Path, *, grouped: bool) -> tuple[float, float, dict[str, float]]:
    """``BetaGeoFitter().fit`` on Patron's per-customer (x, t_x, T) in weeks, or on its
    distinct rows with ``weights=``: seconds, peak MB and the parameters."""
    warnings.simplefilter("ignore")
    summary = pd.read_parquet(summary_path, columns=["x", "t_x", "T"])
    if grouped:
        summary = summary.groupby(["x", "t_x", "T"]).size().rename("customers").reset_index()
    # a first small fit, so that neither side pays its one-off start-up in the timing
    head = summary.sample(min(len(summary), 1000), random_state=0)
    BetaGeoFitter(penalizer_coef=0.0).fit(
        head["x"], head["t_x"], head["T"], weights=head["customers"] if grouped else None
    )
    started = time.perf_counter()
    bgf = BetaGeoFitter(penalizer_coef=0.0).fit(
        summary["x"],
        summary["t_x"],
        summary["T"],
        weights=summary["customers"] if grouped else None,
    )
    seconds = time.perf_counter() - started
    return seconds, peak_mb(), {str(k): float(v) for k, v in bgf.params_.items()}
