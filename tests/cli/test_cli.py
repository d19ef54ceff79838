"""The command line: commands work end to end, and errors are one line, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from patron.cli import main as cli
from patron.cli.main import main
from patron.kit.settings import get_settings

CUSTOMERS = """customer_id,first_name,last_name,email,phone,city,birth_date
A1,Ivan,Petrov,ivan@x.ru,+7 916 123 45 67,Tula,1985-02-03
B7,Ivan,Petrov,IVAN@X.RU,,Tula,1985-02-03
A2,Petr,Ivanov,petr@x.ru,,Tula,1985-02-03
A3,Petr,Ivanov,p.ivanov@x.ru,,Tula,1985-02-03
"""


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty SQLite store named by PATRON_DATABASE_URL, as a user would set it."""
    monkeypatch.setenv("PATRON_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.delenv("PATRON_DEBUG", raising=False)
    get_settings.cache_clear()
    monkeypatch.setattr(cli.console, "size", (200, 50))  # wide enough that tables do not wrap
    yield tmp_path
    get_settings.cache_clear()


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``patron ARGS`` in-process through the real entry point."""
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


def test_import_show_search_merge_unmerge(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = store / "customers.csv"
    path.write_text(CUSTOMERS, encoding="utf-8")
    code, out, _ = run(capsys, "import", "customers", str(path), "--source", "crm")
    assert code == 0
    assert "customers: read 4 = imported 3 + merged 1 + rejected 0" in out

    code, out, _ = run(capsys, "customers", "show", "1")
    assert code == 0
    assert "Ivan Petrov" in out and "ivan@x.ru" in out and "+79161234567" in out

    code, out, _ = run(capsys, "customers", "search", "x.ru")
    assert code == 0 and out.count("Tula") == 3

    code, out, _ = run(capsys, "customers", "candidates")
    assert code == 0 and "names alike" in out

    code, out, _ = run(capsys, "customers", "merge", "2", "3")
    assert (code, out.strip()) == (
        0,
        "merge 1: 3 into 2; moved 2 identities, 0 consents, 0 orders, 0 events",
    )
    code, out, _ = run(capsys, "customers", "unmerge", "1")
    assert (code, out.strip()) == (0, "merge 1 undone: customer 3 restored")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("customers", "show", "99"), "error: customer 99 does not exist"),
        (
            ("import", "people", "x.csv"),
            "error: unknown kind 'people': use customers, orders, products or events",
        ),
        (("import", "orders", "missing.csv"), "error: missing.csv: no such file"),
        (
            ("import", "orders", "missing.csv", "--preset", "nope"),
            "error: unknown preset 'nope'; known presets: cdnow, cdnow-sample, online-retail",
        ),
        (
            ("import", "orders", "x.csv", "--map", "oops"),
            "error: --map 'oops': write it as field=column",
        ),
        (("customers", "unmerge", "5"), "error: merge 5 does not exist"),
        (
            ("apikey", "create", "till", "--role", "boss"),
            "error: unknown role 'boss': use admin, marketer, analyst or pos",
        ),
    ],
)
def test_errors_are_one_line_and_a_nonzero_exit(
    store: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2
    assert err.strip() == message
    assert "Traceback" not in out + err


def test_mapping_names_an_unknown_field(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = store / "o.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    code, _, err = run(capsys, "import", "orders", str(path), "--map", "colour=a")
    assert code == 2
    assert err.startswith(
        "error: mapping names unknown field(s) colour; known: order_id, customer_id"
    )


def test_init_reports_the_store(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "init")
    assert code == 0
    assert f"store ready: sqlite:///{store / 'cli.db'}" in out.replace("\n", "")
