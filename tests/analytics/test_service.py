"""``patron analyze`` on the store: scores written back with their as-of date and model
version, history kept, past dates analysed as they were; the API and the CLI on top."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from patron.analytics.pipeline import AnalysisSettings
from patron.analytics.service import STEPS, AnalyticsService
from patron.analytics.tasks import run_analysis
from patron.cli.main import app
from patron.kit.errors import NotFound
from patron.kit.settings import get_settings
from patron.models import AnalysisRun, CustomerScore, Role
from tests.fixtures.api import Headers, api_client, auth_headers  # noqa: F401
from tests.fixtures.simulated import AS_OF, simulate, store

EARLIER = datetime(2025, 7, 1, tzinfo=UTC)


@pytest.fixture
def stored(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """A store holding 400 simulated buyers and 10 prospects."""
    with session_factory.begin() as session:
        store(session, simulate(400, seed=5, prospects=10))
    return session_factory


def count(session: Session, run_id: int) -> int:
    query = select(func.count()).select_from(CustomerScore).where(CustomerScore.run_id == run_id)
    return int(session.scalar(query) or 0)


def test_analysis_writes_one_score_per_customer_with_as_of_and_version(
    stored: sessionmaker[Session],
) -> None:
    steps: list[str] = []
    summary = run_analysis(stored, as_of=AS_OF, progress=steps.append)
    assert steps == list(STEPS)
    assert summary.customers == 410
    assert summary.model_version == AnalysisSettings().model_version
    with stored() as session:
        assert count(session, summary.id) == 410
        score = session.get(CustomerScore, (summary.id, 1))
        assert score is not None
        assert score.as_of == AS_OF
        prospect = session.get(CustomerScore, (summary.id, 405))
        assert prospect is not None
        assert prospect.lifecycle_stage == "prospect"
        assert prospect.rfm_segment is None and prospect.clv is None
        run = session.get(AnalysisRun, summary.id)
        assert run is not None and run.status == "completed"
        assert {"rfm_segments", "spend_groups", "clv_deciles", "lifecycle"} <= set(
            run.results["tables"]
        )


def test_stored_scores_equal_the_engines_and_money_is_decimal(
    stored: sessionmaker[Session],
) -> None:
    base = simulate(400, seed=5, prospects=10)
    own = base.orders[base.orders["customer_id"] == 7]
    summary = run_analysis(stored, as_of=AS_OF)
    with stored() as session:
        score = session.get(CustomerScore, (summary.id, 7))
        assert score is not None
        assert score.monetary == own["amount"].sum()
        assert isinstance(score.clv, Decimal)
        assert score.clv == score.clv.quantize(Decimal("0.01"))
        assert score.first_purchase_at == own["ts"].min().to_pydatetime()


def test_a_past_date_sees_only_what_existed_then_and_history_is_kept(
    stored: sessionmaker[Session],
) -> None:
    base = simulate(400, seed=5, prospects=10)
    buyers_then = base.orders[base.orders["ts"] < EARLIER]["customer_id"].nunique()
    now = run_analysis(stored, as_of=AS_OF)
    then = run_analysis(stored, as_of=EARLIER)
    with stored() as session:
        service = AnalyticsService(session)
        scores_then = session.scalars(
            select(CustomerScore).where(CustomerScore.run_id == then.id)
        ).all()
        assert sum(s.rfm_segment is not None for s in scores_then) == buyers_then
        # the newest as-of date comes first, whichever run was made last
        history = service.scores_of(1, limit=5)
        assert [s.run_id for s in history] == [now.id, then.id]
        assert service.latest_run().id == now.id
        assert service.latest_run(as_of=EARLIER).id == then.id


def test_no_run_yet_is_a_clear_not_found(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session, pytest.raises(NotFound, match="patron analyze"):
        AnalyticsService(session).latest_run()


def test_api_runs_analysis_and_shows_scores_on_the_profile(
    stored: sessionmaker[Session],
    api: TestClient,
    auth: dict[Role, Headers],
) -> None:
    # an analyst may run an analysis, a marketer may only read it, a till neither
    forbidden = api.post(
        "/analytics/runs",
        params={"as_of": AS_OF.isoformat()},
        headers=auth[Role.MARKETER],
    )
    assert forbidden.status_code == 403
    created = api.post(
        "/analytics/runs",
        params={"as_of": AS_OF.isoformat()},
        headers=auth[Role.ANALYST],
    )
    assert created.status_code == 201, created.text
    run = created.json()
    assert run["customers"] == 410
    latest = api.get("/analytics/runs/latest", headers=auth[Role.MARKETER])
    assert latest.json()["id"] == run["id"]
    groups = latest.json()["results"]["tables"]["spend_groups"]
    assert len(groups) == 11
    assert api.get("/analytics/runs/latest", headers=auth[Role.POS]).status_code == 403
    profile = api.get("/customers/1", headers=auth[Role.MARKETER]).json()
    assert profile["scores"]["run_id"] == run["id"]
    assert profile["scores"]["lifecycle_stage"] in {
        "new",
        "active",
        "at_risk",
        "lapsed",
        "won_back",
    }
    history = api.get("/customers/1/scores", headers=auth[Role.ANALYST]).json()
    assert [h["run_id"] for h in history] == [run["id"]]
    missing = api.get("/analytics/runs/999", headers=auth[Role.ANALYST])
    assert missing.status_code == 404


def test_cli_analyze_and_report_with_html(
    stored: sessionmaker[Session],
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATRON_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    get_settings.cache_clear()
    monkeypatch.chdir(tmp_path)  # nothing may land in the working folder
    runner = CliRunner()
    done = runner.invoke(app, ["analyze", "--as-of", "2026-01-01"])
    assert done.exit_code == 0, done.output
    assert "410 customers scored as of 2026-01-01 00:00 UTC" in done.output
    assert "RFM segments" in done.output and "Spend groups" in done.output
    page = tmp_path / "report.html"
    shown = runner.invoke(app, ["report", "customers", "--html", str(page)])
    assert shown.exit_code == 0, shown.output
    html = page.read_text(encoding="utf-8")
    assert html.count("<svg") == 3
    assert "Pareto curve" in html and "RFM grid" in html and "CLV distribution" in html
    get_settings.cache_clear()


def test_cli_bad_date_and_bad_settings_name_the_problem(tmp_path: Path) -> None:
    from patron.cli.main import load_analysis_settings, parse_moment
    from patron.kit.errors import InvalidInput

    with pytest.raises(InvalidInput, match="--as-of: '2026-13-01' is not a date"):
        parse_moment("2026-13-01", option="--as-of")
    config = tmp_path / "analysis.yaml"
    config.write_text("spend:\n  bands: 1\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"analysis.yaml: spend.bands: "):
        load_analysis_settings(config)
