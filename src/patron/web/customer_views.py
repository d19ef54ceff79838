"""Merging and unmerging profiles from the customer 360, each behind a confirmation page
that shows what will happen; both are on the merge log and the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from patron.api.deps import Permission
from patron.customers.service import CustomerService
from patron.kit.errors import InvalidInput
from patron.web.service import WebService, Who
from patron.web.views import SessionDep, _check_csrf, _page, needs, router

Steward = Annotated[Who, Depends(needs(Permission.WRITE_CUSTOMERS))]


@router.post("/customers/{customer_id}/merge", response_model=None)
def merge(
    *, request: Request, session: SessionDep, who: Steward, customer_id: int,
    other: Annotated[int, Form()], reason: Annotated[str, Form(max_length=200)] = "",
    confirm: Annotated[str, Form()] = "", csrf: Annotated[str, Form()] = "",
) -> Response:  # fmt: skip
    """Without ``confirm``: the page that shows both profiles and asks. With it: merge
    ``other`` into this customer."""
    _check_csrf(request, csrf)
    if len(reason.strip()) < 3:
        raise InvalidInput("reason: say why these are the same person (3 characters or more)")
    customers = CustomerService(session)
    if confirm != "yes":
        keep, go = customers.get(customer_id), customers.get(other)
        if keep.id == go.id:
            raise InvalidInput("cannot merge a customer into itself")
        return _page(
            request, "merge_confirm.html", who, keep=keep, go=go, reason=reason,
            keep_ids=customers.identities(keep.id),
            go_ids=customers.identities(go.id),
        )  # fmt: skip
    log = customers.merge(customer_id, other, reason=reason, actor=who.username)
    WebService(session).record(who.username, "customer.merge", target=f"customer:{customer_id}",
                               merged=other, merge=log.id, reason=reason)  # fmt: skip
    session.commit()
    return RedirectResponse(f"/ui/customers/{customer_id}", status_code=303)


@router.post("/customers/{customer_id}/unmerge/{merge_id}", response_model=None)
def unmerge(
    *, request: Request, session: SessionDep, who: Steward, customer_id: int, merge_id: int,
    confirm: Annotated[str, Form()] = "", csrf: Annotated[str, Form()] = "",
) -> Response:  # fmt: skip
    _check_csrf(request, csrf)
    customers = CustomerService(session)
    log = customers.merge_log(merge_id)
    if log is None or log.winner_id != customer_id:
        raise InvalidInput(f"merge {merge_id} is not a merge into customer {customer_id}")
    if confirm != "yes":
        return _page(request, "unmerge_confirm.html", who, log=log,
                     go=customers.get(log.loser_id))  # fmt: skip
    customers.unmerge(merge_id, actor=who.username)
    WebService(session).record(who.username, "customer.unmerge", target=f"customer:{customer_id}",
                               merge=merge_id, restored=log.loser_id)  # fmt: skip
    session.commit()
    return RedirectResponse(f"/ui/customers/{customer_id}", status_code=303)
