"""Segments over HTTP and on the command line."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from patron.cli import main as cli
from patron.cli.main import main
from patron.kit.settings import get_settings
from patron.models import Role
from patron.segments.tasks import refresh_replica
from tests.fixtures.api import Headers, api_client, auth_headers
from tests.fixtures.segments import AS_OF, store_base

__all__ = ["api_client", "auth_headers"]

BEST_AT_RISK = {
    "all": [
        {"kind": "score", "field": "best_customer", "value": True},
        {"kind": "score", "field": "churn_risk", "op": "ge", "value": 0.5},
    ]
}


@pytest.fixture
def stored(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    with session_factory() as session:
        store_base(session)
        session.commit()
    return session_factory


def test_api_saves_counts_builds_lists_and_exports(
    stored: sessionmaker[Session], api: TestClient, auth: dict[Role, Headers]
) -> None:
    marketer, analyst = auth[Role.MARKETER], auth[Role.ANALYST]
    # the live count of a rule being edited
    preview = api.post(
        "/segments/preview",
        json={"rule": BEST_AT_RISK, "as_of": AS_OF.isoformat()},
        headers=analyst,
    )
    assert preview.status_code == 200, preview.text
    assert preview.json()["customers"] == 1
    assert preview.json()["route"] == "store"  # no replica was made
    created = api.post(
        "/segments",
        json={"name": "moscow", "rule": {"kind": "profile", "field": "city", "value": "Moscow"}},
        headers=marketer,
    )
    assert created.status_code == 201, created.text
    segment = created.json()
    assert segment["rule"] == {"kind": "profile", "field": "city"} | {"value": "Moscow"}
    assert segment["created_by"] == "marketer-key" and segment["members"] is None
    sid = segment["id"]
    assert api.get(f"/segments/{sid}/count", headers=marketer).json()["customers"] == 3
    built = api.post(f"/segments/{sid}/build", headers=marketer)
    assert built.status_code == 201
    assert (built.json()["members"], built.json()["entered"]) == (3, 3)
    members = api.get(f"/segments/{sid}/members", headers=marketer).json()
    assert [m["customer_id"] for m in members] == [1, 3, 7]
    listed = api.get("/segments", headers=analyst).json()
    assert [(s["name"], s["members"]) for s in listed] == [("moscow", 3)]
    changes = api.get(
        f"/segments/{sid}/changes", params={"since": "2026-01-01T00:00:00Z"}, headers=marketer
    ).json()
    assert [(c["customer_id"], c["change"]) for c in changes] == [
        (1, "entered"), (3, "entered"), (7, "entered")
    ]  # fmt: skip
    exported = api.get(f"/segments/{sid}/export.csv", headers=marketer)
    assert exported.headers["content-type"].startswith("text/csv")
    assert exported.text.splitlines()[1] == "1,Anna,,Moscow,anna@example.ru,+79161234501"
    copy = api.post(f"/segments/{sid}/duplicate", json={"name": "moscow 2"}, headers=marketer)
    assert copy.status_code == 201 and copy.json()["rule"] == segment["rule"]
    renamed = api.patch(f"/segments/{sid}", json={"description": "capital"}, headers=marketer)
    assert renamed.json()["description"] == "capital"
    assert api.delete(f"/segments/{copy.json()['id']}", headers=marketer).status_code == 200
    assert [s["name"] for s in api.get("/segments", headers=marketer).json()] == ["moscow"]
    moves = api.get(
        "/segments/moves",
        params={"before": "2026-05-15T00:00:00Z", "after": AS_OF.isoformat(), "by": "rfm_segment"},
        headers=analyst,
    ).json()
    assert {"before": "At risk", "after": "Lost", "customers": 1} in moves


def test_api_refuses_bad_rules_with_their_place_and_wrong_roles(
    stored: sessionmaker[Session], api: TestClient, auth: dict[Role, Headers]
) -> None:
    bad = api.post(
        "/segments",
        json={"name": "x", "rule": {"all": [{"kind": "profile", "field": "cty", "value": "M"}]}},
        headers=auth[Role.MARKETER],
    )
    assert bad.status_code == 422
    fields = bad.json()["fields"]
    # the location runs through the kinds of the nodes, as pydantic names them
    assert fields[0]["field"] == "body.rule.all.conditions.0.profile"
    assert "unknown profile field 'cty'" in fields[0]["message"]
    unknown = api.post(
        "/segments/preview",
        json={"rule": {"kind": "segment", "segment": "nope"}},
        headers=auth[Role.MARKETER],
    )
    assert unknown.status_code == 422
    assert unknown.json()["error"] == "rule: no segment named 'nope'"
    assert (
        api.post(
            "/segments/preview", json={"rule": BEST_AT_RISK}, headers=auth[Role.POS]
        ).status_code
        == 403
    )
    assert api.get("/segments/99", headers=auth[Role.MARKETER]).status_code == 404


@pytest.fixture
def cli_store(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> sessionmaker[Session]:
    """The CLI on the test store (SQLite, then PostgreSQL), with the base written."""
    monkeypatch.setenv("PATRON_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    get_settings.cache_clear()
    monkeypatch.setattr(cli.console, "size", (200, 50))
    monkeypatch.chdir(tmp_path)
    factory = sessionmaker(engine)
    with factory() as session:
        store_base(session)
        session.commit()
    return factory


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


def test_cli_segment_commands(
    cli_store: sessionmaker[Session], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rule = tmp_path / "moscow.yaml"
    rule.write_text(
        "name: moscow\nrule:\n  all:\n    - {kind: profile, field: city, value: Moscow}\n"
        "    - {kind: identity, identity: phone}\n",
        encoding="utf-8",
    )
    code, out, err = run(capsys, "segment", "create", "moscow phones", "--rule", str(rule))
    assert code == 0, err
    assert "segment 1 'moscow phones' saved: 2 customers now" in out
    code, out, _ = run(
        capsys, "segment", "count", "--where", '{kind: consent, channel: email}',
        "--as-of", "2026-06-01",
    )  # fmt: skip
    assert code == 0 and out.startswith("2 customers as of 2026-06-01 00:00 UTC")
    code, out, _ = run(capsys, "segment", "build", "moscow phones")
    assert code == 0 and "moscow phones: 2 members, 2 entered, 0 left" in out
    code, out, _ = run(capsys, "segment", "members", "moscow phones")
    assert code == 0 and "2 members; 2 shown" in out
    code, out, _ = run(capsys, "segment", "export", "moscow phones", "--out", "m.csv")
    assert code == 0 and "2 customers written to m.csv" in out
    assert (tmp_path / "m.csv").read_text(encoding="utf-8").splitlines() == [
        "customer_id,first_name,last_name,city,email,phone",
        "1,Anna,,Moscow,anna@example.ru,+79161234501",
        "3,Vera,,Moscow,,+79161234503",
    ]
    code, out, _ = run(capsys, "segment", "list")
    assert code == 0 and "moscow phones" in out
    # mistakes are one line naming the place
    code, _, err = run(capsys, "segment", "count", "--where", "{kind: profile, field: town}")
    assert code == 2
    assert err.startswith("error: invalid segment rule: --where: unknown profile field 'town'")
    code, _, err = run(capsys, "segment", "members", "nope")
    assert (code, err.strip()) == (2, "error: segment 'nope' not found")
    get_settings.cache_clear()


def test_cli_refreshes_the_replica_and_counts_there(
    cli_store: sessionmaker[Session], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    email = "{kind: consent, channel: email}"
    # before a refresh there is no replica: the count reads the store
    code, out, _ = run(capsys, "segment", "count", "--where", email, "--as-of", "2026-06-01")
    assert code == 0 and out.rstrip().endswith(" s, store)")
    code, out, err = run(capsys, "segment", "refresh")
    assert code == 0, err
    assert out.startswith("segment replica refreshed as of ")
    assert "8 customers, 8 identities, 7 consents, 9 orders, 10 order_lines" in out
    assert (tmp_path / "patron-replica.duckdb").exists()  # the default, in the working folder
    code, out, _ = run(capsys, "segment", "count", "--where", email, "--as-of", "2026-06-01")
    assert code == 0 and out.startswith("2 customers as of 2026-06-01 00:00 UTC")
    assert " s, replica as of " in out
    get_settings.cache_clear()


@pytest.fixture
def replica_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The segment replica setting pointed at a file of this test."""
    path = tmp_path / "replica.duckdb"
    monkeypatch.setenv("PATRON_SEGMENT_REPLICA", str(path))
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


def test_api_tells_the_replica_state_and_counts_there_when_fresh(
    stored: sessionmaker[Session],
    replica_file: Path,
    api: TestClient,
    auth: dict[Role, Headers],
) -> None:
    analyst = auth[Role.ANALYST]
    assert api.get("/segments/replica", headers=analyst).json() == {
        "exists": False, "fresh": False, "refreshed_at": None, "score_run": None,
        "rows": {}, "seconds": None,
    }  # fmt: skip
    assert refresh_replica(stored) is not None
    state = api.get("/segments/replica", headers=analyst).json()
    assert (state["exists"], state["fresh"], state["score_run"]) == (True, True, 2)
    assert state["rows"]["orders"] == 9
    preview = api.post(
        "/segments/preview",
        json={"rule": BEST_AT_RISK, "as_of": AS_OF.isoformat()},
        headers=analyst,
    ).json()
    assert (preview["customers"], preview["route"]) == (1, "replica")
    assert preview["data_as_of"] == state["refreshed_at"]
