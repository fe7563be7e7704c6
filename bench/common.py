"""Shared helpers of the benchmarks: medians, Markdown result tables, /proc readings.

Every benchmark reports the median of several runs (one slow run on a shared machine must
not move the figure) and prints one Markdown table that it also writes to
``bench/results/<name>.md``, so the README's Performance section can quote the file as is.
CPU time and peak memory come from ``/proc`` (no psutil: it is not a dependency).

API: :func:`median`, :func:`write_table`, :func:`cpu_seconds`, :func:`peak_rss_bytes`,
:func:`file_bytes`.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def median(values: Iterable[float]) -> float:
    """The median of ``values``; ValueError when there are none (a benchmark that measured nothing)."""
    data = list(values)
    if not data:
        raise ValueError("median of no measurements")
    return float(statistics.median(data))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table; every cell is rendered with ``str``."""
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    lines.extend("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)
    return "\n".join(lines)


def write_table(
    name: str,
    header: Sequence[str],
    rows: Sequence[Sequence[object]],
    notes: Sequence[str] = (),
    results_dir: Path = RESULTS_DIR,
) -> Path:
    """Print the table (then ``notes``, one paragraph each) and write both to ``<name>.md``.

    ``results_dir`` is overridable so a smoke run in the tests never overwrites the real
    results. Returns the path written.
    """
    text = markdown_table(header, rows)
    if notes:
        text += "\n\n" + "\n\n".join(notes)
    text += "\n"
    print(text, end="", flush=True)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.md"
    path.write_text(text, encoding="utf-8")
    return path


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (``/proc/PID/stat``), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    # The command name (field 2) may hold spaces; the fields after its ")" are fixed.
    after_name = stat.rpartition(")")[2].split()
    utime, stime = int(after_name[11]), int(after_name[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def peak_rss_bytes(pid: int) -> int:
    """The peak resident set size of a process so far (``VmHWM`` of ``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmHWM in /proc/{pid}/status")


def file_bytes(*paths: Path) -> int:
    """The summed size of the files that exist among ``paths`` (a WAL may be absent)."""
    return sum(path.stat().st_size for path in paths if path.exists())
