"""The segment rule language, as validated data, and the shapes of the segments API.

A rule is a tree. Leaves test one thing about a customer (a profile field, an identity, a
consent, an order aggregate over a window, categories bought, an analytics score, events,
membership of another segment); ``all``, ``any`` and ``not`` nodes combine them. Every
node carries a ``kind``, so a rule reads the same in JSON, YAML and Python::

    kind: all
    conditions:
      - {kind: score, field: best_customer, value: true}
      - {kind: score, field: churn_risk, op: ge, value: 0.5}
      - {kind: consent, channel: email}
      - {kind: orders, measure: spend, days: 365, op: ge, value: 100}
      - kind: not
        condition: {kind: category, categories: [toys], days: 90}

``{all: [...]}``, ``{any: [...]}`` and ``{not: {...}}`` are accepted as short forms.
Values are checked and typed against the field when the rule is validated, so a rule that
names an unknown field, or compares a date with a word, is refused with the place it
happened (``conditions.1.value``) before anything runs. The repository compiles a valid
rule to SQL; nothing here touches a customer.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from patron.customers.schemas import PROFILE_FIELDS
from patron.kit.errors import InvalidInput
from patron.models.consent import Channel, Purpose
from patron.models.identity import IdentityKind

Op = Literal[
    "eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "between",
    "is_null", "not_null", "contains", "starts_with",
]  # fmt: skip
"""Comparison operators. ``between`` takes ``[low, high]`` (both included); ``in`` and
``not_in`` a list; ``is_null`` and ``not_null`` no value; ``contains`` and
``starts_with`` a string."""

_LIST_OPS = {"in", "not_in"}
_NO_VALUE_OPS = {"is_null", "not_null"}
_TEXT_OPS = {"contains", "starts_with"}
_ORDERING_OPS = {"eq", "ne", "lt", "le", "gt", "ge", "between", "is_null", "not_null"}

PROFILE_TYPES: dict[str, type] = {
    **dict.fromkeys(PROFILE_FIELDS, str),
    "birth_date": date,
    "created_at": datetime,
}
"""Profile fields a rule may test, with their types; ``attributes.<key>`` tests a custom
attribute (text, number or true/false, compared as given)."""

SCORE_TYPES: dict[str, type] = {
    "recency_days": int,
    "frequency": int,
    "monetary": Decimal,
    "r_score": int,
    "f_score": int,
    "m_score": int,
    "rfm_segment": str,
    "spend_band": int,
    "best_customer": bool,
    "lifecycle_stage": str,
    "p_alive": float,
    "expected_purchases": float,
    "expected_spend": Decimal,
    "clv": Decimal,
    "profit_clv": Decimal,
    "churn_risk": float,
}
"""Analytics scores a rule may test: those of the newest completed analysis run as of the
evaluation date."""

ORDER_MEASURES: dict[str, type] = {
    "spend": Decimal,
    "orders": int,
    "returns": int,
    "average_order": Decimal,
    "days_since_last": int,
    "days_since_first": int,
}
"""Order aggregates over a window: net spend (returns subtracted), purchase and return
counts, the mean purchase, and whole days since the last or first purchase."""

_SCALAR = TypeAdapter(str | int | float | bool | None)


class _Node(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Comparison(_Node):
    """A leaf that compares one typed quantity with a value."""

    op: Op = "eq"
    value: Any = None

    def _typed(self, field: str, kind: type | None, *, allowed: set[str] | None = None) -> Self:
        """Check the operator's arity and give the value the field's type."""
        if allowed is not None and self.op not in allowed:
            raise ValueError(f"operator {self.op!r} does not apply to {field!r}")
        if self.op in _TEXT_OPS and kind not in (str, None):
            raise ValueError(f"operator {self.op!r} needs a text field; {field!r} is not one")
        if self.op in _NO_VALUE_OPS:
            if self.value is not None:
                raise ValueError(f"operator {self.op!r} takes no value")
            return self
        if self.value is None:
            raise ValueError(f"operator {self.op!r} on {field!r} needs a value")
        if self.op in _LIST_OPS or self.op == "between":
            if not isinstance(self.value, list | tuple) or not self.value:
                raise ValueError(f"operator {self.op!r} needs a list of values")
            if self.op == "between" and len(self.value) != 2:
                raise ValueError("operator 'between' needs [low, high]")
            typed: Any = [_coerce(field, kind, v) for v in self.value]
        elif isinstance(self.value, list | tuple):
            raise ValueError(f"operator {self.op!r} takes one value, not a list")
        else:
            typed = _coerce(field, kind, self.value)
        object.__setattr__(self, "value", typed)  # frozen model: set once, while validating
        return self


def _coerce(field: str, kind: type | None, value: Any) -> Any:
    """``value`` as the field's type; a custom attribute (``kind`` None) keeps a scalar."""
    name = "aware date-time" if kind is datetime else getattr(kind, "__name__", "scalar")
    problem = ValueError(f"{value!r} is not a valid {name} for {field!r}")
    if kind is str and not isinstance(value, str):
        raise problem
    adapter: TypeAdapter[Any] = (
        _SCALAR if kind is None else TypeAdapter(AwareDatetime if kind is datetime else kind)
    )
    try:
        return adapter.validate_python(value)
    except ValidationError:
        raise problem from None


