"""What a campaign says and gives: the message templates and the offer. Kept apart from
the plan so that journeys, whose steps carry their own message and offer, can use them."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Plan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Offer(_Plan):
    """What the customer is offered. ``cost`` is the incentive's cost to the company per
    redemption (the discount given, the points' value, the gift), counted in the ROI."""

    kind: Literal["none", "discount", "points", "coupon", "gift"] = "none"
    discount_percent: Decimal | None = Field(default=None, gt=0, le=100)
    points: int | None = Field(default=None, gt=0)
    coupon_prefix: str | None = Field(default=None, pattern=r"^[A-Z0-9]{0,12}$")
    gift: str | None = Field(default=None, max_length=200)
    cost: Decimal = Field(default=Decimal("0"), ge=0, decimal_places=2)
    valid_days: int = Field(default=14, ge=1, le=366)

    @model_validator(mode="after")
    def _check(self) -> Self:
        needed = {
            "discount": "discount_percent",
            "points": "points",
            "coupon": "coupon_prefix",
            "gift": "gift",
        }.get(self.kind)
        if needed is not None and getattr(self, needed) is None:
            raise ValueError(f"an offer of kind {self.kind!r} needs {needed!r}")
        return self


class MessageTemplate(_Plan):
    """Jinja2 templates (run sandboxed) of the subject, the HTML and the plain-text body.
    SMS, messengers, push and call lists use the text (a push also shows the subject as
    its title); email needs all three."""

    subject: str = Field(default="", max_length=500)
    html: str = ""
    text: str = Field(min_length=1)
    sender: str = Field(default="Patron <news@patron.local>", max_length=320)
