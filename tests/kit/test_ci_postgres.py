"""A missing PostgreSQL skips its tests with the reason on a user's machine and fails CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# port 9 (discard) has no PostgreSQL behind it on any machine we run on
NOWHERE = "postgresql+psycopg://postgres@127.0.0.1:9"


def _pytest_against_no_server(ci: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATRON_TEST_POSTGRES": NOWHERE, "CI": ci}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rs",
            "tests/kit/test_db.py::test_migrations_create_exactly_the_models",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("ci", ["", "false"])
def test_users_machine_skips_and_says_why(ci: str) -> None:
    run = _pytest_against_no_server(ci)
    assert run.returncode == 0, run.stdout
    assert "1 passed, 1 skipped" in run.stdout
    assert f"PostgreSQL not reachable at {NOWHERE}" in run.stdout


def test_ci_fails_without_postgres() -> None:
    run = _pytest_against_no_server("true")
    assert run.returncode == 1, run.stdout
    assert "CI=true needs PostgreSQL" in run.stdout
