"""Message templates: Jinja2 in a sandbox, checked before launch, rendered per customer.

Templates see a fixed set of names (:data:`CONTEXT_NAMES`): the ``customer`` (profile
fields, ``email``, ``phone``, ``full_name``), the customer's newest analytics ``scores``,
the recommended ``offers`` from next best offer, the campaign's ``offer``, the
recipient's ``coupon`` code, the ``campaign``, the ``unsubscribe_url`` and, in a triggered
campaign, the ``trigger``: the properties of the fact that fired it (a cart's items, an
order's total), empty otherwise. Anything else
is an error that names it, found when the plan is checked, not at send time: an unknown
top-level name by reading the template, a misspelt field by rendering it against a
complete sample. The sandbox keeps a template from reaching Python internals, and the
HTML body is autoescaped, so a customer's name cannot inject markup.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError, meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from patron.campaigns.schemas import MessageTemplate, Offer
from patron.customers.schemas import PROFILE_FIELDS
from patron.kit.errors import InvalidInput
from patron.models.consent import Channel
from patron.segments.schemas import SCORE_TYPES

CONTEXT_NAMES = (
    "customer", "scores", "offers", "offer", "coupon", "campaign", "unsubscribe_url", "trigger",
)  # fmt: skip


class _AnyProperties(dict[str, Any]):
    """A sample trigger: events carry free-form properties, so any name is accepted."""

    def __missing__(self, key: str) -> str:
        return "sample"


"""The names a template may use."""

_PARTS = ("subject", "html", "text")
_TEXT = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_HTML = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True)


@dataclass(frozen=True)
class Rendered:
    """A message for one customer."""

    subject: str
    html: str
    text: str


def check(message: MessageTemplate, channel: Channel = Channel.EMAIL) -> None:
    """Refuse a message whose templates do not parse or use a name they cannot have, or
    that lacks a part its channel needs.

    Raises
    ------
    InvalidInput
        Naming the part (``message.html``), the line and the problem.
    """
    if channel is Channel.EMAIL:
        for part in ("subject", "html"):
            if not getattr(message, part).strip():
                raise InvalidInput(f"message.{part}: an email campaign needs one")
    for part in _PARTS:
        source = getattr(message, part)
        environment = _HTML if part == "html" else _TEXT
        try:
            parsed = environment.parse(source)
        except TemplateSyntaxError as exc:
            raise InvalidInput(f"message.{part}, line {exc.lineno}: {exc.message}") from None
        unknown = sorted(meta.find_undeclared_variables(parsed) - set(CONTEXT_NAMES))
        if unknown:
            known = ", ".join(CONTEXT_NAMES)
            raise InvalidInput(
                f"message.{part}: undefined variable {unknown[0]!r} (templates may use {known})"
            )
    render(message, sample_context())


def render(message: MessageTemplate, context: dict[str, Any]) -> Rendered:
    """The three parts rendered with ``context``; a missing field is an error naming it."""
    out = {}
    for part in _PARTS:
        try:
            out[part] = _compiled(getattr(message, part), html=part == "html").render(context)
        except UndefinedError as exc:
            raise InvalidInput(f"message.{part}: undefined variable: {exc.message}") from None
        except SecurityError as exc:
            raise InvalidInput(f"message.{part}: not allowed in a template: {exc}") from None
        except TemplateSyntaxError as exc:
            raise InvalidInput(f"message.{part}, line {exc.lineno}: {exc.message}") from None
    return Rendered(subject=" ".join(out["subject"].split()), html=out["html"], text=out["text"])


@lru_cache(maxsize=256)
def _compiled(source: str, *, html: bool) -> Template:
    # compiling costs far more than rendering: a campaign compiles each part once
    return (_HTML if html else _TEXT).from_string(source)


def sample_context() -> dict[str, Any]:
    """A context with every field a real one can have, for checking templates."""
    customer: dict[str, Any] = dict.fromkeys(PROFILE_FIELDS, "sample")
    customer |= {
        "id": 1,
        "birth_date": date(1990, 1, 1),
        "full_name": "Sample Customer",
        "email": "sample@example.com",
        "phone": "+70000000000",
        "attributes": {},
    }
    scores: dict[str, Any] = dict.fromkeys(SCORE_TYPES, 0)
    offers = [{"item": "sample", "kind": "cross_sell", "score": 1.0}]
    return {
        "customer": customer,
        "scores": scores,
        "offers": offers,
        "offer": Offer(
            kind="discount", discount_percent=Decimal(10), points=100, gift="sample",
            coupon_prefix="SAMPLE",
        ).model_dump(mode="json"),
        "coupon": "SAMPLE-0000",
        "campaign": {"id": 1, "name": "sample", "goal": "sample"},
        "unsubscribe_url": "https://example.com/unsubscribe",
        "trigger": _AnyProperties(),
    }  # fmt: skip
