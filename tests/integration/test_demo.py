"""``siem-exporter demo`` as a newcomer runs it: it must end with nothing lost or duplicated."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_catches_late_arrivals_and_loses_nothing() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "demo",
            "--duration",
            "20",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"^\s+missing\s+0$", out, re.M), out
    assert re.search(r"^\s+duplicates\s+0$", out, re.M), out
    generated = int(re.search(r"generated and visible\s+(\d+)", out).group(1))
    delivered = int(re.search(r"delivered to the SIEM\s+(\d+)", out).group(1))
    assert generated > 100 and delivered == generated
    late = int(re.search(r"late arrivals caught\s+(\d+)", out).group(1))
    lost_by_naive = int(re.search(r"windows would have lost (\d+)", out).group(1))
    assert late > 0 and lost_by_naive > 0, out
    assert "OK: nothing lost, nothing duplicated" in out
    # o365-exchange: the Management Activity API, counted by record Id against its truth.
    for source in (
        "signins",
        "noninteractive",
        "servicePrincipal",
        "directoryAudits",
        "o365-exchange",
    ):
        line = re.search(
            rf"^\s+{source}\s+generated (\d+), delivered (\d+), missing 0, "
            r"duplicates 0$",
            out,
            re.M,
        )
        assert line and int(line.group(1)) > 0 and line.group(1) == line.group(2), out
    assert out.count("] delivered") >= 3, "expected a progress line every few seconds"
