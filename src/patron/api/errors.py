"""Errors as JSON, mapped in one place.

Every ``PatronError`` becomes ``{"error": message}`` with the status the error carries. A
unique index refusing a row is a 409: two requests raced to write the same thing (the same
receipt from two tills, say), the checks of each having run before the other wrote.
A request that does not fit its schema becomes 422 with the fields named, the way a client
can show them next to its own inputs: ``{"error": ..., "fields": [{"field", "message"}]}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException

from patron.kit.db import duplicate_key_name, is_duplicate_key
from patron.kit.errors import PatronError, Unauthorized

_UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "ApiKey"}


class ErrorOut(BaseModel):
    """The body of every error answer."""

    error: str


class FieldErrorOut(BaseModel):
    """One field that was wrong, as ``body.identities.0.value``, and what was wrong."""

    field: str
    message: str


class ValidationErrorOut(ErrorOut):
    """The body of a 422: the summary in ``error`` and each field in ``fields``."""

    fields: list[FieldErrorOut]


def field_name(loc: Sequence[str | int]) -> str:
    """A location such as ``("body", "identities", 0, "kind")`` as ``body.identities.0.kind``."""
    return ".".join(str(part) for part in loc)


def field_error(loc: Sequence[str | int], message: str) -> RequestValidationError:
    """A 422 naming one field, for checks that only code (not the schema) can make."""
    return RequestValidationError([{"loc": tuple(loc), "msg": message, "type": "value_error"}])


def validation_body(errors: Sequence[Any]) -> dict[str, Any]:
    """The JSON body of a 422: one line for people, and the fields for programs."""
    fields = [{"field": field_name(e["loc"]), "message": e["msg"]} for e in errors]
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return {"error": f"invalid request: {summary}", "fields": fields}


async def _patron_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PatronError)
    headers = _UNAUTHORIZED_HEADERS if isinstance(exc, Unauthorized) else None
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(validation_body(exc.errors()), status_code=422)


async def _integrity_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, IntegrityError)
    if not is_duplicate_key(exc):
        raise exc  # a broken rule of the schema is a fault of the code: a 500
    what = duplicate_key_name(exc)
    message = f"a concurrent request wrote the same record first ({what}); retry the request"
    return JSONResponse({"error": message}, status_code=409)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    # unknown paths and wrong methods come from the router, not from Patron code
    assert isinstance(exc, HTTPException)
    return JSONResponse(
        {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the mapping of errors to JSON responses on ``app``."""
    app.add_exception_handler(PatronError, _patron_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
