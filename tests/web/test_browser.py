"""The web interface in Debian's Chromium through Playwright: log in, read the dashboard,
find a customer and see the message they received; each page is screenshotted into
``test-artifacts/web/`` and checked with axe-core for serious accessibility violations."""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from patron.api.app import create_app
from patron.channels.email import SmtpSettings, SmtpTransport
from patron.dispatch.tasks import run_worker
from patron.kit.settings import Settings
from patron.web.views import VENDOR
from tests.fixtures.smtp import Inbox, smtp_server
from tests.web.conftest import PASSWORD

__all__ = ["smtp_server"]

CHROMIUM = Path("/usr/bin/chromium")
AXE = VENDOR / "axe-core" / "axe.min.js"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"


def _needed() -> None:
    missing = [str(p) for p in (CHROMIUM, AXE) if not p.exists()]
    if missing:
        reason = (f"the browser test needs {' and '.join(missing)}: `python3 dev.py test` installs "
                  "Debian's chromium (as root) and the npm assets")  # fmt: skip
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def server(
    engine: Engine, site: sessionmaker[Session], smtp_server: tuple[Inbox, int]
) -> Iterator[str]:
    """The app on a free port, with a sending worker delivering to a real SMTP server."""
    _needed()
    _, smtp_port = smtp_server
    stop = threading.Event()
    transport = SmtpTransport(SmtpSettings(host="127.0.0.1", port=smtp_port, connections=2,
                                           timeout=10))  # fmt: skip
    settings = Settings(public_url="http://127.0.0.1", secret_key="a-test-secret-of-enough-length")
    sender = threading.Thread(
        target=run_worker, args=(site, transport),
        kwargs={"settings": settings, "poll_seconds": 0.2, "stop": stop}, daemon=True,
    )  # fmt: skip
    sender.start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(engine), host="127.0.0.1", port=port, log_level="warning")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not running.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    running.should_exit = True
    stop.set()
    thread.join(timeout=10)
    sender.join(timeout=10)


def _shots(name: str) -> Path:
    """An empty folder for one test's screenshots."""
    shots = ARTIFACTS / name
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    return shots


def _chromium(playwright: Any) -> Any:
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
    )


def _serious(page: Any) -> list[str]:
    page.add_script_tag(path=str(AXE))
    found = page.evaluate("async () => (await axe.run()).violations")
    return [f"{v['id']}: {v['help']}" for v in found if v["impact"] in ("serious", "critical")]


def test_a_marketer_logs_in_reads_the_dashboard_and_finds_the_message_a_customer_got(
    server: str, engine: Engine
) -> None:
    from playwright.sync_api import sync_playwright

    shots = _shots(engine.dialect.name)
    with sync_playwright() as playwright:
        browser = _chromium(playwright)
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.goto(f"{server}/ui/")
        assert page.url.endswith("/ui/login")
        assert _serious(page) == []
        page.get_by_label("Username").fill("marketer")
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Log in").click()
        assert page.get_by_role("alert").inner_text() == "wrong username or password"
        page.screenshot(path=str(shots / "1-login-refused.png"))
        page.get_by_label("Password").fill(PASSWORD)
        page.keyboard.press("Enter")  # the form works from the keyboard
        page.wait_for_url(f"{server}/ui/")
        assert page.get_by_test_id("customers").inner_text() == "7"
        page.wait_for_function("document.getElementById('pareto').getAttribute('width')")
        page.screenshot(path=str(shots / "2-dashboard.png"), full_page=True)
        assert _serious(page) == []
        page.get_by_role("link", name="Customers").click()
        page.get_by_label("Name, city, email, phone or card").fill("anna@example.ru")
        page.get_by_role("button", name="Search").click()
        page.get_by_role("link", name="Anna").click()
        page.wait_for_url(f"{server}/ui/customers/1")
        history = page.get_by_test_id("messages")
        assert history.locator("tbody tr").first.locator("td").all_inner_texts()[:4] == [
            "Spring sale", "email", "sent", "Anna, 15% off for you"]  # fmt: skip
        page.screenshot(path=str(shots / "3-customer.png"), full_page=True)
        assert _serious(page) == []
        page.get_by_role("button", name="Log out").click()
        page.wait_for_url(f"{server}/ui/login")
        browser.close()
    assert sorted(p.name for p in shots.iterdir()) == [
        "1-login-refused.png", "2-dashboard.png", "3-customer.png"]  # fmt: skip