class _Window(BaseModel):
    """Which orders or events count: the last ``days`` before the evaluation date, and/or
    those from ``since`` (included) to ``until`` (excluded); none means all history."""

    days: int | None = Field(default=None, ge=1, le=36_600)
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None

    def _check_window(self) -> None:
        if self.since and self.until and self.since >= self.until:
            raise ValueError("'since' must be before 'until'")


class ProfileCondition(_Comparison):
    """A profile field, or ``attributes.<key>`` for a custom attribute."""

    kind: Literal["profile"] = "profile"
    field: str

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.field.startswith("attributes."):
            if not self.field.removeprefix("attributes."):
                raise ValueError("'attributes.' needs a key, as in 'attributes.loyalty_level'")
            return self._typed(self.field, None)
        if self.field not in PROFILE_TYPES:
            known = ", ".join(sorted(PROFILE_TYPES))
            raise ValueError(
                f"unknown profile field {self.field!r}; known: {known}, attributes.<key>"
            )
        return self._typed(self.field, PROFILE_TYPES[self.field])


class IdentityCondition(_Node):
    """The customer has (``present``) or lacks an identity of a kind, optionally verified
    or from one source system (``namespace``, for external ids)."""

    kind: Literal["identity"] = "identity"
    identity: IdentityKind
    namespace: str | None = None
    verified: bool | None = None
    present: bool = True


class ConsentCondition(_Node):
    """The decision in force on the evaluation date for a channel and purpose: ``granted``,
    ``withdrawn``, or ``none`` (never decided). Pending double opt-ins are not decisions."""

    kind: Literal["consent"] = "consent"
    channel: Channel
    purpose: Purpose = Purpose.MARKETING
    status: Literal["granted", "withdrawn", "none"] = "granted"


class OrderCondition(_Comparison, _Window):
    """An aggregate of the customer's orders in a window, optionally of lines in some
    categories only; a customer without orders there has spend and counts of zero."""

    kind: Literal["orders"] = "orders"
    measure: Literal[
        "spend", "orders", "returns", "average_order", "days_since_last", "days_since_first"
    ]
    categories: list[str] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Self:
        self._check_window()
        allowed = _ORDERING_OPS if self.measure.startswith("days_since") else None
        if self.op in _TEXT_OPS:
            raise ValueError(f"operator {self.op!r} does not apply to {self.measure!r}")
        return self._typed(self.measure, ORDER_MEASURES[self.measure], allowed=allowed)


