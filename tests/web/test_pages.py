"""The pages over HTTP: login with its refusals, CSRF, roles, the dashboard's figures, the
customer 360 with the message received, errors as pages, and the audit log."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from patron.api.app import create_app
from patron.kit.clock import utcnow
from patron.kit.settings import get_settings
from patron.loyalty.schemas import AdjustIn, EnrolIn
from patron.loyalty.service import LoyaltyService
from patron.models import AuditRecord, Customer, Job, User
from patron.segments.service import SegmentService
from patron.web.jobs import Report, this_process
from patron.web.service import WebService
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
    assert '<span class="value" data-testid="revenue">2,649.00</span>' in page
    assert '<th scope="row">Champions</th><td>2</td><td>40.0%</td><td>75.0%</td>' in page
    assert "Analysis as of Nov 1, 2026." in page
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
    assert "<dt>RFM</dt><dd>Champions</dd>" in page  # no "(NoneNoneNone)" without R, F, M
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


def test_a_cookie_copied_before_logout_is_refused_after_it(
    engine: Engine, site: sessionmaker[Session]
) -> None:
    with _client(engine) as first, _client(engine) as second:
        assert _log_in(first, "marketer") == "/ui/"
        copied = first.cookies.get("patron_session")
        assert copied is not None
        second.cookies.set("patron_session", copied)
        assert second.get("/ui/").status_code == 200  # the copy works while the session lives
        first.post("/ui/logout", data={"csrf": _csrf(first.get("/ui/").text)})
        refused = second.get("/ui/")
        assert (refused.status_code, refused.headers["location"]) == (303, "/ui/login")
        second.cookies.set("patron_session", copied)  # replayed as it was, still refused
        assert second.get("/ui/customers").headers["location"] == "/ui/login"
        assert _log_in(first, "marketer") == "/ui/"  # a new login starts a new generation
        assert first.get("/ui/").status_code == 200
        with site() as session:
            WebService(session).set_password("marketer", "another-horse-2", actor="admin")
            session.commit()
        assert first.get("/ui/").headers["location"] == "/ui/login"
        assert _log_in(first, "marketer", "another-horse-2") == "/ui/"
        with site() as session:
            WebService(session).disable("marketer", actor="admin")
            session.commit()
        assert first.get("/ui/").headers["location"] == "/ui/login"
    with site() as session:
        generation = session.scalars(select(User.session_generation).where(
            User.username == "marketer")).one()  # fmt: skip
        actions = session.scalars(select(AuditRecord.action).where(
            AuditRecord.target == "user:marketer").order_by(AuditRecord.id)).all()  # fmt: skip
    assert generation == 3  # the logout, the new password, the disabling
    assert actions == ["user.create", "login", "logout", "login", "user.password", "login",
                       "user.disable"]  # fmt: skip


def test_an_analyst_may_read_a_campaign_but_not_launch_it_and_changes_are_audited(
    engine: Engine, site: sessionmaker[Session]
) -> None:
    with _client(engine) as client:
        _log_in(client, "marketer")
        form = client.get("/ui/campaigns/new").text
        planned = client.post("/ui/campaigns", data={
            "csrf": _csrf(form), "name": "Welcome", "goal": "Say hello", "kind": "retention",
            "content_type": "informational", "segment": "subscribers", "channel": "email",
            "offer_kind": "none", "subject": "Hi {{ customer.first_name }}",
            "html": "<p>Hi</p>", "text": "Hi", "budget": "100", "kpi_metric": "roi",
            "kpi_expected": "1", "control_percent": "0", "timezone": "Europe/Moscow",
        })  # fmt: skip
        assert planned.status_code == 303, planned.text
        page_url = planned.headers["location"]
        campaign_id = int(page_url.rsplit("/", 1)[1])
        bad = client.post("/ui/campaigns", data={"csrf": _csrf(form), "name": "x", "goal": "y",
                                                  "kind": "nonsense", "budget": "1"})  # fmt: skip
        assert bad.status_code == 422
        assert "kind: Input should be" in bad.text
        client.post("/ui/logout", data={"csrf": _csrf(client.get("/ui/").text)})
        _log_in(client, "analyst")
        page = client.get(page_url).text
        assert "Say hello" in page and "Launch</button>" not in page
        refused = client.post(f"/ui/campaigns/{campaign_id}/launch", data={"csrf": _csrf(page)})
        assert refused.status_code == 403
        assert "role analyst may not campaigns:launch" in refused.text
        client.post("/ui/logout", data={"csrf": _csrf(page)})
        _log_in(client, "marketer")
        page = client.get(page_url).text
        launched = client.post(f"/ui/campaigns/{campaign_id}/launch", data={"csrf": _csrf(page)})
        assert launched.status_code == 303
        assert 'data-testid="status">running<' in client.get(page_url).text
    with site() as session:
        rows = session.scalars(select(AuditRecord).order_by(AuditRecord.id)).all()
    assert [(r.actor, r.action) for r in rows if r.action.startswith("campaign.")] == [
        ("marketer", "campaign.create"), ("marketer", "campaign.launch")]  # fmt: skip


def test_the_segment_builder_counts_a_rule_and_refuses_a_bad_one(
    engine: Engine, site: sessionmaker[Session]
) -> None:
    with _client(engine) as client:
        _log_in(client, "analyst")
        form = client.get("/ui/segments/new").text
        token = _csrf(form)
        rule = '{"kind": "all", "conditions": [{"kind": "profile", "field": "city", "op": "eq", "value": "Moscow"}]}'
        counted = client.post("/ui/segments/count", data={"rule": rule, "csrf": token})
        assert counted.json()["customers"] == 3
        wrong = client.post("/ui/segments/count", data={"rule": '{"kind": "profile", '
                            '"field": "shoe_size", "value": 1}', "csrf": token})  # fmt: skip
        assert wrong.status_code == 422
        assert "unknown profile field 'shoe_size'" in wrong.json()["error"]
        saved = client.post("/ui/segments", data={"name": "moscow", "rule": rule, "csrf": token})
        assert saved.status_code == 303, saved.text[-600:]
        page = client.get(saved.headers["location"]).text
        assert 'data-testid="segment-count">3<' in page
        exported = client.get(saved.headers["location"] + "/export.csv")
    assert exported.headers["content-type"].startswith("text/csv")
    assert len(exported.text.strip().splitlines()) == 4  # the header and three customers


def test_a_manual_adjustment_needs_a_reason_is_applied_once_and_never_overdraws(
    engine: Engine, site: sessionmaker[Session]
) -> None:
    card = "2000000000008"
    with site() as session:
        LoyaltyService(session).enrol(EnrolIn(customer_id=1, card_number=card), actor="test")
        session.commit()
    with _client(engine) as client:
        _log_in(client, "analyst")
        page = client.get("/ui/loyalty/accounts", params={"card": card}).text
        refused = client.post(f"/ui/loyalty/accounts/{card}/adjust", data={
            "csrf": _csrf(page), "points": "100", "reason": "goodwill", "operation": "op-000001"})  # fmt: skip
        assert refused.status_code == 403
        client.post("/ui/logout", data={"csrf": _csrf(page)})
        _log_in(client, "marketer")
        page = client.get("/ui/loyalty/accounts", params={"card": card}).text
        operation = re.search(r'name="operation" value="([^"]+)"', page)
        assert operation is not None
        form = {"csrf": _csrf(page), "points": "100", "reason": "goodwill",
                "operation": operation.group(1)}  # fmt: skip
        for _ in range(2):  # a double submit is one adjustment
            done = client.post(f"/ui/loyalty/accounts/{card}/adjust", data=form)
            assert done.status_code == 303
        page = client.get("/ui/loyalty/accounts", params={"card": card}).text
        assert '<strong data-testid="available">100</strong>' in page
        no_reason = client.post(f"/ui/loyalty/accounts/{card}/adjust",
                                data=form | {"reason": "", "operation": "op-000002"})  # fmt: skip
        assert no_reason.status_code == 422
        assert "reason: String should have at least 3 characters" in no_reason.text
        overdraw = client.post(f"/ui/loyalty/accounts/{card}/adjust",
                               data=form | {"points": "-500", "operation": "op-000003"})  # fmt: skip
        assert overdraw.status_code == 422
        assert f"cannot take 500 points, card {card} has 100 available" in overdraw.text
        program = client.get("/ui/loyalty").text
        assert '<span class="value" data-testid="liability">' in program
        missing = client.get("/ui/loyalty/accounts", params={"card": "999999"})
        assert missing.status_code == 404
    with site() as session:
        adjusted = session.scalars(
            select(AuditRecord).where(AuditRecord.action == "loyalty.adjust")
        ).all()
    assert [(r.actor, r.details["points"]) for r in adjusted] == [
        ("marketer", 100),
    ]


def test_merge_and_unmerge_ask_for_confirmation_first(
    engine: Engine, site: sessionmaker[Session]
) -> None:
    with _client(engine) as client:
        _log_in(client, "marketer")
        page = client.get("/ui/customers/5").text
        asked = client.post("/ui/customers/5/merge",
                            data={"csrf": _csrf(page), "other": "8", "reason": "same person"})  # fmt: skip
        assert asked.status_code == 200
        assert "Merge #8 into #5?" in asked.text
        assert client.get("/ui/customers/8").text.count("Merged into") == 0  # nothing yet
        done = client.post("/ui/customers/5/merge", data={
            "csrf": _csrf(page), "other": "8", "reason": "same person", "confirm": "yes"})  # fmt: skip
        assert done.status_code == 303
        assert 'Merged into <a href="/ui/customers/5">#5</a>' in client.get("/ui/customers/8").text
        page = client.get("/ui/customers/5").text
        merge_id = re.search(r'/ui/customers/5/unmerge/(\d+)"', page)
        assert merge_id is not None
        url = f"/ui/customers/5/unmerge/{merge_id.group(1)}"
        assert "Undo merge" in client.post(url, data={"csrf": _csrf(page)}).text
        undone = client.post(url, data={"csrf": _csrf(page), "confirm": "yes"})
        assert undone.status_code == 303
        assert "Merged into" not in client.get("/ui/customers/8").text
    with site() as session:
        actions = session.scalars(select(AuditRecord.action).where(
            AuditRecord.action.like("customer.%")).order_by(AuditRecord.id)).all()  # fmt: skip
    assert actions == ["customer.merge", "customer.unmerge"]


def test_the_segment_page_shows_the_spend_band_migration_of_its_members(
    engine: Engine, site: sessionmaker[Session]
) -> None:
    with site() as session:
        segments = SegmentService(session)
        subscribers = segments.find("subscribers")
        # on 15 May Anna and Dina had granted email consent (Boris had withdrawn)
        segments.build(subscribers, at=datetime(2026, 5, 15, tzinfo=UTC))
        session.commit()
        segment_id = subscribers.id
    with _client(engine) as client:
        _log_in(client, "analyst")
        page = client.get(f"/ui/segments/{segment_id}").text
    # both were in band 10 at run 2 (1 June); run 10 (1 November) scored no one
    assert "Members on Jun 1, 2026 by spend band then (rows) and on Nov 1, 2026" in page
    assert '<th scope="row">10</th><td>2</td>' in page


def test_a_public_server_with_the_default_secret_refuses_logins(
    engine: Engine, site: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATRON_PUBLIC_URL", "http://crm.example.com")
    monkeypatch.delenv("PATRON_SECRET_KEY", raising=False)
    get_settings.cache_clear()
    try:
        with _client(engine) as client:
            refused = _log_in(client, "admin")
            odd = client.post("/ui/login", data={"username": "a", "password": "b", "csrf": "é"})
    finally:
        get_settings.cache_clear()
    assert "still uses the default PATRON_SECRET_KEY" in refused
    assert odd.status_code == 403  # a token that is not even ASCII is refused, not a crash


def test_russian_texts_and_formats_follow_the_browser_or_the_choice_made(
    engine: Engine, site: sessionmaker[Session]
) -> None:
    with _client(engine) as client:
        _log_in(client, "analyst")
        russian = client.get("/ui/", headers={"Accept-Language": "ru-RU,ru;q=0.9,en;q=0.5"}).text
        assert '<html lang="ru">' in russian
        assert '<span class="label">Выручка</span>' in russian
        assert 'data-testid="revenue">2\xa0649,00</span>' in russian
        assert "Анализ на 1 нояб. 2026\u202fг.</p>" in russian  # no second full stop
        chosen = client.post("/ui/language", data={"lang": "en", "csrf": _csrf(russian),
                                                   "back": "https://evil.example/"})  # fmt: skip
        assert chosen.headers["location"] == "/ui/"  # never off the site
        english = client.get("/ui/", headers={"Accept-Language": "ru"}).text
    assert '<span class="label">Revenue</span>' in english


def test_rules_are_edited_as_data_into_a_new_version_and_the_admin_reads_the_audit_log(
    engine: Engine, site: sessionmaker[Session]
) -> None:
    with _client(engine) as client:
        _log_in(client, "marketer")
        page = client.get("/ui/loyalty").text
        assert client.get("/ui/audit").status_code == 403
        rules = "name: Spring rewards\ntiers:\n  - {name: Basic, threshold: 0}\n"
        saved = client.post("/ui/loyalty/rules", data={"csrf": _csrf(page), "rules": rules})
        assert saved.status_code == 303, saved.text[-600:]
        assert "Loyalty: Spring rewards" in client.get("/ui/loyalty").text
        bad = client.post("/ui/loyalty/rules", data={"csrf": _csrf(page),
                                                      "rules": "point_value: -1"})  # fmt: skip
        assert bad.status_code == 422
        assert "point_value: Input should be greater than 0" in bad.text
        client.post("/ui/logout", data={"csrf": _csrf(page)})
        _log_in(client, "admin")
        audit = client.get("/ui/audit").text
    assert "<td>marketer</td><td>loyalty.rules</td><td>program:1</td>" in audit


def _finished(client: TestClient, *, seconds: float = 60) -> dict[str, object]:
    """Wait for the newest job to end (not a timing assertion: a bound on waiting)."""
    page = client.get("/ui/jobs").text
    found = re.search(r'data-job="([^"]+)"', page)
    assert found is not None
    deadline = time.monotonic() + seconds
    while True:
        state: dict[str, object] = client.get(f"/ui/jobs/{found.group(1)}").json()
        if state["status"] != "running" or time.monotonic() > deadline:
            return state
        time.sleep(0.1)


def test_a_file_imported_from_the_page_reports_its_progress_and_rejects(
    engine: Engine, site: sessionmaker[Session]
) -> None:
    body = b"email,first_name,city\nnew.one@example.ru,Olga,Tver\nnot-an-email,Petr,Tula\n"
    with _client(engine) as client:
        _log_in(client, "analyst")
        assert "Import a file" not in client.get("/ui/jobs").text  # analysts do not import
        client.post("/ui/logout", data={"csrf": _csrf(client.get("/ui/").text)})
        _log_in(client, "marketer")
        page = client.get("/ui/jobs").text
        started = client.post("/ui/jobs/import", data={"csrf": _csrf(page), "kind": "customers"},
                              files={"upload": ("people.csv", body, "text/csv")})  # fmt: skip
        assert started.status_code == 303
        state = _finished(client)
    assert state["status"] == "finished", state
    assert state["done"] == 1.0
    result = str(state["result"])
    # the malformed email is dropped from its row (and reported), the person is kept
    assert result.startswith("2 rows read: 2 imported, 0 merged, 0 rejected; rejects in ")
    with site() as session:
        olga = session.scalars(select(Customer).where(Customer.first_name == "Olga")).one()
        assert olga.city == "Tver"


def test_an_analysis_run_from_the_page_shows_why_it_could_not_finish(
    engine: Engine, site: sessionmaker[Session]
) -> None:
    with _client(engine) as client:
        _log_in(client, "analyst")
        page = client.get("/ui/jobs").text
        assert client.post("/ui/jobs/analysis", data={"csrf": _csrf(page)}).status_code == 303
        state = _finished(client, seconds=120)
        listing = client.get("/ui/jobs").text
    # the small base's purchases end in July: the churn model has no labelled window now
    assert state["status"] == "failed", state
    assert str(state["result"]).startswith("the training label window ends ")
    assert str(state["step"]) == "CLV models"
    assert "failed: the training label window ends" in listing


def test_coupon_pools_and_mini_programs_are_created_from_the_program_page(
    engine: Engine, site: sessionmaker[Session]
) -> None:
    with site() as session:
        # card holders: Anna (a subscriber) and Boris (who withdrew his consent)
        for customer, card in ((1, "2000000000008"), (2, "2000000000016")):
            LoyaltyService(session).enrol(EnrolIn(customer_id=customer, card_number=card),
                                          actor="test")  # fmt: skip
        session.commit()
    with _client(engine) as client:
        _log_in(client, "marketer")
        page = client.get("/ui/loyalty").text
        pool = client.post("/ui/loyalty/coupon-pools", data={
            "csrf": _csrf(page), "name": "Spring 10", "discount_percent": "10",
            "valid_from": "2027-03-01T00:00:00+03:00", "uses_per_code": "1"})  # fmt: skip
        assert pool.status_code == 303
        bad = client.post("/ui/loyalty/mini-programs", data={
            "csrf": _csrf(page), "name": "Top spenders", "segment": "subscribers",
            "goal": "-5", "reward_points": "500", "starts_at": "2027-03-01T00:00:00+03:00",
            "ends_at": "2027-06-01T00:00:00+03:00"})  # fmt: skip
        assert bad.status_code == 422
        assert "goal: Input should be greater than 0" in bad.text
        mini = client.post("/ui/loyalty/mini-programs", data={
            "csrf": _csrf(page), "name": "Top spenders", "segment": "subscribers",
            "goal": "5000", "reward_points": "500", "starts_at": "2027-03-01T00:00:00+03:00",
            "ends_at": "2027-06-01T00:00:00+03:00", "start": "yes"})  # fmt: skip
        assert mini.status_code == 303, mini.text[-400:]
        program = client.get("/ui/loyalty").text
    assert '<th scope="row">Spring 10</th>' in program
    row = program.split('<th scope="row">Top spenders</th>')[1].split("</tr>")[0]
    assert row.startswith("<td>spend 5000.00</td><td>500 points</td>")
    assert row.endswith("<td>1</td>")  # the subscribers with a card, taken at once: Anna


def _until(client: TestClient, url: str, wanted: dict[str, object]) -> dict[str, object]:
    """Poll ``url`` until its JSON is ``wanted`` (a bound on waiting, not a timing check)."""
    deadline = time.monotonic() + 20
    while True:
        state: dict[str, object] = client.get(url).json()
        if state == wanted or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


def test_a_job_started_in_one_server_process_is_seen_with_its_progress_from_another(
    engine: Engine, site: sessionmaker[Session]
) -> None:
    release = threading.Event()

    def work(report: Report) -> str:
        report(0.4, "halfway")
        release.wait(30)
        return "12 rows imported"

    running, other = create_app(engine), create_app(engine)
    with (
        TestClient(running, follow_redirects=False),
        TestClient(other, follow_redirects=False) as client,
    ):
        _log_in(client, "analyst")
        job_id = running.state.jobs.start("import", "import of a.csv (customers)", "marketer", work)
        url = f"/ui/jobs/{job_id}"
        halfway = {"status": "running", "done": 0.4, "step": "halfway", "result": ""}
        assert _until(client, url, halfway) == halfway
        row = client.get("/ui/jobs").text.split(f'data-job="{job_id}"')[1].split("</tr>")[0]
        assert "<td>import of a.csv (customers)</td><td>marketer</td>" in row
        assert '<progress max="1" value="0.4"' in row
        release.set()
        finished = {"status": "finished", "done": 1.0, "step": "done", "result": "12 rows imported"}
        assert _until(client, url, finished) == finished
    with site() as session:
        stored = session.get(Job, job_id)
        assert stored is not None
        assert stored.finished_at is not None
        assert stored.owner == this_process()


def test_a_running_job_whose_process_fell_silent_shows_as_stalled(
    engine: Engine, site: sessionmaker[Session]
) -> None:
    now = utcnow()
    with site() as session:
        for job_id, beat in (("quiet", now - timedelta(seconds=61)), ("busy", now)):
            session.add(Job(id=job_id, kind="analysis", label=f"analysis {job_id}",
                            actor="analyst", owner="gone-host:4242", started_at=now,
                            heartbeat_at=beat, done=0.25, step="RFM"))  # fmt: skip
        session.commit()
    with _client(engine) as client:
        _log_in(client, "analyst")
        quiet = client.get("/ui/jobs/quiet").json()
        busy = client.get("/ui/jobs/busy").json()
        missing = client.get("/ui/jobs/nope")
        page = client.get("/ui/jobs").text
    assert quiet == {"status": "stalled", "done": 0.25, "step": "RFM", "result": ""}
    assert busy["status"] == "running"
    assert missing.status_code == 404
    assert "job nope does not exist" in missing.text
    assert 'data-job="quiet" data-status="stalled"' in page


class _Visible(HTMLParser):
    """The text a person sees or hears: text outside scripts, and labels in attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._hidden += tag in ("script", "style")
        self.parts += [v for k, v in attrs if k in ("aria-label", "title") and v]

    def handle_endtag(self, tag: str) -> None:
        self._hidden -= tag in ("script", "style")

    def handle_data(self, data: str) -> None:
        if not self._hidden and data.strip():
            self.parts.append(data.strip())