def test_a_marketer_builds_a_segment_plans_launches_and_reads_the_report(
    server: str, engine: Engine, smtp_server: tuple[Inbox, int]
) -> None:
    from playwright.sync_api import expect, sync_playwright

    inbox, _ = smtp_server
    shots = _shots(f"{engine.dialect.name}-campaign")
    with sync_playwright() as playwright:
        browser = _chromium(playwright)
        context = browser.new_context(viewport={"width": 1366, "height": 768})
        page = context.new_page()
        page.goto(f"{server}/ui/login")
        page.get_by_label("Username").fill("marketer")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{server}/ui/")
        # the segment: Moscow customers who consented to email, counted live as it grows
        page.get_by_role("link", name="Segments").click()
        page.get_by_role("link", name="New segment").click()
        page.get_by_label("Name", exact=True).fill("Moscow subscribers")
        page.get_by_label("Condition").select_option("profile")
        page.get_by_label("Profile field").select_option("city")
        page.get_by_label("value").fill("Moscow")
        expect(page.locator("#count")).to_have_text("3")  # Anna, Vera, Egor
        page.get_by_label("Condition").first.select_option("consent")
        expect(page.locator("#count")).to_have_text("1")  # of them, only Anna consented
        assert _serious(page) == []
        page.screenshot(path=str(shots / "1-segment-builder.png"), full_page=True)
        page.get_by_role("button", name="Save segment").click()
        expect(page.get_by_test_id("segment-count")).to_have_text("1")
        # the plan, one question at a time
        page.get_by_role("link", name="Campaigns").click()
        page.get_by_role("link", name="Plan a campaign").click()
        page.get_by_label("Name").fill("Moscow welcome")
        page.get_by_label("Goal").fill("Welcome Moscow subscribers with a discount")
        page.get_by_role("button", name="Next").click()
        page.get_by_label("Segment").select_option("Moscow subscribers")
        page.get_by_label("Control group, % held out").fill("0")
        page.get_by_role("button", name="Next").click()
        page.get_by_label("Offer").select_option("discount")
        page.get_by_label("Discount, %").fill("10")
        page.get_by_role("button", name="Next").click()
        page.get_by_label("Subject").fill("{{ customer.first_name }}, welcome")
        page.get_by_label("HTML body").fill("<p>{{ offer.discount_percent }}% off</p>")
        page.get_by_label("Text body").fill("{{ offer.discount_percent }}% off for you")
        page.get_by_label("Preview for customer id").fill("1")
        page.get_by_role("button", name="Preview").click()
        expect(page.locator("#preview")).to_contain_text("Anna, welcome")
        assert _serious(page) == []
        page.screenshot(path=str(shots / "2-planner.png"), full_page=True)
        for _ in range(3):  # channel (email), schedule (at launch), then the budget
            page.get_by_role("button", name="Next").click()
        page.get_by_label("Budget", exact=True).fill("1000")
        page.get_by_role("button", name="Next").click()
        page.get_by_label("Expected value").fill("500")
        page.get_by_role("button", name="Save the plan").click()
        expect(page.get_by_test_id("status")).to_have_text("draft")
        launched = page.url
        page.get_by_role("button", name="Launch").click()
        # one message: the sending worker may finish it before the page has loaded
        expect(page.get_by_test_id("status")).to_have_text(re.compile(r"^(running|completed)$"))
        deadline = time.monotonic() + 30
        while not inbox.received and time.monotonic() < deadline:
            time.sleep(0.1)
        # the launched page reloads itself once the send is done, which would abort a
        # reload of ours: the report is read in a tab of its own
        page = context.new_page()
        page.goto(launched)
        expect(page.get_by_test_id("groups")).to_contain_text("treatment")
        assert _serious(page) == []
        page.screenshot(path=str(shots / "3-report.png"), full_page=True)
        # the customer sees it in their history
        page.goto(f"{server}/ui/customers/1")
        expect(page.get_by_test_id("messages")).to_contain_text("Anna, welcome")
        page.screenshot(path=str(shots / "4-customer.png"), full_page=True)
        browser.close()
    [mail] = inbox.received
    assert mail.recipients == ["anna@example.ru"]
    assert str(mail.parsed()["Subject"]) == "Anna, welcome"


def test_logging_out_in_one_browser_ends_the_session_in_another(
    server: str, engine: Engine
) -> None:
    from playwright.sync_api import expect, sync_playwright

    shots = _shots(f"{engine.dialect.name}-sessions")
    with sync_playwright() as playwright:
        browser = _chromium(playwright)
        pages = [browser.new_context().new_page() for _ in range(2)]
        for page in pages:  # two browsers, one user
            page.goto(f"{server}/ui/login")
            page.get_by_label("Username").fill("analyst")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(f"{server}/ui/")
        first, second = pages
        # the second reads in Russian, the segment builder's own labels included
        second.get_by_label("Language").select_option("ru")
        second.get_by_role("button", name="OK").click()
        expect(second.get_by_role("heading", level=1)).to_have_text("Сводка")
        second.goto(f"{server}/ui/segments/new")
        second.get_by_label("Условие").select_option("consent")
        expect(second.get_by_label("Согласие на канал")).to_have_value("email")
        expect(second.locator("#count")).to_have_text("3")  # Anna, Dina and Egor
        assert _serious(second) == []
        second.screenshot(path=str(shots / "1-builder-in-russian.png"), full_page=True)
        first.get_by_role("button", name="Log out").click()
        first.wait_for_url(f"{server}/ui/login")
        second.reload()
        second.wait_for_url(f"{server}/ui/login")
        expect(second.get_by_role("heading", level=1)).to_have_text("Войти")
        second.screenshot(path=str(shots / "2-ended-elsewhere.png"))
        browser.close()
    assert sorted(p.name for p in shots.iterdir()) == [
        "1-builder-in-russian.png", "2-ended-elsewhere.png"]  # fmt: skip
