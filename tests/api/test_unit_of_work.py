"""The request's unit of work: committed when the endpoint returns, rolled back when it
raises, for plain endpoints and for the hot path's one trip to the thread pool; a row a
unique index refuses is a 409 naming the index."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from patron.api.deps import SessionDep, in_one_trip
from patron.api.errors import install_error_handlers
from patron.api.keys import create_api_key
from patron.kit.db import make_sessionmaker
from patron.models import ApiKey, Role
from tests.fixtures.api import count_rows


class Refused(Exception):
    """Raised by an endpoint after it has written."""


def _app(engine: Engine) -> FastAPI:
    app = FastAPI()
    app.state.sessionmaker = make_sessionmaker(engine)
    install_error_handlers(app)

    @app.post("/plain/{name}")
    def plain(name: str, session: SessionDep) -> dict[str, str]:
        create_api_key(session, name=name, role=Role.POS)
        session.flush()
        if name.startswith("bad"):
            raise Refused(name)
        return {"made": name}

    @app.post("/trip/{name}")
    async def trip(name: str, session: SessionDep) -> dict[str, str]:
        def work() -> dict[str, str]:
            create_api_key(session, name=name, role=Role.POS)
            session.flush()
            if name.startswith("bad"):
                raise Refused(name)
            return {"made": name}

        return await in_one_trip(session, work)

    @app.post("/twice/{name}")
    async def twice(name: str, session: SessionDep) -> dict[str, str]:
        # as two requests that both checked the prefix was free, then both wrote it
        def work() -> dict[str, str]:
            first, _ = create_api_key(session, name=name, role=Role.POS)
            session.add(ApiKey(name=name, prefix=first.prefix, secret_hash="", role=Role.POS))
            session.flush()
            return {"made": name}

        return await in_one_trip(session, work)

    @app.get("/idle")
    async def idle(request: Request, session: SessionDep) -> dict[str, bool]:
        # no statement: the session never opened a transaction
        return {"open": session.in_transaction()}

    return app


@pytest.mark.parametrize("route", ["plain", "trip"])
def test_a_request_that_returns_commits_and_one_that_raises_rolls_back(
    engine: Engine, route: str
) -> None:
    with TestClient(_app(engine)) as client:
        # when one call returns and the next raises after writing
        assert client.post(f"/{route}/till-1").json() == {"made": "till-1"}
        with pytest.raises(Refused, match="bad-2"):
            client.post(f"/{route}/bad-2")
        # then only the first call's row is in the store
        assert count_rows(engine, ApiKey) == 1
        assert client.get("/idle").json() == {"open": False}


def test_a_row_a_unique_index_refuses_is_a_conflict_and_nothing_is_kept(engine: Engine) -> None:
    with TestClient(_app(engine)) as client:
        answer = client.post("/twice/till-1")
    what = "uq_api_keys_prefix" if engine.dialect.name == "postgresql" else "api_keys.prefix"
    assert (answer.status_code, answer.json()) == (409, {
        "error": f"a concurrent request wrote the same record first ({what}); retry the request"
    })  # fmt: skip
    assert count_rows(engine, ApiKey) == 0
