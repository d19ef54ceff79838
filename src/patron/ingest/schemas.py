"""Results of an import: per-chunk counts, rejected rows and the summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Problem:
    """A bad value or an unusable row, with the file line it came from.

    ``kept`` is true when only the named field was dropped and the rest of the row was
    imported; false when the whole row was rejected.
    """

    line: int
    reason: str
    kept: bool
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChunkResult:
    """Counts of one chunk: every row read is imported, merged or rejected."""

    imported: int = 0
    merged: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return sum(1 for p in self.problems if not p.kept)

    def reject(self, line: int, reason: str, values: dict[str, Any]) -> None:
        self.problems.append(Problem(line, reason, kept=False, values=values))

    def dropped(self, line: int, reason: str, values: dict[str, Any]) -> None:
        self.problems.append(Problem(line, reason, kept=True, values=values))


@dataclass
class ImportSummary:
    """What one import did. ``read == imported + merged + rejected`` always holds."""

    kind: str
    file: Path
    read: int = 0
    imported: int = 0
    merged: int = 0
    rejected: int = 0
    fields_dropped: int = 0
    rejects_path: Path | None = None
    seconds: float = 0.0
    extra: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        """The one-line summary the CLI prints."""
        text = (
            f"{self.kind}: read {self.read:,} = imported {self.imported:,} + merged "
            f"{self.merged:,} + rejected {self.rejected:,}"
        )
        if self.fields_dropped:
            text += f"; {self.fields_dropped:,} bad values dropped from kept rows"
        if self.rejects_path is not None:
            text += f"; see {self.rejects_path}"
        return text
