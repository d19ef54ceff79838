"""Configuration of the behavioural analytics, as validated data, and the input contract.

Rules are data (DESIGN §6.3): the RFM segment map is a list of rectangles on the score grid,
checked once when it is built, not an if-chain inside a function. Spend-group settings hold
the band edges the marketer chose (like the eleven weekly-spend bands of the source
articles) or the number of quantile bands.

``require_columns`` states the input contract shared by ``rfm`` and ``spend_groups``: a
table of transactions with a customer column, a timestamp column and a numeric amount.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from itertools import product
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from patron.kit.errors import InvalidInput

__all__ = [
    "DEFAULT_SEGMENTS",
    "ColumnKind",
    "InvalidData",
    "ModelNotFitted",
    "RFMSegmentMap",
    "RunOut",
    "ScoreOut",
    "ScoreRange",
    "SegmentRule",
    "SpendBanding",
    "SpendGroupSettings",
    "require_columns",
]

ColumnKind = Literal["any", "timestamp", "numeric"]


# Defined here, not in clv, so that importing the contract does not import SciPy.
class InvalidData(InvalidInput, ValueError):
    """Analytics input that cannot be used (a ``ValueError`` and a 422); the message names
    the column or value."""


class ModelNotFitted(RuntimeError):
    """A model was asked for parameters or predictions before ``fit`` (or ``from_params``)."""


def require_columns(table: Any, columns: Mapping[str, ColumnKind], *, what: str = "input") -> None:
    """Check that ``table`` has each column of ``columns`` and that it is of the right kind.

    Parameters
    ----------
    table : ibis.Table
        The table a function was given.
    columns : Mapping[str, ColumnKind]
        Column name to the kind it must be: ``"timestamp"``, ``"numeric"`` (integer,
        floating or decimal) or ``"any"``.
    what : str
        What the table is, for the message ("transactions", "per-customer table").

    Raises
    ------
    InvalidData
        A ``ValueError`` naming the first missing column (and the columns there are),
        or a column of the wrong type.
    """
    schema = table.schema()
    for name, kind in columns.items():
        if name not in schema:
            have = ", ".join(schema.names)
            raise InvalidData(f"{what} lack column {name!r} (columns: {have})")
        dtype = schema[name]
        if kind == "timestamp" and not dtype.is_timestamp():
            raise InvalidData(f"column {name!r} of {what} must be a timestamp, not {dtype}")
        if kind == "numeric" and not dtype.is_numeric():
            raise InvalidData(f"column {name!r} of {what} must be numeric, not {dtype}")


class ScoreRange(BaseModel):
    """Closed range ``low..high`` of a score; in config an int ``4`` or a pair ``[4, 5]``."""

    model_config = ConfigDict(frozen=True)

    low: int = Field(ge=1)
    high: int = Field(ge=1)

    @model_validator(mode="before")
    @classmethod
    def _from_shorthand(cls, data: Any) -> Any:
        if isinstance(data, int):
            return {"low": data, "high": data}
        if isinstance(data, Sequence) and not isinstance(data, str):
            if len(data) != 2:
                raise ValueError(f"a score range is [low, high], not {list(data)!r}")
            return {"low": data[0], "high": data[1]}
        return data

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.low > self.high:
            raise ValueError(f"score range {self.low}..{self.high} is empty")
        return self

    def __contains__(self, score: object) -> bool:
        return isinstance(score, int) and self.low <= score <= self.high


class SegmentRule(BaseModel):
    """A named rectangle on the score grid: the cells with R in ``recency``, F in
    ``frequency`` and, if given, M in ``monetary``."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1)
    recency: ScoreRange
    frequency: ScoreRange
    monetary: ScoreRange | None = None

    def matches(self, r: int, f: int, m: int | None = None) -> bool:
        """Whether the cell ``(r, f, m)`` lies in this rule's rectangle."""
        if r not in self.recency or f not in self.frequency:
            return False
        return self.monetary is None or m in self.monetary


