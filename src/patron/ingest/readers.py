"""Reading records out of CSV (any delimiter, detected encoding), Excel and JSON Lines.

Every record comes with the line of the file it started on, so that a rejected row can be
found again. Compressed files (``.gz``, ``.xz``, ``.bz2``) are read as they are.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import json
import lzma
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from charset_normalizer import from_bytes

from patron.kit.errors import InvalidInput

SAMPLE_BYTES = 256 * 1024
DELIMITERS = ",;\t|"
WHITESPACE = "whitespace"


@dataclass(frozen=True)
class Record:
    """One row: the file line it starts on, and its values by column name."""

    line: int
    values: dict[str, Any]


class _Counting(io.RawIOBase):
    """Counts the bytes taken from the file on disk, so progress works on compressed files."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        self.consumed += len(data)
        return len(data)


class Source:
    """An open input file with its format decided; iterate ``records()``."""

    def __init__(
        self,
        path: Path,
        *,
        delimiter: str | None = None,
        encoding: str | None = None,
        header: bool = True,
        names: list[str] | None = None,
        sheet: str | None = None,
    ) -> None:
        if not path.is_file():
            raise InvalidInput(f"{path}: no such file")
        self.path = path
        self.size = path.stat().st_size
        self._counter = _Counting(path.open("rb"))
        self._binary: IO[bytes] = io.BufferedReader(self._counter, buffer_size=1 << 20)
        suffixes = [s.lower() for s in path.suffixes]
        if suffixes and suffixes[-1] in {".gz", ".xz", ".bz2"}:
            self._binary = io.BufferedReader(_decompressor(suffixes[-1], self._binary), 1 << 20)
            suffixes = suffixes[:-1]
        self.format = {".xlsx": "xlsx", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(
            suffixes[-1] if suffixes else "", "csv"
        )
        self.header = header
        self.names = names
        self.sheet = sheet
        self.encoding = encoding
        self.delimiter = delimiter
        if self.format in {"csv", "jsonl"}:
            sample = self._binary.peek(SAMPLE_BYTES)[:SAMPLE_BYTES]
            self.encoding = encoding or detect_encoding(sample)
            if self.format == "csv" and delimiter is None:
                self.delimiter = detect_delimiter(sample.decode(self.encoding, errors="replace"))

    @property
    def consumed(self) -> int:
        """Bytes of the file on disk read so far."""
        return self._counter.consumed

    def close(self) -> None:
        self._binary.close()
        self._counter.raw.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def records(self) -> Iterator[Record]:
        """Every row as a ``Record``; raises ``InvalidInput`` naming the line of a broken one."""
        if self.format == "xlsx":
            yield from self._xlsx()
        elif self.format == "jsonl":
            yield from self._jsonl()
        elif self.delimiter == WHITESPACE:
            yield from self._whitespace()
        else:
            yield from self._csv()

    def _text(self) -> io.TextIOWrapper:
        assert self.encoding is not None
        return io.TextIOWrapper(self._binary, encoding=self.encoding, newline="")

    def _columns(self, first: list[str]) -> tuple[list[str], bool]:
        """Column names, and whether ``first`` was the header rather than data."""
        if self.names:
            return self.names, self.header
        if not self.header:
            return [f"column_{i + 1}" for i in range(len(first))], False
        return [name.strip() for name in first], True

    def _csv(self) -> Iterator[Record]:
        assert self.delimiter is not None
        reader = csv.reader(self._text(), delimiter=self.delimiter)

        def numbered() -> Iterator[tuple[int, list[str]]]:
            # a record starts on the line after the previous one ended, which stays right
            # for quoted fields that span several lines
            start = 1
            for row in reader:
                yield start, row
                start = reader.line_num + 1

        yield from self._rows(numbered())

    def _whitespace(self) -> Iterator[Record]:
        lines = enumerate(self._text(), start=1)
        yield from self._rows((n, raw.split()) for n, raw in lines)

    def _rows(self, rows: Iterator[tuple[int, list[str]]]) -> Iterator[Record]:
        columns: list[str] | None = None
        for line, row in rows:
            if not row:
                continue
            if columns is None:
                columns, was_header = self._columns(row)
                if was_header:
                    continue
            if len(row) != len(columns):
                error = f"{len(row)} fields where the header has {len(columns)}"
                yield Record(line, {"__error__": error})
                continue
            yield Record(line, dict(zip(columns, row, strict=True)))

    def _jsonl(self) -> Iterator[Record]:
        for line, raw in enumerate(self._text(), start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                yield Record(line, {"__error__": f"not JSON: {exc.msg} at column {exc.colno}"})
                continue
            if not isinstance(value, dict):
                yield Record(line, {"__error__": "a JSON line must be an object"})
                continue
            yield Record(line, value)

    def _xlsx(self) -> Iterator[Record]:
        from openpyxl import load_workbook

        data = self._binary.read()
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        try:
            sheet = book[self.sheet] if self.sheet else book.worksheets[0]
            columns: list[str] | None = None
            for line, cells in enumerate(sheet.iter_rows(values_only=True), start=1):
                row = ["" if c is None else c for c in cells]
                if columns is None:
                    columns, was_header = self._columns([str(c) for c in row])
                    if was_header:
                        continue
                if all(c == "" for c in row):
                    continue
                yield Record(line, dict(zip(columns, row, strict=False)))
        finally:
            book.close()


def _decompressor(suffix: str, raw: IO[bytes]) -> Any:
    if suffix == ".gz":
        return gzip.GzipFile(fileobj=raw)
    return lzma.LZMAFile(raw) if suffix == ".xz" else bz2.BZ2File(raw)


def detect_encoding(sample: bytes) -> str:
    """UTF-8 (with or without BOM) when it decodes; otherwise charset-normalizer's guess.

    Russian files from Excel are often Windows-1251, which never decodes as UTF-8 once
    it holds a Cyrillic letter; the guess is then checked among the Cyrillic code pages.
    """
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    try:
        sample.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        if exc.start >= len(sample) - 4:  # the sample cut a character in two
            return "utf-8"
    best = from_bytes(sample, cp_isolation=["cp1251", "koi8_r", "cp866", "latin_1"]).best()
    return best.encoding if best is not None else "cp1251"


def detect_delimiter(sample: str) -> str:
    """The delimiter of a CSV sample, chosen among ``, ; TAB |``."""
    lines = sample.splitlines()[:50]
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters=DELIMITERS).delimiter
    except csv.Error:
        counts = {d: lines[0].count(d) for d in DELIMITERS} if lines else {}
        best = max(counts, key=lambda d: counts[d], default=",")
        return best if counts.get(best) else ","
