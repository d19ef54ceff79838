"""What the HTTP benchmarks share: reading an answer on a bare HTTP/1.1 connection, and
the CPU time processes have used (Linux's ``/proc``).

The benchmarks' clients speak HTTP/1.1 on the socket instead of through a client library:
on a 2-core machine the library's CPU would be taken from the server being measured.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Callable
from pathlib import Path


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The status and body of the next answer on a kept-alive connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise ValueError(f"an answer without Content-Length: {head[:200]!r}")
    return int(lines[0].split()[1]), await reader.readexactly(length)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds a process has used so far; NaN when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children, e.g. uvicorn's workers."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    below = children.read_text().split() if children.exists() else []
    return cpu_seconds(pid) + sum(tree_cpu(int(child)) for child in below)


def cpu_of(pick: Callable[[int, str], bool]) -> float:
    """CPU seconds of the live processes that ``pick(pid, command line)`` selects."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # the process ended meanwhile
            continue
        if pick(int(entry.name), command):
            spent = cpu_seconds(int(entry.name))
            total += 0.0 if math.isnan(spent) else spent
    return total
