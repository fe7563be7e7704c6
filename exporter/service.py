"""Wires a :class:`Config` into a running exporter: ledger, token, budget, sinks, loops, HTTP.

``siem-exporter run`` and ``siem-exporter demo`` both build an :class:`Exporter`; the demo
hands it a registry of its own so that it can read the figures it prints.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.auth import TokenProvider
from exporter.budget import BudgetShares, RequestBudget
from exporter.clock import RealClock
from exporter.collector import SourceLoop
from exporter.components import open_sink
from exporter.config import Config, SourceConfig
from exporter.deadletter import DeadLetters, dead_letter_path
from exporter.delivery import Delivery
from exporter.errors import ConfigError
from exporter.graph import GraphClient
from exporter.https import VerifiedSession, trust_bundle
from exporter.inband import InbandWarnings
from exporter.ledger import Ledger
from exporter.logs import fields
from exporter.management_activity import ManagementActivitySource, ManagementMetrics
from exporter.management_http import ManagementHttp
from exporter.management_query import MANAGEMENT_API, is_tenant_guid
from exporter.metrics import ExporterMetrics, Health, start_http_server
from exporter.pipeline import Source
from exporter.verify_metrics import VerifyResultFile

log = logging.getLogger(__name__)


class Exporter:
    """Everything one config runs; ``start`` then ``shutdown`` (or ``wait``)."""

    def __init__(self, config: Config, registry: CollectorRegistry | None = None) -> None:
        if any(s.api == MANAGEMENT_API for s in config.sources) and not is_tenant_guid(
            config.tenant_id
        ):
            raise ConfigError("tenant_id", "the Management Activity API needs the tenant's GUID")
        self.config = config
        self.stop = threading.Event()
        self.clock = RealClock(self.stop)
        self.registry = registry or CollectorRegistry()
        self.metrics = ExporterMetrics(self.registry)
        if config.metrics_verify_file:
            self.registry.register(VerifyResultFile(Path(config.metrics_verify_file)))
        self.metrics.initialise(
            config.sources,
            [s.name for s in config.sinks],
            {family: budget.rate for family, budget in config.budgets.items()},
        )
        self.health = Health({s.name: s.poll_interval for s in config.sources})
        self.ledger = Ledger(config.state_path)
        verify = trust_bundle(config.ca_bundle)
        self.auth_http = VerifiedSession(verify)
        self.tokens = TokenProvider(config, self.metrics, self.clock, self.auth_http)
        # One budget per family, shared by the family's sources (each in its own thread).
        self.budgets = {
            family: RequestBudget(budget.requests, budget.per, self.clock)
            for family, budget in config.budgets.items()
        }
        members = Counter(s.settings.budget_family for s in config.sources)
        self.shares = {
            family: BudgetShares(budget.usable, members[family])
            for family, budget in config.budgets.items()
        }
        self.delivery = Delivery(
            [open_sink(s) for s in config.sinks],
            self.metrics,
            self.health,
            self.clock,
            DeadLetters(
                dead_letter_path(config.state_path), config.dead_letter_max_mb * 1024 * 1024
            ),
        )
        self.warnings = InbandWarnings(config.inband_warnings, self.delivery, self.clock)
        self.graph_sessions = [VerifiedSession(verify, timeout=120.0) for _ in config.sources]
        management = [s for s in config.sources if s.api == MANAGEMENT_API]
        self.management_tokens = TokenProvider(
            config, self.metrics, self.clock, self.auth_http, config.management_url
        )
        self.management_metrics = ManagementMetrics(self.registry) if management else None
        if self.management_metrics is not None:
            self.management_metrics.initialise(self.metrics, management)
        self.loops = [
            SourceLoop(
                source,
                self._open_source(source, session),
                self.ledger,
                self.delivery,
                self.metrics,
                self.health,
                self.clock,
                self.stop,
                self.warnings,
                config.budget_of(source),
                self.shares[source.settings.budget_family],
            )
            for source, session in zip(config.sources, self.graph_sessions, strict=True)
        ]
        self.threads: list[threading.Thread] = []
        self.http_server: WSGIServer | None = None

    def _open_source(self, source: SourceConfig, session: VerifiedSession) -> Source:
        """The adapter that reads ``source``, as its ``api`` says."""
        budget = self.budgets[source.settings.budget_family]
        if self.management_metrics is not None and source.api == MANAGEMENT_API:
            url = self.config.management_url
            http = ManagementHttp(
                url, source.name, self.management_tokens, budget, self.metrics, self.clock, session
            )
            return ManagementActivitySource(
                url,
                self.config.tenant_id.lower(),
                source,
                http,
                self.ledger,
                self.metrics,
                self.management_metrics,
                self.clock,
            )
        return GraphClient(
            self.config.graph_url,
            source,
            self.tokens,
            budget,
            self.metrics,
            self.clock,
            session,
        )

    def start(self) -> None:
        """Serve metrics and start one thread per source."""
        self.http_server, _ = start_http_server(
            self.config.metrics_listen, self.registry, self.health
        )
        for loop in self.loops:
            thread = threading.Thread(target=loop.run, name=f"source-{loop.source.name}")
            thread.start()
            self.threads.append(thread)
        log.info(
            "siem-exporter started",
            extra=fields(
                version=__version__,
                sources=[s.name for s in self.config.sources],
                sinks=[s.name for s in self.config.sinks],
                metrics=f"http://{self.config.metrics_listen[0]}:{self.metrics_port}/metrics",
            ),
        )

    @property
    def metrics_port(self) -> int:
        """The port /metrics is served on (useful when configured as 0)."""
        assert self.http_server is not None, "start() first"
        return int(self.http_server.server_address[1])

    def shutdown(self) -> None:
        """Let each loop finish its page in flight, then close sinks, ledger and HTTP."""
        self.stop.set()
        for thread in self.threads:
            thread.join()
        self.delivery.close()
        self.ledger.close()
        for session in [self.auth_http, *self.graph_sessions]:
            session.close()
        if self.http_server is not None:
            self.http_server.shutdown()
            self.http_server.server_close()
        log.info("siem-exporter stopped")
