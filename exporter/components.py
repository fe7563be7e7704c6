"""The source APIs and sink types a config may name: the one place an adapter is registered.

A source's ``api`` key and a sink's ``type`` key pick an entry here; the entry's keys are
declared beside its adapter. :mod:`exporter.config` takes this registry as an argument, so
it reads every section without importing an adapter, and a new source or sink is its
module plus its lines here (a source's construction is still :mod:`exporter.service`'s).
"""

from __future__ import annotations

from collections.abc import Callable

from exporter.config import Components, SinkConfig
from exporter.graph_query import GRAPH_SOURCE
from exporter.management_query import MANAGEMENT_API, MANAGEMENT_SOURCE
from exporter.pipeline import Sink
from exporter.syslog_sink import SYSLOG_SINK, SyslogSink

COMPONENTS = Components(
    sources={"graph": GRAPH_SOURCE, MANAGEMENT_API: MANAGEMENT_SOURCE},
    sinks={"syslog": SYSLOG_SINK},
)

_SINK_ADAPTERS: dict[str, Callable[[SinkConfig], Sink]] = {
    "syslog": lambda sink: SyslogSink(sink.name, sink.settings),
}


def open_sink(sink: SinkConfig) -> Sink:
    """The adapter that writes to ``sink``, as its ``type`` says."""
    return _SINK_ADAPTERS[sink.type](sink)