def _visible(page: str) -> str:
    parser = _Visible()
    parser.feed(page)
    return "\n".join(parser.parts)


# per page: English headings and labels that must be gone, Russian texts that must be there
RUSSIAN_PAGES: dict[str, tuple[list[str], list[str]]] = {
    "/ui/": (["Dashboard", "Revenue", "Spend groups", "Audit log", "Log out"],
             ["Сводка", "Выручка", "Группы по тратам", "Журнал аудита", "Выйти",
              "Завершает все ваши сеансы во всех браузерах", "под угрозой ухода"]),
    "/ui/customers?q=Moscow": (["Name, city, email, phone or card", "City"],
                               ["Имя, город, email, телефон или карта", "Город", "найдено"]),
    "/ui/customers/1": (["Identities", "Scores", "Consents and their history", "Messages",
                         "Orders", "Events", "Merges", "Latest ledger entries", "Merge customer #"],
                        ["Идентификаторы", "Согласия и их история", "Сообщения", "Заказы",
                         "События", "Объединения", "Последние операции по счёту",
                         "Объединить с клиентом №", "дано", "маркетинг", "отправлено",
                         "Карта 2000000000008 · уровень", "100 баллов (0 ожидают начисления)"]),
    "/ui/segments": (["New segment", "Last build", "Members then"],
                     ["Новый сегмент", "Последний расчёт", "Участников тогда"]),
    "/ui/segments/new": (["Conditions", "Customers selected", "The rule as data", "Save segment"],
                         ["Условия", "Отобрано клиентов", "Правило в виде данных",
                          "Сохранить сегмент"]),
    "/ui/segments/1": (["Customers now", "Rule", "Export CSV", "Record membership now",
                        "Spend-band migration", "Membership over time"],
                       ["Клиентов сейчас", "Выгрузить в CSV", "Зафиксировать состав сейчас",
                        "Переходы между группами трат", "Состав во времени"]),
    "/ui/campaigns": (["Plan a campaign", "Launched"],
                      ["Кампании", "Запланировать кампанию", "Запущена", "удержание"]),
    "/ui/campaigns/new": (["Goal: what is the campaign for?", "Control group, % held out",
                           "Budget", "Save the plan", "Next", "Back"],
                          ["1. Цель: зачем эта кампания?", "Сегмент", "Бюджет",
                           "Контрольная группа, % исключённых из рассылки", "Сохранить план",
                           "Далее", "Назад", "инкрементальная выручка"]),
    "/ui/campaigns/1": (["Audience", "Report: treatment against control", "Plan against actual",
                         "Trail", "Cancel"],
                        ["Аудитория", "Отчёт: целевая группа против контрольной",
                         "Отобрано 3: целевая группа 2, контрольная группа 0.",
                         "KPI «инкрементальная выручка», план", "Факт", "н/д", "План и факт",
                         "Бюджет", "5\xa0000,00 RUB", "История изменений"]),
    "/ui/loyalty": (["Look up a card", "Points outstanding", "Tiers", "Coupon pools",
                     "Mini-programs", "New coupon pool"],
                    ["Найти карту", "Баллов на счетах", "Уровни", "Пулы купонов",
                     "Мини-программы", "Новый пул купонов", "Обязательства"]),
    "/ui/loyalty/accounts?card=2000000000008": (
        ["Loyalty account", "Manual adjustment", "Ledger", "Tier history"],
        ["Счёт участника", "Ручная корректировка", "Операции по счёту", "История уровней",
         "корректировка", "Причина (обязательно)"]),
    "/ui/jobs": (["Run the analysis", "Import a file", "Recent jobs"],
                 ["Задачи", "Запустить анализ", "Загрузить файл", "Последние задачи"]),
    "/ui/audit": (["When", "Who", "Details"], ["Журнал аудита", "Когда", "Кто", "Подробности"]),
    "/ui/customers/999": (["Something is wrong", "Back to the dashboard"],
                          ["Что-то не так", "Вернуться к сводке"]),
}  # fmt: skip


