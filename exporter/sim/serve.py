"""`siem-exporter simulate`: run only the simulated tenant until told to stop.

The one JSON line on `out` is the whole interface for whoever started the process: it
names the URL, the CA to trust and the throwaway credentials (printing them is the point).
"""

from __future__ import annotations

import json
import signal
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import TextIO

from exporter.sim.scenario import SCENARIOS
from exporter.sim.tenant import SimulatedTenant


def parse_listen(listen: str) -> tuple[str, int]:
    """Split `HOST:PORT` (IPv6 as `[::1]:PORT`); port 0 asks for a free port."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"listen address must be HOST:PORT, got '{listen}'")
    return host.removeprefix("[").removesuffix("]"), int(port)


def serve(listen: str, scenario_name: str, workdir: Path | None, out: TextIO) -> int:
    """Serve the tenant on `listen` until SIGTERM/SIGINT; must run in the main thread.

    Without a `workdir` the PKI goes to a temporary directory removed on exit. A bad
    `listen` or an unknown scenario raises ValueError before anything is started.
    """
    host, port = parse_listen(listen)
    if scenario_name not in SCENARIOS:
        raise ValueError(f"unknown scenario '{scenario_name}' (one of {', '.join(SCENARIOS)})")
    scenario = SCENARIOS[scenario_name]
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sim-")))
        previous = {
            signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)
        }
        for signum, handler in previous.items():
            stack.callback(signal.signal, signum, handler)
        tenant = SimulatedTenant(scenario, workdir)
        tenant.start(host, port)
        stack.callback(tenant.stop)
        announcement = {
            "base_url": tenant.base_url,
            "ca_file": str(tenant.ca_file),
            "tenant_id": tenant.tenant_id,
            "client_id": tenant.client_id,
            "client_secret": tenant.client_secret,
            "scenario": scenario.name,
        }
        out.write(json.dumps(announcement) + "\n")
        out.flush()
        while not stop.wait(0.5):
            pass
    return 0
