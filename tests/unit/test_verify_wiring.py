"""verify's wiring: the share of the budget it draws from, and a progress line only on a TTY."""

from __future__ import annotations

import argparse
import io
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.components import COMPONENTS
from exporter.config import parse_config
from exporter.verify import Audit, Reading, verify
from exporter.verify_args import read_arguments
from exporter.verify_report import SourceEstimate
from tests.stack import free_port
from tests.unit.test_verify_args import NOW, args, config
from tests.unit.test_verify_metrics import samples


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def audit(tmp_path: Path, share: str) -> Audit:
    export = tmp_path / "export.jsonl"
    export.write_text('{"id": "a"}\n')
    namespace = args(siem_export=export, budget_share=share)
    loaded = config(tmp_path)
    return Audit(loaded, read_arguments(loaded, namespace, NOW), namespace)


@pytest.mark.parametrize(("share", "interval"), [("50%", 4.0), ("100%", 2.0), ("10%", 20.0)])
def test_the_audit_sends_one_request_at_a_time_at_its_share_of_the_budget(
    tmp_path: Path, share: str, interval: float
) -> None:
    """Graph's 5 requests per 10 s: half of it is one request every 4 s, never a burst."""
    built = audit(tmp_path, share)
    source = built.sources[0]
    budget = built.budget(source)
    assert (budget.requests, budget.per) == (1, pytest.approx(interval))
    assert built.budget(source) is budget  # one per family, shared by its sources


def test_progress_is_written_only_to_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for stream, shown in ((io.StringIO(), False), (Terminal(), True)):
        monkeypatch.setattr(sys, "stderr", stream)
        built = audit(tmp_path, "100%")
        reading = Reading(built.sources[0], iter(()), None, SourceEstimate("signins", 9e3, 9, 0.5))
        built.show_progress(reading, 3, 2500)
        text = stream.getvalue()
        assert (text == "") != shown
        if shown:
            assert text.startswith("\rsignins: 3 pages, 2,500 events, about 12 seconds left")


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """verify configures the exporter's loggers for its process; undo it for the next test."""
    saved = [
        (logger, logger.handlers[:], logger.level, logger.propagate)
        for logger in (logging.getLogger("exporter"), logging.getLogger("msal"))
    ]
    yield
    for logger, handlers, level, propagate in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.mark.usefixtures("logging_restored")
def test_an_api_that_cannot_be_read_proves_nothing_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "export.jsonl"
    export.write_text('{"id": "a"}\n')
    closed = f"https://127.0.0.1:{free_port()}"
    document = {
        "tenant_id": "t",
        "client_id": "c",
        "client_secret": "never-printed",
        "authority_host": closed,
        "graph_url": closed,
        "sources": [{"name": "signins", "endpoint": "/v1.0/auditLogs/signIns"}],
        "sinks": [{"host": "127.0.0.1", "port": 514}],
        "state": {"path": str(tmp_path / "state.db")},
    }
    result = tmp_path / "verify.prom"
    namespace = argparse.Namespace(
        **vars(args(siem_export=export, end="2026-01-01T00:00:00Z", metrics_file=result)),
        deliver_missing=False,
        json=True,
        yes=False,
    )
    assert verify(parse_config(document, {}, COMPONENTS), namespace) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[-1].startswith("siem-exporter: verify failed, nothing proven: ")
    assert "never-printed" not in err
    assert samples(result)["siem_exporter_verify_exit_status"] == 1
    assert "never-printed" not in result.read_text()
