"""Reading files: encodings, delimiters, quoted multi-line fields, Excel and JSON Lines."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from openpyxl import Workbook

from patron.ingest.readers import Source, detect_delimiter, detect_encoding
from patron.kit.errors import InvalidInput

ROWS = "id;name;city\n1;Иван;Москва\n2;Ольга;Тула\n"


def _records(path: Path, **options: object) -> list[tuple[int, dict[str, object]]]:
    with Source(path, **options) as source:  # type: ignore[arg-type]
        return [(r.line, r.values) for r in source.records()]


@pytest.mark.parametrize(
    ("encoding", "expected"), [("utf-8", "utf-8"), ("utf-8-sig", "utf-8-sig"), ("cp1251", "cp1251")]
)
def test_encoding_is_detected(tmp_path: Path, encoding: str, expected: str) -> None:
    path = tmp_path / "customers.csv"
    path.write_bytes(ROWS.encode(encoding))
    with Source(path) as source:
        assert source.encoding == expected
        assert source.delimiter == ";"
        assert [r.values["name"] for r in source.records()] == ["Иван", "Ольга"]


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiter_is_detected(delimiter: str) -> None:
    sample = delimiter.join(["a", "b", "c"]) + "\n" + delimiter.join(["1", "2", "3"]) + "\n"
    assert detect_delimiter(sample) == delimiter


def test_utf8_cut_mid_character_is_still_utf8() -> None:
    assert detect_encoding("Москва".encode()[:-1]) == "utf-8"


def test_quoted_multiline_fields_report_the_line_they_start_on(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text('id,comment\n1,"first\nsecond\nthird"\n2,plain\n3,"a, b"\n', encoding="utf-8")
    assert _records(path) == [
        (2, {"id": "1", "comment": "first\nsecond\nthird"}),
        (5, {"id": "2", "comment": "plain"}),
        (6, {"id": "3", "comment": "a, b"}),
    ]


def test_wrong_field_count_becomes_an_error_record(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n1,2,3\n", encoding="utf-8")
    assert _records(path)[1] == (3, {"__error__": "3 fields where the header has 2"})


def test_whitespace_file_without_header_takes_given_names(tmp_path: Path) -> None:
    path = tmp_path / "sample.txt"
    path.write_text(" 00004 0001 19970101  2   29.33\n\n 00004 0001 19970118  2   29.73\n")
    records = _records(path, delimiter="whitespace", header=False, names=["m", "s", "d", "n", "v"])
    assert records == [
        (1, {"m": "00004", "s": "0001", "d": "19970101", "n": "2", "v": "29.33"}),
        (3, {"m": "00004", "s": "0001", "d": "19970118", "n": "2", "v": "29.73"}),
    ]


def test_gzip_and_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write('{"type": "visit", "n": 1}\n\nnot json\n[1]\n')
    assert _records(path) == [
        (1, {"type": "visit", "n": 1}),
        (3, {"__error__": "not JSON: Expecting value at column 1"}),
        (4, {"__error__": "a JSON line must be an object"}),
    ]


def test_excel_sheet(tmp_path: Path) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["sku", "name", "price"])
    sheet.append(["A1", "Milk", 1.5])
    sheet.append([None, None, None])
    sheet.append(["B2", "Bread", 2])
    path = tmp_path / "products.xlsx"
    book.save(path)
    assert _records(path) == [
        (2, {"sku": "A1", "name": "Milk", "price": 1.5}),
        (4, {"sku": "B2", "name": "Bread", "price": 2}),
    ]


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"no-such\.csv: no such file"):
        Source(tmp_path / "no-such.csv")
