"""The web interface in Debian's Chromium through Playwright: log in, read the dashboard,
find a customer and see the message they received; each page is screenshotted into
``test-artifacts/web/`` and checked with axe-core for serious accessibility violations."""

from __future__ import annotations

import os
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
from patron.web.views import VENDOR
from tests.web.conftest import PASSWORD

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
def server(engine: Engine, site: sessionmaker[Session]) -> Iterator[str]:
    _needed()
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
    thread.join(timeout=10)


def _serious(page: Any) -> list[str]:
    page.add_script_tag(path=str(AXE))
    found = page.evaluate("async () => (await axe.run()).violations")
    return [f"{v['id']}: {v['help']}" for v in found if v["impact"] in ("serious", "critical")]


def test_a_marketer_logs_in_reads_the_dashboard_and_finds_the_message_a_customer_got(
    server: str, engine: Engine
) -> None:
    from playwright.sync_api import sync_playwright

    shots = ARTIFACTS / engine.dialect.name
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
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