class CategoryCondition(_Node, _Window):
    """Bought (or, with ``bought: false``, did not buy) any of ``categories`` in a window."""

    kind: Literal["category"] = "category"
    categories: list[str] = Field(min_length=1)
    bought: bool = True

    @model_validator(mode="after")
    def _check(self) -> Self:
        self._check_window()
        return self


class ScoreCondition(_Comparison):
    """A score of the newest completed analysis run as of the evaluation date."""

    kind: Literal["score"] = "score"
    field: str

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.field not in SCORE_TYPES:
            known = ", ".join(SCORE_TYPES)
            raise ValueError(f"unknown score {self.field!r}; known: {known}")
        return self._typed(self.field, SCORE_TYPES[self.field])


class EventCondition(_Comparison, _Window):
    """How many events of a type (with the given ``properties``) the customer had in a
    window; the default test is "at least one"."""

    kind: Literal["event"] = "event"
    type: str = Field(min_length=1, max_length=64)
    properties: dict[str, str | int | float | bool] = Field(default_factory=dict)
    op: Op = "ge"
    value: Any = 1

    @model_validator(mode="after")
    def _check(self) -> Self:
        self._check_window()
        return self._typed("count", int, allowed=_ORDERING_OPS - {"is_null", "not_null"})


class SegmentCondition(_Node):
    """Membership of another saved segment, by name: its rule is evaluated in place, so
    the answer is as current as this rule's."""

    kind: Literal["segment"] = "segment"
    segment: str = Field(min_length=1, max_length=120)
    member: bool = True


class _Group(_Node):
    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        """``{all: [...]}``, ``{any: [...]}``, ``{not: {...}}`` as the full nodes."""
        if isinstance(data, dict) and "kind" not in data and len(data) == 1:
            ((key, inner),) = data.items()
            if key in ("all", "any"):
                return {"kind": key, "conditions": inner}
            if key == "not":
                return {"kind": "not", "condition": inner}
        return data


class AllOf(_Group):
    """Every condition holds (AND)."""

    kind: Literal["all"] = "all"
    conditions: list[Condition] = Field(min_length=1)


class AnyOf(_Group):
    """At least one condition holds (OR)."""

    kind: Literal["any"] = "any"
    conditions: list[Condition] = Field(min_length=1)


class NotOf(_Group):
    """The condition does not hold (NOT)."""

    kind: Literal["not"] = "not"
    condition: Condition


def _tag(data: Any) -> str | None:
    """A node's ``kind``, or the key of a short-form group."""
    if isinstance(data, BaseModel):
        return str(getattr(data, "kind", None))
    if isinstance(data, dict):
        if "kind" in data:
            return str(data["kind"])
        if len(data) == 1 and next(iter(data)) in ("all", "any", "not"):
            return str(next(iter(data)))
    return None


Condition = Annotated[
    Annotated[ProfileCondition, Tag("profile")]
    | Annotated[IdentityCondition, Tag("identity")]
    | Annotated[ConsentCondition, Tag("consent")]
    | Annotated[OrderCondition, Tag("orders")]
    | Annotated[CategoryCondition, Tag("category")]
    | Annotated[ScoreCondition, Tag("score")]
    | Annotated[EventCondition, Tag("event")]
    | Annotated[SegmentCondition, Tag("segment")]
    | Annotated[AllOf, Tag("all")]
    | Annotated[AnyOf, Tag("any")]
    | Annotated[NotOf, Tag("not")],
    Discriminator(
        _tag,
        custom_error_type="invalid_kind",
        custom_error_message="each condition needs a 'kind': profile, identity, consent, "
        "orders, category, score, event, segment, all, any or not",
    ),
]
"""Any node of a rule."""

RULE: TypeAdapter[Condition] = TypeAdapter(Condition)


def parse_rule(data: Any, *, where: str = "rule") -> Condition:
    """Validate a rule given as plain data (from JSON or YAML).

    Raises
    ------
    InvalidInput
        Naming each place that is wrong, as ``rule.conditions.1.value: ...``.
    """
    try:
        return RULE.validate_python(data)
    except ValidationError as exc:
        raise InvalidInput(f"invalid segment rule: {describe(exc, where=where)}") from None


