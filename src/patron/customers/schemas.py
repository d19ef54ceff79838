"""Pydantic shapes of the customer hub, shared by the API, the importers and the services."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from patron.analytics.schemas import ScoreOut
from patron.models.consent import Channel, ConsentStatus, Purpose
from patron.models.identity import IdentityKind
from patron.models.merge import CandidateStatus

PROFILE_FIELDS = (
    "first_name",
    "last_name",
    "middle_name",
    "birth_date",
    "gender",
    "city",
    "region",
    "country",
    "timezone",
    "language",
    "company",
    "line_of_business",
    "ownership_form",
)


class IdentityIn(BaseModel):
    """An identity as written by a source; ``namespace`` names the system of an external id."""

    kind: IdentityKind
    value: str = Field(min_length=1, max_length=320)
    namespace: str = ""
    verified: bool = False


class ConsentIn(BaseModel):
    """A consent decision for a channel and purpose."""

    channel: Channel
    purpose: Purpose = Purpose.MARKETING
    status: ConsentStatus
    decided_at: AwareDatetime
    source: str | None = None
    text_version: str | None = None


class ProfileFields(BaseModel):
    """The descriptive fields of a profile; every one may be missing."""

    first_name: str | None = Field(default=None, max_length=120)
    last_name: str | None = Field(default=None, max_length=120)
    middle_name: str | None = Field(default=None, max_length=120)
    birth_date: date | None = None
    gender: str | None = Field(default=None, max_length=16)
    city: str | None = Field(default=None, max_length=120)
    region: str | None = Field(default=None, max_length=120)
    country: str | None = Field(default=None, max_length=80)
    timezone: str | None = Field(default=None, max_length=64)
    language: str | None = Field(default=None, max_length=16)
    company: str | None = Field(default=None, max_length=200)
    line_of_business: str | None = Field(default=None, max_length=120)
    ownership_form: str | None = Field(default=None, max_length=60)
    attributes: dict[str, Any] = Field(default_factory=dict)


class CustomerIn(ProfileFields):
    """A profile as a source describes it: fields, identities and consent decisions."""

    identities: list[IdentityIn] = Field(default_factory=list)
    consents: list[ConsentIn] = Field(default_factory=list)


class IdentityOut(BaseModel):
    """A stored identity."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: IdentityKind
    namespace: str
    value: str
    raw_value: str
    verified: bool
    source: str
    created_at: datetime


class ConsentOut(BaseModel):
    """A stored consent decision."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    channel: Channel
    purpose: Purpose
    status: ConsentStatus
    source: str
    text_version: str | None
    decided_at: datetime
    recorded_at: datetime
    origin_customer_id: int


class CustomerOut(ProfileFields):
    """A profile with its identities and its effective consent per channel and purpose."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    merged_into_id: int | None
    created_at: datetime
    updated_at: datetime
    identities: list[IdentityOut] = Field(default_factory=list)
    consents: list[ConsentOut] = Field(
        default_factory=list, description="The decision in force per channel and purpose."
    )
    scores: ScoreOut | None = Field(
        default=None,
        description="Scores from the newest analysis run (profile reads only); "
        "the history is at /customers/{id}/scores.",
    )


class MergeOut(BaseModel):
    """A merge-log entry."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    winner_id: int
    loser_id: int
    reason: str
    actor: str
    moved: dict[str, Any]
    filled: dict[str, Any]
    merged_at: datetime
    undone_at: datetime | None


class CandidateOut(BaseModel):
    """A proposed duplicate pair."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    customer_a_id: int
    customer_b_id: int
    score: float
    reason: str
    status: CandidateStatus