class RFMSegmentMap(BaseModel):
    """Named RFM segments as ordered rules on a grid of ``bins`` scores; first match wins.

    The map is validated when built:

    * every range lies within ``1..bins``;
    * every cell of the grid (R×F, or R×F×M if any rule constrains M) matches some rule,
      so every scored customer gets a segment;
    * every rule wins at least one cell, so no rule is dead config hidden by the ones
      above it.

    Overlaps are allowed (first match wins); the default map has none, each cell of the
    5×5 grid belonging to exactly one rule.
    """

    model_config = ConfigDict(frozen=True)

    bins: int = Field(default=5, ge=2, le=20)
    rules: tuple[SegmentRule, ...] = Field(min_length=1)

    @property
    def uses_monetary(self) -> bool:
        """Whether any rule constrains the M score (the grid is then R×F×M)."""
        return any(rule.monetary is not None for rule in self.rules)

    @property
    def names(self) -> tuple[str, ...]:
        """Segment names in rule order, each once."""
        return tuple(dict.fromkeys(rule.name for rule in self.rules))

    def cells(self) -> Iterator[tuple[int, int, int | None]]:
        """Every ``(r, f, m)`` cell of the grid; ``m`` is None unless the map uses M."""
        scores = range(1, self.bins + 1)
        ms: Sequence[int | None] = list(scores) if self.uses_monetary else [None]
        yield from product(scores, scores, ms)

    def matching_rules(self, r: int, f: int, m: int | None = None) -> list[str]:
        """Names of every rule whose rectangle holds the cell, in rule order."""
        return [rule.name for rule in self.rules if rule.matches(r, f, m)]

    def segment_of(self, r: int, f: int, m: int | None = None) -> str:
        """The segment of a cell: the first matching rule."""
        if self.uses_monetary and m is None:
            raise ValueError("this segment map uses the M score; give m")
        for rule in self.rules:
            if rule.matches(r, f, m):
                return rule.name
        raise ValueError(f"no segment for scores r={r}, f={f}, m={m}")

    @model_validator(mode="after")
    def _covers_grid(self) -> Self:
        for rule in self.rules:
            ranges = [("recency", rule.recency), ("frequency", rule.frequency)]
            if rule.monetary is not None:
                ranges.append(("monetary", rule.monetary))
            for axis, scores in ranges:
                if scores.high > self.bins:
                    raise ValueError(
                        f"rule {rule.name!r}: {axis} {scores.low}..{scores.high} "
                        f"exceeds {self.bins} bins"
                    )
        winners: set[int] = set()
        for r, f, m in self.cells():
            index = next((i for i, rule in enumerate(self.rules) if rule.matches(r, f, m)), None)
            if index is None:
                cell = f"r={r}, f={f}" + ("" if m is None else f", m={m}")
                raise ValueError(f"no rule covers the cell {cell}")
            winners.add(index)
        for index, rule in enumerate(self.rules):
            if index not in winners:
                raise ValueError(f"rule {rule.name!r} is hidden by the rules above it")
        return self


def _rule(name: str, recency: tuple[int, int], frequency: tuple[int, int]) -> SegmentRule:
    return SegmentRule(
        name=name,
        recency=ScoreRange(low=recency[0], high=recency[1]),
        frequency=ScoreRange(low=frequency[0], high=frequency[1]),
    )


