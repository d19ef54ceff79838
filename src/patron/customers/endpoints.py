"""HTTP endpoints of the customer hub: parse, call ``CustomerService``, answer with a schema."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from patron.analytics.schemas import ScoreOut
from patron.analytics.service import AnalyticsService
from patron.api.deps import (
    Page,
    PagingDep,
    Permission,
    RegionDep,
    SessionDep,
    require,
)
from patron.api.errors import field_error
from patron.api.idempotency import IdempotencyDep
from patron.customers.normalize import InvalidIdentity, normalize
from patron.customers.schemas import (
    ConsentIn,
    ConsentOut,
    CustomerIn,
    CustomerOut,
    IdentityIn,
    IdentityOut,
    MergeOut,
    ProfileFields,
)
from patron.customers.service import CustomerService, normalise_identities
from patron.kit.errors import NotFound
from patron.models import ApiKey, Customer, IdentityKind

router = APIRouter(tags=["customers"])

Reader = Annotated[ApiKey, Depends(require(Permission.READ_CUSTOMERS))]
Writer = Annotated[ApiKey, Depends(require(Permission.WRITE_CUSTOMERS))]


def customer_service(session: SessionDep, region: RegionDep) -> CustomerService:
    """The customer service on the request's session."""
    return CustomerService(session, region=region)


ServiceDep = Annotated[CustomerService, Depends(customer_service)]


class MergeIn(BaseModel):
    """Which profile to merge into the one named in the path."""

    other_id: int = Field(ge=1, description="The profile that is merged away.")
    reason: str = Field(default="merged through the API", min_length=1, max_length=200)


def customer_out(service: CustomerService, customer: Customer) -> CustomerOut:
    """A profile with its identities and the consent decisions in force."""
    out = CustomerOut.model_validate(customer)
    out.identities = [
        IdentityOut.model_validate(i) for i in service.repo.identities_of(customer.id)
    ]
    out.consents = [ConsentOut.model_validate(c) for c in service.effective_consents(customer.id)]
    return out


def _check_identity(identity: IdentityIn, *, region: str, loc: tuple[str | int, ...]) -> None:
    """Refuse an identity value that cannot be normalised, naming its place in the body.

    The service refuses it too, but names only its kind; a client needs the entry.
    """
    _, issues = normalise_identities([identity], region=region)
    if issues:
        raise field_error((*loc, "value"), issues[0])


@router.post(
    "/customers",
    status_code=201,
    response_model=CustomerOut,
    responses={
        200: {"model": CustomerOut, "description": "Matched an existing profile, now updated."}
    },
)
def create_or_update_customer(
    *,
    profile: CustomerIn,
    service: ServiceDep,
    key: Writer,
    retry: IdempotencyDep,
) -> JSONResponse:
    """Create a profile, or update the one its identities already belong to.

    201 when a profile was created, 200 when the identities matched an existing one.
    """
    for index, identity in enumerate(profile.identities):
        _check_identity(identity, region=service.region, loc=("body", "identities", index))

    def action() -> tuple[int, BaseModel]:
        result = service.create_or_update(profile, source="api", actor=key.name)
        out = customer_out(service, service.get(result.customer_id))
        return (201 if result.created else 200), out

    return retry.run(body=profile, action=action, required=False)


@router.get("/customers", response_model=Page[CustomerOut])
def search_customers(
    *,
    service: ServiceDep,
    paging: PagingDep,
    _key: Reader,
    q: Annotated[
        str | None, Query(max_length=200, description="Part of a name, city or identity.")
    ] = None,
) -> Page[CustomerOut]:
    """Active profiles, oldest first, whose name, city or any identity value contains ``q``."""
    found = service.repo.search(q, limit=paging.limit, offset=paging.offset)
    return Page(
        items=[customer_out(service, c) for c in found], limit=paging.limit, offset=paging.offset
    )


