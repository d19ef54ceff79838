"""Campaigns over HTTP and on the command line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from patron.cli import main as cli
from patron.cli.main import main
from patron.kit.settings import get_settings
from patron.models import Role
from patron.segments.schemas import SegmentIn, parse_rule
from patron.segments.service import SegmentService
from tests.campaigns.test_plan import plan
from tests.fixtures.api import Headers, api_client, auth_headers
from tests.fixtures.segments import store_base

__all__ = ["api_client", "auth_headers"]

EMAIL_GRANTED = {"kind": "consent", "channel": "email"}


@pytest.fixture
def stored(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    with session_factory() as session:
        store_base(session)
        SegmentService(session).create(
            SegmentIn(name="subscribers", rule=parse_rule(EMAIL_GRANTED)), actor="test"
        )
        session.commit()
    return session_factory


def test_api_plans_launches_and_shows_the_audience(
    stored: sessionmaker[Session], api: TestClient, auth: dict[Role, Headers]
) -> None:
    marketer, analyst = auth[Role.MARKETER], auth[Role.ANALYST]
    body = plan(segment="subscribers", control_share=0.0).model_dump(mode="json")
    created = api.post("/campaigns", json=body, headers=marketer)
    assert created.status_code == 201, created.text
    campaign = created.json()
    assert (campaign["status"], campaign["kind"], campaign["created_by"]) == (
        "draft", "retention", "marketer-key"
    )  # fmt: skip
    cid = campaign["id"]
    # an analyst may read the plan but not launch it
    assert api.get(f"/campaigns/{cid}", headers=analyst).status_code == 200
    refused = api.post(f"/campaigns/{cid}/launch", headers=analyst)
    assert refused.status_code == 403
    assert refused.json() == {"error": "role analyst may not campaigns:launch"}
    preview = api.get(f"/campaigns/{cid}/preview", params={"customer_id": 5}, headers=analyst)
    assert preview.json()["subject"] == "Dina, 15% off for you"
    launched = api.post(f"/campaigns/{cid}/launch", headers=marketer)
    assert launched.status_code == 200, launched.text
    # Anna and Dina, both subscribed now (Zhanna's consent came in June: after the fixture's
    # as-of date, but before today), and Zhanna has no email address
    assert launched.json()["audience"]["treatment"] == 2
    assert launched.json()["audience"]["excluded"]["no_address"] == 1
    recipients = api.get(
        f"/campaigns/{cid}/recipients", params={"group": "treatment"}, headers=analyst
    ).json()
    assert [(r["customer_id"], r["wave"]) for r in recipients] == [(1, 1), (5, 1)]
    trail = api.get(f"/campaigns/{cid}/trail", headers=analyst).json()
    assert [t["action"] for t in trail] == ["created", "launch"]
    again = api.post(f"/campaigns/{cid}/launch", headers=marketer)
    assert again.status_code == 409
    assert again.json() == {"error": f"campaign {cid} is running: it cannot launch"}
    bad = api.post(
        "/campaigns",
        json=body | {"name": "x", "message": body["message"] | {"text": "{{ promo }}"}},
        headers=marketer,
    )
    assert bad.status_code == 422
    assert bad.json()["error"].startswith("message.text: undefined variable 'promo'")
    assert api.post(f"/campaigns/{cid}/pause", json={}, headers=analyst).status_code == 403
    paused = api.post(f"/campaigns/{cid}/pause", json={"reason": "typo"}, headers=marketer)
    assert paused.json()["status"] == "paused"
    resumed = api.post(f"/campaigns/{cid}/resume", headers=marketer)
    assert resumed.json()["status"] == "running"
    assert api.get(f"/campaigns/{cid}/runs", headers=analyst).json() == []
    stopped = api.post(f"/campaigns/{cid}/cancel", json={"reason": "test"}, headers=marketer)
    assert stopped.json()["status"] == "cancelled"
    trail = api.get(f"/campaigns/{cid}/trail", headers=analyst).json()
    assert [t["action"] for t in trail] == [
        "created", "launch", "pause", "hold", "resume", "requeue", "cancel",
    ]  # fmt: skip


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``patron ARGS`` through the real entry point: exit code, stdout, stderr."""
    saved = sys.argv
    sys.argv = ["patron", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = saved
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_campaign_commands(
    stored: sessionmaker[Session],
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PATRON_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    get_settings.cache_clear()
    monkeypatch.setattr(cli.console, "size", (200, 50))
    path = tmp_path / "plan.yaml"
    import yaml

    path.write_text(
        yaml.safe_dump(plan(segment="subscribers", control_share=0.0).model_dump(mode="json")),
        encoding="utf-8",
    )
    code, out, err = run(capsys, "campaign", "create", str(path))
    assert code == 0, err
    assert "campaign 1 'keep moscow' saved as a draft" in out
    code, out, _ = run(capsys, "campaign", "preview", "keep moscow", "--customer", "1")
    assert out.splitlines()[0] == "Subject: Anna, 15% off for you"
    code, out, _ = run(capsys, "campaign", "launch", "1")
    assert code == 0
    assert out.strip() == (
        "campaign 1 running: 3 selected, 2 treatment (0 in the test wave), 0 control; "
        "left out: no_address 1"
    )
    code, out, _ = run(capsys, "campaign", "show", "1")
    assert code == 0 and "keep moscow (retention, running)" in out
    code, out, _ = run(capsys, "campaign", "pause", "1", "--reason", "typo")
    assert (code, out.strip()) == (0, "campaign 1 paused")
    code, out, _ = run(capsys, "campaign", "resume", "keep moscow")
    assert (code, out.strip()) == (0, "campaign 1 running again")
    code, out, _ = run(capsys, "campaign", "runs", "1")
    assert code == 0 and out.strip().endswith("next run: none")
    path.write_text("name: broken\nkind: retail\n", encoding="utf-8")
    code, _, err = run(capsys, "campaign", "create", str(path))
    assert code == 2
    # the error console wraps long lines; the message is one line
    assert err.replace("\n", "").startswith(
        f"error: invalid campaign plan: {path}.goal: Field required"
    )
    get_settings.cache_clear()