def test_every_page_speaks_russian_to_an_admin(engine: Engine, site: sessionmaker[Session]) -> None:
    with site() as session:
        LoyaltyService(session).enrol(EnrolIn(customer_id=1, card_number="2000000000008"),
                                      actor="test")  # fmt: skip
        LoyaltyService(session).adjust("2000000000008", AdjustIn(points=100, reason="goodwill"),
                                       key="op-ru-1", actor="test")  # fmt: skip
        SegmentService(session).build(SegmentService(session).find("subscribers"))
        session.commit()
    with _client(engine) as client:
        _log_in(client, "admin")
        page = client.get("/ui/").text
        client.post("/ui/language", data={"lang": "ru", "csrf": _csrf(page), "back": "/ui/"})
        seen = {url: _visible(client.get(url).text) for url in RUSSIAN_PAGES}
        merge = client.post("/ui/customers/5/merge",
                            data={"csrf": _csrf(page), "other": "8", "reason": "один человек"})  # fmt: skip
        client.post("/ui/customers/5/merge", data={"csrf": _csrf(page), "other": "8",
                                                   "reason": "один человек", "confirm": "yes"})  # fmt: skip
        found = re.search(r'/ui/customers/5/unmerge/(\d+)"', client.get("/ui/customers/5").text)
        assert found is not None
        unmerge = client.post(f"/ui/customers/5/unmerge/{found.group(1)}",
                              data={"csrf": _csrf(page)})  # fmt: skip
        client.post("/ui/logout", data={"csrf": _csrf(page)})
        login = client.get("/ui/login").text
    seen["merge"] = _visible(merge.text)
    seen["unmerge"] = _visible(unmerge.text)
    seen["login"] = _visible(login)
    expected = RUSSIAN_PAGES | {
        "merge": (["Confirm the merge", "Kept", "Merged in", "Cancel"],
                  ["Объединить №8 с №5?", "Подтвердите объединение", "Отменить"]),
        "unmerge": (["Confirm the unmerge", "Undo merge"],
                    [f"Отменить объединение {found.group(1)}?", "Подтвердите разъединение"]),
        "login": (["Log in", "Username", "Password"], ["Войти", "Имя пользователя", "Пароль"]),
    }  # fmt: skip
    for name, (english, russian) in expected.items():
        text = seen[name]
        assert [e for e in english if e in text] == [], name
        assert [r for r in russian if r not in text] == [], name
