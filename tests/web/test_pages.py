"""The pages over HTTP: login with its refusals, CSRF, roles, the dashboard's figures, the
customer 360 with the message received, errors as pages, and the audit log."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from patron.api.app import create_app
from patron.models import AuditRecord
from tests.web.conftest import PASSWORD


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


def _client(engine: Engine) -> TestClient:
    return TestClient(create_app(engine), base_url="http://testserver", follow_redirects=False)


def _log_in(client: TestClient, username: str, password: str = PASSWORD) -> str:
    form = client.get("/ui/login")
    answer = client.post("/ui/login", data={"username": username, "password": password,
                                            "csrf": _csrf(form.text)})  # fmt: skip
    return str(answer.headers.get("location", answer.text))


def test_login_refuses_a_wrong_password_and_a_form_without_its_token(
    engine: Engine, site: sessionmaker[Session]
) -> None:
    with _client(engine) as client:
        assert client.get("/ui/").headers["location"] == "/ui/login"
        refused = _log_in(client, "marketer", "wrong-password!")
        assert "wrong username or password" in refused
        assert "wrong username or password" in _log_in(client, "nobody")
        forged = client.post("/ui/login", data={"username": "marketer", "password": PASSWORD})
        assert forged.status_code == 403
        assert "did not come from this site" in forged.text
        assert "Traceback" not in forged.text
        assert _log_in(client, "marketer") == "/ui/"
        cookie = client.cookies.get("patron_session")
        assert cookie is not None
    with site() as session:
        records = session.scalars(select(AuditRecord.action).order_by(AuditRecord.id)).all()
    assert records == ["user.create", "user.create", "user.create", "login"]


def test_the_dashboard_shows_counts_revenue_tables_and_the_running_campaign(
    engine: Engine, site: sessionmaker[Session]
) -> None:
    with _client(engine) as client:
        _log_in(client, "analyst")
        page = client.get("/ui/").text
    # seven active profiles (Fedor is merged); turnover of known customers net of returns:
    # Anna 100 + 300, Boris 500 - 500, Vera 50, Dina 1,000 + 200 + 999
    assert '<span class="value" data-testid="customers">7</span>' in page
    assert '<span class="value" data-testid="revenue">2\u202f649.00</span>' in page
    assert '<th scope="row">Champions</th><td>2</td><td>40.0%</td><td>75.0%</td>' in page
    assert "Analysis as of 2026-11-01." in page
    assert '<th scope="row">Spring sale</th><td>completed' not in page


def test_the_customer_360_shows_identities_consents_and_the_message_received(
    engine: Engine, site: sessionmaker[Session]
) -> None:
    with _client(engine) as client:
        _log_in(client, "marketer")
        found = client.get("/ui/customers", params={"q": "anna@"}).text
        assert '<a href="/ui/customers/1">Anna</a>' in found
        page = client.get("/ui/customers/1").text
        missing = client.get("/ui/customers/999")
    assert "email: anna@example.ru" in page
    assert "<td>Spring sale</td><td>email</td><td>sent</td><td>Anna, 15% off for you</td>" in page
    assert "<td>email</td><td>marketing</td><td>granted</td>" in page
    assert missing.status_code == 404
    assert "customer 999 does not exist" in missing.text
    assert "Traceback" not in missing.text


def test_logging_out_ends_the_session(engine: Engine, site: sessionmaker[Session]) -> None:
    with _client(engine) as client:
        _log_in(client, "admin")
        page = client.get("/ui/").text
        out = client.post("/ui/logout", data={"csrf": _csrf(page)})
        assert out.headers["location"] == "/ui/login"
        assert client.get("/ui/").headers["location"] == "/ui/login"
