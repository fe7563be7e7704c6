"""The arguments of ``siem-exporter verify``, read into values or refused in one line.

Kept apart from :mod:`exporter.verify` so that the command line parser does not import the
Graph client and MSAL for every command, and so that each refusal names its argument the
way a config error names its key (exit 2).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from exporter.config import Config, SourceConfig
from exporter.graph_query import GraphSettings
from exporter.verify_compare import Stretch
from exporter.verify_export import FORMATS, Export, ExportFormatError, parse_export
from exporter.verify_report import CONFIRM_ABOVE


class ArgumentProblem(Exception):
    """A bad argument: exit 2 with one stderr line naming it."""

    def __init__(self, argument: str, why: str) -> None:
        super().__init__(f"{argument}: {why}")


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``verify`` (see CONTRACT.md and README, "Prove it")."""
    parser.add_argument("--config", required=True, type=Path, help="the YAML config file")
    parser.add_argument("--from", dest="start", required=True, help="ISO 8601 (UTC if no zone)")
    parser.add_argument("--to", dest="end", required=True, help="ISO 8601, excluded")
    parser.add_argument("--source", action="append", help="audit only this source (repeatable)")
    parser.add_argument("--siem-export", type=Path, help="JSON lines, syslog lines or CSV")
    parser.add_argument("--format", choices=FORMATS, default="auto", help="of the export")
    parser.add_argument("--id-field", help="the export's id field or column (dotted path)")
    parser.add_argument(
        "--budget-share", help="of each budget family, e.g. 50%% (default: reserve)"
    )
    parser.add_argument("--deliver-missing", action="store_true", help="send what the SIEM lacks")
    parser.add_argument("--json", action="store_true", help="the report as JSON for scripts")
    parser.add_argument(
        "--metrics-file", type=Path, help="also write the result here as Prometheus text (.prom)"
    )
    parser.add_argument(
        "--yes", action="store_true", help=f"run even if over {CONFIRM_ABOVE / 60:.0f} min"
    )


def parse_time(text: str, argument: str) -> float:
    """An ISO 8601 time (``Z``, an offset, or none for UTC; a date is its midnight)."""
    value = text.strip()
    if value[-1:] in ("z", "Z"):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ArgumentProblem(argument, f"expected an ISO 8601 time, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_share(text: str | None, reserve: float) -> float:
    """The share of a budget family the audit may spend: ``50%`` or ``0.5``; default ``reserve``."""
    if text is None:
        if reserve <= 0:
            raise ArgumentProblem("--budget-share", "budget.reserve is 0%: give a share")
        return reserve
    try:
        share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ArgumentProblem(
            "--budget-share", f"expected a share such as 50%, got {text!r}"
        ) from None
    if not 0 < share <= 1:
        raise ArgumentProblem("--budget-share", "must be above 0% and at most 100%")
    return share


def chosen_sources(config: Config, names: Sequence[str] | None) -> list[SourceConfig]:
    """The Graph sources to audit: those named, or every one the config has."""
    graph = [s for s in config.sources if isinstance(s.settings, GraphSettings)]
    if not names:
        if not graph:
            raise ArgumentProblem("--source", "the config has no Graph source to re-read")
        return graph
    by_name = {s.name: s for s in config.sources}
    for name in names:
        if name not in by_name:
            raise ArgumentProblem(
                "--source", f"no source {name!r} in the config ({', '.join(by_name)})"
            )
        if by_name[name] not in graph:
            raise ArgumentProblem(
                "--source", f"{name!r} is not a Graph source; verify re-reads Graph only"
            )
    return [by_name[name] for name in dict.fromkeys(names)]


def compared_fields(sources: Sequence[SourceConfig]) -> frozenset[str]:
    """The fields of an exported event the comparison reads: the id and each window field
    (for records that change, the window field is the version field too)."""
    windows = {source.settings.window_field for source in sources}
    return frozenset({"id", *windows})


def read_export(
    path: Path, fmt: str, id_field: str | None, sources: Sequence[SourceConfig]
) -> Export:
    try:
        with path.open(encoding="utf-8", errors="replace", newline="") as lines:
            export = parse_export(lines, fmt, id_field, compared_fields(sources))
    except OSError as exc:
        raise ArgumentProblem(
            "--siem-export", f"cannot read {path}: {exc.strerror or exc}"
        ) from None
    except ExportFormatError as exc:
        raise ArgumentProblem("--siem-export", f"{path}: {exc}") from None
    if export.unreadable and not export.records:
        raise ArgumentProblem(
            "--siem-export",
            f"{path}: no line holds an event as {export.format} (line {export.unreadable[0]}); "
            "give --format or --id-field",
        )
    return export


@dataclass(frozen=True, slots=True)
class Arguments:
    """What the arguments ask for, checked: the stretch, the sources, the share, the export."""

    stretch: Stretch
    sources: list[SourceConfig]
    share: float
    export: Export | None


def read_arguments(config: Config, args: argparse.Namespace, now: float) -> Arguments:
    """The checked arguments; an :class:`ArgumentProblem` names the first bad one."""
    start, end = parse_time(args.start, "--from"), parse_time(args.end, "--to")
    if end <= start:
        raise ArgumentProblem("--to", "must be after --from")
    if end > now:
        raise ArgumentProblem("--to", "is in the future: verify audits a closed stretch")
    sources = chosen_sources(config, args.source)
    share = parse_share(args.budget_share, config.budget.reserve)
    export = None
    if args.siem_export is not None:
        export = read_export(args.siem_export, args.format, args.id_field, sources)
    state = Path(config.state_path)
    if export is None and not state.exists():
        raise ArgumentProblem(
            "--siem-export", f"needed: there is no ledger at {state} to compare with"
        )
    return Arguments(Stretch(start, end), sources, share, export)
