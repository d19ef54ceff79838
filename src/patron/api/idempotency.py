"""Replaying retried writes: the ``Idempotency-Key`` header.

A client that did not hear the answer to a write sends it again with the same key. The
first answer is stored in the same transaction as the write, so the retry gets that answer
back (same status, same body) and nothing is written twice. The same key with a different
request is a client bug and gets 409.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from patron.api.deps import SessionDep, current_key
from patron.kit.errors import Conflict, PatronError
from patron.models import ApiKey, IdempotencyRecord

REPLAYED_HEADER = "Idempotent-Replayed"

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="A client-chosen key; a retry with the same key and body is answered "
        "with the first answer instead of being done again.",
    ),
]
"""The header as an endpoint parameter."""

Action = Callable[[], tuple[int, BaseModel]]
"""The write itself: returns the status code and the body of its answer."""


class MissingIdempotencyKey(PatronError):
    """A write that must be safe to retry came without an ``Idempotency-Key``."""

    status = 400


def fingerprint(request: Request, body: BaseModel) -> str:
    """SHA-256 of the method, path and parsed body, so formatting differences do not count."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    text = f"{request.method} {request.url.path}\n{canonical}"
    return hashlib.sha256(text.encode()).hexdigest()


class Idempotency:
    """The retry context of one write: its session, request, caller and ``Idempotency-Key``."""

    def __init__(
        self, session: Session, request: Request, *, api_key: ApiKey, key: str | None
    ) -> None:
        self.session = session
        self.request = request
        self.api_key = api_key
        self.key = key

    def run(self, *, body: BaseModel, action: Action, required: bool) -> JSONResponse:
        """Run ``action`` once per ``(API key, Idempotency-Key)``; replay its answer on retries.

        Without a key the action simply runs, unless ``required``, which gives 400.
        """
        if self.key is None:
            if required:
                raise MissingIdempotencyKey("this request needs an Idempotency-Key header")
            status, answer = action()
            return JSONResponse(answer.model_dump(mode="json"), status_code=status)

        request_hash = fingerprint(self.request, body)
        stored = self.session.scalars(
            select(IdempotencyRecord).where(
                IdempotencyRecord.api_key_id == self.api_key.id, IdempotencyRecord.key == self.key
            )
        ).one_or_none()
        if stored is not None:
            if stored.request_hash != request_hash:
                raise Conflict("Idempotency-Key reused with a different request")
            return JSONResponse(
                stored.response,
                status_code=stored.status_code,
                headers={REPLAYED_HEADER: "true"},
            )

        # Claim the key before doing the work: a concurrent twin blocks on the unique index
        # until this transaction ends, then fails here instead of writing a second time.
        record = IdempotencyRecord(
            api_key_id=self.api_key.id,
            key=self.key,
            request_hash=request_hash,
            status_code=0,
            response={},
        )
        self.session.add(record)
        try:
            self.session.flush()
        except IntegrityError:
            raise Conflict(
                "a request with this Idempotency-Key was being processed at the same time; retry it"
            ) from None

        status, answer = action()
        record.status_code = status
        record.response = answer.model_dump(mode="json")
        self.session.flush()
        return JSONResponse(record.response, status_code=status)


def idempotency(
    request: Request,
    session: SessionDep,
    api_key: Annotated[ApiKey, Depends(current_key)],
    key: IdempotencyKey = None,
) -> Idempotency:
    """The retry context of the request, for endpoints that write."""
    return Idempotency(session, request, api_key=api_key, key=key)


IdempotencyDep = Annotated[Idempotency, Depends(idempotency)]
"""An endpoint parameter; declare it after the permission check, which must run first."""
