"""Running an import: stream the file in chunks, one transaction per chunk.

This is a task boundary, so it commits: each chunk is one transaction, and a file that
stops half-way can be imported again to finish, because every importer is idempotent.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from patron.ingest.customers import CustomerImporter
from patron.ingest.events import EventImporter
from patron.ingest.mapping import Kind, Mapping
from patron.ingest.orders import OrderImporter
from patron.ingest.products import ProductImporter
from patron.ingest.readers import Record, Source
from patron.ingest.schemas import ChunkResult, ImportSummary, Problem
from patron.kit.clock import utcnow
from patron.kit.db import refresh_statistics, table_of, unit_of_work
from patron.kit.settings import get_settings
from patron.models import Customer, Event, Identity, ImportRun, Order, OrderLine, Product

Progress = Callable[[int, int], None]
GROWING_TABLES = [table_of(m) for m in (Customer, Identity, Order, OrderLine, Event, Product)]


class Importer(Protocol):
    def process(self, session: Session, records: Sequence[Record]) -> ChunkResult: ...


def make_importer(kind: Kind, mapping: Mapping, *, source: str, region: str) -> Importer:
    """The importer of one kind of file."""
    currency = get_settings().default_currency
    match kind:
        case "customers":
            return CustomerImporter(mapping, source=source, region=region)
        case "orders":
            return OrderImporter(mapping, source=source, region=region, currency=currency)
        case "products":
            return ProductImporter(mapping)
        case "events":
            return EventImporter(mapping, source=source, region=region)


def default_rejects_path(path: Path) -> Path:
    """``<file>.rejects.csv`` beside the file, or in the working folder if that is read-only."""
    beside = path.with_name(path.name + ".rejects.csv")
    # permission bits, not os.access: as root os.access says yes to a read-only data folder
    writable = path.parent.stat().st_mode & 0o222 and os.access(path.parent, os.W_OK)
    return beside if writable else Path.cwd() / beside.name


class _RejectsReport:
    """Writes every problem row with its line, outcome and reason, then the row as read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None
        self._writer: csv.DictWriter[str] | None = None

    def write(self, problems: list[Problem]) -> None:
        if not problems:
            return
        if self._writer is None:
            columns = list(dict.fromkeys(k for p in problems for k in p.values if k != "__error__"))
            self._file = self.path.open("w", newline="", encoding="utf-8")
            self._writer = csv.DictWriter(
                self._file, ["line", "outcome", "reason", *columns], extrasaction="ignore"
            )
            self._writer.writeheader()
        for problem in sorted(problems, key=lambda p: p.line):
            values = {k: v for k, v in problem.values.items() if k != "__error__"}
            self._writer.writerow(
                {
                    **values,
                    "line": problem.line,
                    "outcome": "kept, value dropped" if problem.kept else "rejected",
                    "reason": problem.reason,
                }
            )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _chunks(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    chunk: list[Record] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def import_file(
    factory: sessionmaker[Session],
    kind: Kind,
    path: Path,
    *,
    mapping: Mapping,
    source: str | None = None,
    rejects: Path | None = None,
    chunk_rows: int | None = None,
    progress: Progress | None = None,
) -> ImportSummary:
    """Import ``path`` as ``kind``; returns the summary, with ``read = imported + merged +
    rejected``. Problems are written to the rejects report (``<file>.rejects.csv``)."""
    settings = get_settings()
    source = source or mapping.source or "import"
    importer = make_importer(kind, mapping, source=source, region=settings.default_region)
    summary = ImportSummary(kind=kind, file=path)
    report = _RejectsReport(rejects or default_rejects_path(path))
    started = time.perf_counter()
    with unit_of_work(factory) as session:
        run = ImportRun(
            kind=kind, file=str(path), source=source, finished_at=None, rejects_path=None
        )
        session.add(run)
    try:
        with Source(
            path,
            delimiter=mapping.delimiter,
            encoding=mapping.encoding,
            header=mapping.header,
            names=mapping.names,
            sheet=mapping.sheet,
        ) as src:
            chunks = _chunks(src.records(), chunk_rows or settings.import_chunk_rows)
            for number, chunk in enumerate(chunks, start=1):
                with unit_of_work(factory) as session:
                    result = importer.process(session, chunk)
                    if number & (number - 1) == 0:  # chunks 1, 2, 4, 8...: the store grows
                        refresh_statistics(session, GROWING_TABLES)
                summary.read += len(chunk)
                summary.imported += result.imported
                summary.merged += result.merged
                summary.rejected += result.rejected
                summary.fields_dropped += len(result.problems) - result.rejected
                report.write(result.problems)
                if progress is not None:
                    progress(src.consumed, src.size)
    finally:
        report.close()
    if report._writer is not None:
        summary.rejects_path = report.path
    summary.seconds = time.perf_counter() - started
    with unit_of_work(factory) as session:
        stored = session.get(ImportRun, run.id)
        assert stored is not None
        stored.finished_at = utcnow()
        stored.read, stored.imported = summary.read, summary.imported
        stored.merged, stored.rejected = summary.merged, summary.rejected
        stored.rejects_path = str(summary.rejects_path) if summary.rejects_path else None
    return summary