DEFAULT_SEGMENTS = RFMSegmentMap(
    bins=5,
    rules=(
        # The widely used R×F map of eleven segments (R = recency score, F = frequency);
        # it partitions the 5×5 grid, so rule order does not matter here.
        _rule("Champions", (5, 5), (4, 5)),
        _rule("Loyal", (3, 4), (4, 5)),
        _rule("Potential loyalist", (4, 5), (2, 3)),
        _rule("New", (5, 5), (1, 1)),
        _rule("Promising", (4, 4), (1, 1)),
        _rule("Need attention", (3, 3), (3, 3)),
        _rule("About to sleep", (3, 3), (1, 2)),
        _rule("At risk", (1, 2), (3, 4)),
        _rule("Can't lose them", (1, 2), (5, 5)),
        _rule("Hibernating", (2, 2), (1, 2)),
        _rule("Lost", (1, 1), (1, 2)),
    ),
)
"""Eleven named segments on the 5×5 R×F grid; M is left to ``segment_summary``."""


class SpendBanding(BaseModel):
    """How customers are put into spend bands: fixed money ``edges`` or ``bands`` quantiles.

    With ``edges`` ``e_1 < … < e_{k-1}`` there are ``k`` bands, band ``i`` holding spend
    in ``[e_{i-1}, e_i)`` (band 1 everything below ``e_1``, band ``k`` everything from
    ``e_{k-1}`` up), as in "spends less than €4 a week". Without edges there are
    ``bands`` (default 11) bands cut at the quantiles ``i / bands`` of spend.
    """

    model_config = ConfigDict(frozen=True)

    edges: tuple[Decimal, ...] | None = None
    bands: int | None = Field(default=None, ge=2, le=1000)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.edges is None:
            return self
        if not self.edges:
            raise ValueError("edges must hold at least one boundary")
        if any(not edge.is_finite() for edge in self.edges):
            raise ValueError("edges must be finite numbers")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError(f"edges must increase strictly: {[str(e) for e in self.edges]}")
        if self.bands is not None and self.bands != len(self.edges) + 1:
            raise ValueError(
                f"{len(self.edges)} edges make {len(self.edges) + 1} bands, not {self.bands}"
            )
        return self

    @property
    def count(self) -> int:
        """The number of bands."""
        if self.edges is not None:
            return len(self.edges) + 1
        return self.bands if self.bands is not None else 11


class SpendGroupSettings(SpendBanding):
    """Spend-group analysis as a marketer configures it: the period spend is averaged
    over, the banding, and the share of customers counted as the best."""

    period: Literal["week", "month"] = "week"
    top_share: float = Field(default=0.02, gt=0, le=1)


# -- API shapes ------------------------------------------------------------------------------


class ScoreOut(BaseModel):
    """One customer's scores from one analysis run."""

    model_config = ConfigDict(from_attributes=True)

    run_id: int
    as_of: datetime
    first_purchase_at: datetime | None
    last_purchase_at: datetime | None
    recency_days: int | None = Field(description="Days since the last purchase.")
    frequency: int | None = Field(description="Purchase days before the as-of date.")
    monetary: Decimal | None = Field(description="Net spend, returns netted off.")
    r_score: int | None
    f_score: int | None
    m_score: int | None
    rfm_segment: str | None
    spend_band: int | None = Field(description="1 = lowest spend per period.")
    best_customer: bool
    lifecycle_stage: str
    p_alive: float | None = Field(description="BG/NBD probability the customer is still active.")
    expected_purchases: float | None = Field(description="Purchases expected over the horizon.")
    expected_spend: Decimal | None = Field(description="Gamma-Gamma spend per purchase.")
    clv: Decimal | None = Field(description="Discounted revenue over the horizon.")
    profit_clv: Decimal | None = Field(description="Margin minus acquisition and servicing cost.")
    churn_risk: float | None = Field(description="Probability of no purchase in the horizon.")
    offers: dict[str, Any] = Field(description="Next best offers: items with kind and score.")


class RunOut(BaseModel):
    """An analysis run; ``results`` holds its report tables and fitted models."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    as_of: datetime
    model_version: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    customers: int
    results: dict[str, Any] | None = None

    @classmethod
    def of(cls, run: Any, *, with_results: bool = True) -> RunOut:
        out = cls.model_validate(run)
        if not with_results:
            out.results = None
        return out
