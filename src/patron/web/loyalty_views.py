"""Loyalty pages: the program (rules, tiers, coupon pools, mini-programs) with its
liability, account lookup, and a manual adjustment with its mandatory reason."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

import yaml
from fastapi import Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from patron.api.deps import ROLE_PERMISSIONS, Permission
from patron.kit.errors import InvalidInput, NotFound, PatronError
from patron.loyalty.schemas import AdjustIn, CouponPoolIn, MiniProgramIn, ProgramRules
from patron.loyalty.service import LoyaltyService
from patron.web.service import WebService, Who
from patron.web.views import SessionDep, _check_csrf, _page, needs, router

LoyaltyReader = Annotated[Who, Depends(needs(Permission.READ_LOYALTY))]
Operator = Annotated[Who, Depends(needs(Permission.WRITE_LOYALTY))]


@router.get("/loyalty", response_class=HTMLResponse)
def program(*, request: Request, session: SessionDep, who: LoyaltyReader) -> HTMLResponse:
    service = LoyaltyService(session)
    rules = service.rules
    return _page(
        request, "loyalty.html", who, rules=rules, tiers=service.tier_counts(),
        rules_text=yaml.safe_dump(rules.model_dump(mode="json"), allow_unicode=True,
                                  sort_keys=False),
        liability=service.liability(),
        pools=[service.coupons.stats(p) for p in service.coupons.pools()],
        minis=[service.minis.standing(p) for p in service.minis.listing()],
        can_edit=Permission.WRITE_LOYALTY in ROLE_PERMISSIONS[who.role],
    )  # fmt: skip


@router.get("/loyalty/accounts", response_class=HTMLResponse)
def lookup(
    *, request: Request, session: SessionDep, who: LoyaltyReader,
    card: Annotated[str, Query(max_length=32)] = "",
) -> HTMLResponse:  # fmt: skip
    if not card:
        return _page(request, "loyalty_account.html", who, card="", account=None)
    service = LoyaltyService(session)
    try:
        account = service.account(card.strip())
    except NotFound as exc:
        return _page(request, "loyalty_account.html", who, status=404, card=card,
                     account=None, error=exc.message)  # fmt: skip
    return _page(
        request, "loyalty_account.html", who, card=card, account=service.describe(account),
        ledger=service.ledger(account, limit=50, offset=0), history=service.tiers_of(account),
        operation=secrets.token_urlsafe(16),
    )  # fmt: skip


@router.post("/loyalty/accounts/{card}/adjust", response_model=None)
def adjust(
    *, request: Request, session: SessionDep, who: Operator, card: str,
    points: Annotated[int, Form()], reason: Annotated[str, Form()] = "",
    operation: Annotated[str, Form(min_length=8, max_length=64)],
    csrf: Annotated[str, Form()] = "",
) -> Response:  # fmt: skip
    """A correction with its reason; the form's operation id makes a double submit one."""
    _check_csrf(request, csrf)
    try:
        body = AdjustIn(points=points, reason=reason)
    except ValidationError as exc:
        problem = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(problem) from None
    service = LoyaltyService(session)
    key = f"ui:{operation}"
    replay = service.operation_done(key)
    try:
        service.adjust(card, body, key=key, actor=who.username)
    except PatronError:
        session.rollback()
        raise
    if not replay:  # a resubmitted form changed nothing, so it is not a change to log
        WebService(session).record(who.username, "loyalty.adjust", target=f"card:{card}",
                                   points=points, reason=reason)  # fmt: skip
    session.commit()
    return RedirectResponse(f"/ui/loyalty/accounts?card={card}", status_code=303)


@router.post("/loyalty/rules", response_model=None)
def save_rules(
    *, request: Request, session: SessionDep, who: Operator,
    rules: Annotated[str, Form(max_length=100_000)], note: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:  # fmt: skip
    """Save edited rules as the program's next version; an error names the field."""
    _check_csrf(request, csrf)
    try:
        data = yaml.safe_load(rules)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"rules: not YAML ({exc})") from None
    try:
        parsed = ProgramRules.model_validate(data)
    except ValidationError as exc:
        problem = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'rules'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(problem) from None
    program = LoyaltyService(session).configure(parsed, actor=who.username, note=note)
    WebService(session).record(who.username, "loyalty.rules", target=f"program:{program.version}",
                               note=note)  # fmt: skip
    session.commit()
    return RedirectResponse("/ui/loyalty", status_code=303)


def _model(model: type[Any], data: dict[str, Any]) -> Any:
    """A form's fields as the API's model; an error names each field that is wrong."""
    try:
        return model.model_validate({k: v for k, v in data.items() if v not in ("", None)})
    except ValidationError as exc:
        problem = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(problem) from None


@router.post("/loyalty/coupon-pools", response_model=None)
async def create_pool(*, request: Request, session: SessionDep, who: Operator) -> Response:
    """A coupon pool from the program page's form (codes are generated by the API or a
    campaign's offer)."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    _check_csrf(request, form.pop("csrf", ""))
    pool = LoyaltyService(session).coupons.create_pool(_model(CouponPoolIn, form))
    WebService(session).record(who.username, "loyalty.pool", target=f"pool:{pool.id}",
                               name=pool.name)  # fmt: skip
    session.commit()
    return RedirectResponse("/ui/loyalty", status_code=303)


@router.post("/loyalty/mini-programs", response_model=None)
async def create_mini(*, request: Request, session: SessionDep, who: Operator) -> Response:
    """A mini-program for a segment; ``start`` takes the segment's members at once."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    _check_csrf(request, form.pop("csrf", ""))
    start = form.pop("start", "") == "yes"
    minis = LoyaltyService(session).minis
    program = minis.create(_model(MiniProgramIn, form), actor=who.username)
    if start:
        minis.start(program)
    WebService(session).record(
        who.username, "loyalty.mini_program", target=f"mini:{program.id}",
        name=program.name, started=start,
    )  # fmt: skip
    session.commit()
    return RedirectResponse("/ui/loyalty", status_code=303)