@router.get("/customers/lookup", response_model=CustomerOut)
def lookup_customer(
    *,
    service: ServiceDep,
    _key: Annotated[ApiKey, Depends(require(Permission.LOOKUP_CUSTOMERS))],
    kind: IdentityKind,
    value: Annotated[str, Query(min_length=1, max_length=320)],
    namespace: Annotated[str, Query(max_length=64, description="System of an external id.")] = "",
) -> CustomerOut:
    """The profile that owns an identity, however the value is written (404 if none)."""
    try:
        normalised = normalize(kind, value, region=service.region)
    except InvalidIdentity as exc:
        raise field_error(("query", "value"), str(exc)) from None
    identity_key = (kind, namespace if kind is IdentityKind.EXTERNAL else "", normalised)
    owner = service.repo.owners([identity_key]).get(identity_key)
    if owner is None:
        raise NotFound(f"no customer has {kind.value} {normalised}")
    return customer_out(service, service.get(owner))


@router.get("/customers/{customer_id}", response_model=CustomerOut)
def get_customer(*, customer_id: int, service: ServiceDep, _key: Reader) -> CustomerOut:
    """One profile with its newest scores; a merged-away profile is returned with
    ``merged_into_id`` set."""
    out = customer_out(service, service.get(customer_id))
    newest = AnalyticsService(service.session).scores_of(customer_id, limit=1)
    out.scores = ScoreOut.model_validate(newest[0]) if newest else None
    return out


@router.patch("/customers/{customer_id}", response_model=CustomerOut)
def update_customer(
    *, customer_id: int, fields: ProfileFields, service: ServiceDep, _key: Writer
) -> CustomerOut:
    """Change the fields sent (``null`` empties one); fields not sent stay as they are.

    ``attributes``, when sent, replaces the whole attribute object.
    """
    customer = service.update_fields(customer_id, fields.model_dump(exclude_unset=True))
    return customer_out(service, customer)


@router.post("/customers/{customer_id}/identities", status_code=201, response_model=CustomerOut)
def add_identity(
    *,
    customer_id: int,
    identity: IdentityIn,
    service: ServiceDep,
    _key: Writer,
    retry: IdempotencyDep,
) -> JSONResponse:
    """Add an identity; one that belongs to another profile is a 409 (merge them instead)."""
    _check_identity(identity, region=service.region, loc=("body",))
    service.get_active(customer_id)

    def action() -> tuple[int, BaseModel]:
        customer = service.add_identity(customer_id, identity, source="api")
        return 201, customer_out(service, customer)

    return retry.run(body=identity, action=action, required=False)


@router.get("/customers/{customer_id}/consents", response_model=list[ConsentOut])
def list_consents(
    *,
    customer_id: int,
    service: ServiceDep,
    _key: Reader,
    history: Annotated[
        bool, Query(description="Every recorded decision, oldest first, not only those in force.")
    ] = False,
) -> list[ConsentOut]:
    """The decision in force per channel and purpose, or with ``history=true`` all of them."""
    service.get(customer_id)
    consents = (
        service.repo.consents_of([customer_id])
        if history
        else service.effective_consents(customer_id)
    )
    return [ConsentOut.model_validate(c) for c in consents]


@router.post("/customers/{customer_id}/consents", status_code=201, response_model=ConsentOut)
def record_consent(
    *,
    customer_id: int,
    decision: ConsentIn,
    service: ServiceDep,
    _key: Writer,
    retry: IdempotencyDep,
) -> JSONResponse:
    """Append a decision. Earlier ones are kept; the latest by ``decided_at`` is in force."""
    service.get_active(customer_id)

    def action() -> tuple[int, BaseModel]:
        consent = service.record_consent(customer_id, decision, source="api")
        return 201, ConsentOut.model_validate(consent)

    return retry.run(body=decision, action=action, required=False)


@router.post("/customers/{customer_id}/merge", status_code=201, response_model=MergeOut)
def merge_customers(
    *,
    customer_id: int,
    merge: MergeIn,
    service: ServiceDep,
    key: Writer,
    retry: IdempotencyDep,
) -> JSONResponse:
    """Merge profile ``other_id`` into this one; the merge log allows undoing it."""

    def action() -> tuple[int, BaseModel]:
        log = service.merge(customer_id, merge.other_id, reason=merge.reason, actor=key.name)
        return 201, MergeOut.model_validate(log)

    return retry.run(body=merge, action=action, required=False)


@router.post("/merges/{merge_id}/undo", response_model=MergeOut)
def undo_merge(*, merge_id: int, service: ServiceDep, key: Writer) -> MergeOut:
    """Undo a merge: moved rows go back and both profiles are as they were."""
    return MergeOut.model_validate(service.unmerge(merge_id, actor=key.name))