def describe(exc: ValidationError, *, where: str) -> str:
    """A validation error as ``place: message`` lines joined by ``; ``, where ``place``
    leaves out the union branch names pydantic adds."""
    parts = []
    for error in exc.errors():
        place = [where, *(str(p) for p in error["loc"] if not _is_branch(p))]
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{'.'.join(place)}: {message}")
    return "; ".join(dict.fromkeys(parts))


def _is_branch(part: Any) -> bool:
    # the discriminator tags ("profile", "all"...) pydantic puts in the location
    return isinstance(part, str) and part in _KINDS


_KINDS = {"profile", "identity", "consent", "orders", "category", "score", "event", "segment"}
_KINDS |= {"all", "any", "not"}


def rule_json(rule: Condition) -> dict[str, Any]:
    """The rule as stored: plain JSON with defaults left out."""
    dumped = RULE.dump_python(rule, mode="json", exclude_defaults=True)
    out: dict[str, Any] = _with_kinds(rule, dumped)
    return out


def _with_kinds(rule: Any, dumped: Any) -> Any:
    # exclude_defaults drops every "kind" (each is its field's default); put them back
    if isinstance(rule, BaseModel) and isinstance(dumped, dict):
        out = {"kind": rule.kind, **dumped} if hasattr(rule, "kind") else dict(dumped)
        for key, value in list(out.items()):
            out[key] = _with_kinds(getattr(rule, key, None), value)
        return out
    if isinstance(rule, list) and isinstance(dumped, list):
        return [_with_kinds(r, d) for r, d in zip(rule, dumped, strict=True)]
    return dumped


# -- API shapes -----------------------------------------------------------------------------


class SegmentIn(BaseModel):
    """A segment to save."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=120)
    description: str = ""
    rule: Condition


class SegmentUpdate(BaseModel):
    """Changes to a saved segment; a new rule takes effect at the next count or build."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=120)
    description: str | None = None
    rule: Condition | None = None


class PreviewIn(BaseModel):
    """A rule to count without saving it (the live count of an editor)."""

    model_config = ConfigDict(extra="forbid")

    rule: Condition
    as_of: AwareDatetime | None = None


class SegmentOut(BaseModel):
    """A saved segment with its newest build, if any."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    rule: dict[str, Any]
    created_by: str
    created_at: datetime
    updated_at: datetime
    members: int | None = None
    built_at: datetime | None = None


class CountOut(BaseModel):
    """A live count: how many customers the rule selects as of a moment.

    ``route`` says where it was counted: in the segment replica (the columnar copy, fast)
    or in the operational store. ``data_as_of`` is when the data counted was read from the
    store: the replica's last refresh, or the count itself on the store route.
    """

    customers: int
    as_of: datetime
    seconds: float
    route: Literal["replica", "store"] = "store"
    data_as_of: datetime


class ReplicaOut(BaseModel):
    """The segment replica: whether live counts read it now (``fresh``), and what it
    holds: when it was copied, the analysis run of its scores, the rows of each table."""

    exists: bool
    fresh: bool
    refreshed_at: datetime | None = None
    score_run: int | None = None
    rows: dict[str, int] = Field(default_factory=dict)
    seconds: float | None = None


class BuildOut(BaseModel):
    """One materialisation of a segment."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    segment_id: int
    built_at: datetime
    members: int
    entered: int
    left: int
    seconds: float


class MemberOut(BaseModel):
    """A current member, with the time they entered."""

    customer_id: int
    entered_at: datetime


class ChangeOut(BaseModel):
    """A customer entering or leaving a segment."""

    customer_id: int
    change: Literal["entered", "left"]
    at: datetime


class MoveOut(BaseModel):
    """How many customers were in group ``before`` on one date and in ``after`` on a later
    one; null is "in none of them" (or unscored)."""

    before: str | None
    after: str | None
    customers: int
