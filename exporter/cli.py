"""The command line: ``run``, ``demo``, ``simulate``, ``check-config`` and ``verify`` (CONTRACT.md).

Exit status: 0 on success or clean shutdown, 2 on a bad config (one line on stderr naming
the key), 1 on a fatal runtime error.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import yaml

from exporter import __version__
from exporter.components import COMPONENTS
from exporter.config import Config, effective_config, load_config
from exporter.errors import ConfigError, ExporterError
from exporter.logs import configure_logging, fields
from exporter.verify_args import add_verify_arguments

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_CONFIG = 2
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

log = logging.getLogger("exporter.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="siem-exporter",
        description="Pull Microsoft Graph audit logs into a SIEM, without loss or duplicates.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the collector until SIGTERM/SIGINT")
    run.add_argument("--config", required=True, type=Path, help="the YAML config file")

    check = commands.add_parser("check-config", help="validate and print the effective config")
    check.add_argument("--config", required=True, type=Path, help="the YAML config file")

    demo = commands.add_parser("demo", help="simulated tenant + collector + SIEM, no config")
    demo.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    demo.add_argument("--metrics-listen", default="127.0.0.1:9795", help="HOST:PORT for /metrics")

    verify = commands.add_parser(
        "verify", help="compare the API for a past stretch with the ledger and a SIEM export"
    )
    add_verify_arguments(verify)

    simulate = commands.add_parser("simulate", help="serve only the simulated tenant")
    simulate.add_argument("--listen", required=True, help="HOST:PORT (port 0: any free port)")
    simulate.add_argument(
        "--scenario", default="demo", help="demo | test | entra | late | realistic"
    )
    simulate.add_argument("--workdir", type=Path, help="where to write the CA (default: temp)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.config)
    if args.command == "run":
        return run(args.config)
    if args.command == "verify":
        config = _load(args.config)
        if config is None:
            if args.metrics_file is not None:  # a scheduled audit's bad config is seen too
                from exporter.verify_metrics import write_result

                return write_result(args.metrics_file, EXIT_CONFIG, [], time.time())
            return EXIT_CONFIG
        from exporter.verify import verify

        return verify(config, args)
    if args.command == "demo":
        from exporter.demo import run_demo

        return run_demo(args.duration, args.metrics_listen)
    from exporter.sim.scenario import SCENARIOS
    from exporter.sim.serve import serve

    if args.scenario not in SCENARIOS:
        print(f"siem-exporter: unknown scenario {args.scenario!r}; one of {', '.join(SCENARIOS)}",
              file=sys.stderr)  # fmt: skip
        return EXIT_CONFIG
    return serve(args.listen, args.scenario, args.workdir, sys.stdout)


def one_line(text: str) -> str:
    """``text`` with every control character escaped: an error is exactly one stderr line.

    A key or a path in the config may hold a newline, which would otherwise split the line.
    """
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


def _load(path: Path) -> Config | None:
    try:
        return load_config(path, COMPONENTS)
    except ConfigError as exc:
        print(f"siem-exporter: config error: {one_line(str(exc))}", file=sys.stderr)
        return None


def check_config(path: Path) -> int:
    """Print the effective config, secrets masked; exit 2 with the offending key if invalid."""
    config = _load(path)
    if config is None:
        return EXIT_CONFIG
    sys.stdout.write(
        yaml.safe_dump(effective_config(config, COMPONENTS), sort_keys=False, allow_unicode=True)
    )
    return EXIT_OK


def run(path: Path) -> int:
    """The collector, until SIGTERM or SIGINT; then finish the page in flight and exit 0."""
    config = _load(path)
    if config is None:
        return EXIT_CONFIG
    configure_logging(config.log_level)
    from exporter.process_tuning import prepare_for_a_long_run
    from exporter.service import Exporter

    try:
        exporter = Exporter(config)
        prepare_for_a_long_run()
        exporter.start()
    except (ExporterError, OSError) as exc:
        log.error("cannot start", extra=fields(error=str(exc)))
        print(f"siem-exporter: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_FATAL

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("shutting down", extra=fields(signal=signal.Signals(signum).name))
        exporter.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not exporter.stop.wait(1.0):
        if not any(thread.is_alive() for thread in exporter.threads):
            log.error("every source loop has died")
            exporter.shutdown()
            return EXIT_FATAL
    exporter.shutdown()
    return EXIT_OK
