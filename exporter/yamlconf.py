"""The generic half of reading a config file: YAML in, a checked mapping out.

Nothing here knows a key of ours. It reads the file (every failure a ``ConfigError`` on
``(file)``), replaces ``${VAR}`` in every string by that environment variable (``$$`` is a
literal ``$``), parses the value kinds the config uses (durations such as ``90s``, ``5m``,
``1h``, ``2d``; shares; ``HOST:PORT``), and reads one mapping at a time with
:class:`Section`, which refuses unknown keys and names the offending key in every error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from exporter.errors import ConfigError

MAX_DURATION = 3650 * 86400.0
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_ENV_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

T = TypeVar("T")


def read_document(path: str | Path, environ: Mapping[str, str]) -> dict[str, Any]:
    """The YAML mapping at ``path`` with every ``${VAR}`` substituted from ``environ``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("(file)", f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError("(file)", f"not UTF-8 text (byte {exc.start})") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError("(file)", f"not valid YAML{where}") from None
    except (ValueError, OverflowError) as exc:
        # PyYAML builds a date such as 2001-02-30 with datetime and lets its error through.
        raise ConfigError("(file)", f"not valid YAML ({exc})") from None
    except RecursionError:
        raise ConfigError("(file)", "not valid YAML (nested too deeply)") from None
    except Exception as exc:
        # PyYAML's constructors leak any error on an explicitly tagged scalar, e.g.
        # `!!timestamp nope` raises AttributeError.
        raise ConfigError("(file)", f"not valid YAML ({type(exc).__name__})") from None
    if not isinstance(document, dict):
        raise ConfigError("(file)", "expected a mapping of keys at the top level")
    try:
        substituted: dict[str, Any] = substitute(document, "", environ)
    except RecursionError:
        raise ConfigError("(file)", "nested too deeply") from None
    return substituted


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``5m``, ``1h``, ``2d`` or ``250ms``; ValueError for anything else."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"expected a duration like 90s, 5m, 1h or 2d, got {text!r}")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds > MAX_DURATION:
        raise ValueError(f"must not exceed {MAX_DURATION // 86400:.0f}d, got {text!r}")
    return seconds


def parse_share(text: str) -> float:
    """A share of the budget: ``10%`` or ``0.1``; ValueError for anything else."""
    value = text.strip()
    try:
        return float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise ValueError(f"expected a share like 10% or 0.1, got {text!r}") from None


def format_duration(seconds: float) -> str:
    """The shortest exact duration string for ``seconds`` (the inverse of parse_duration)."""
    for unit in ("d", "h", "m", "s"):
        size = _DURATION_UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) to a (host, port) pair."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def substitute(value: Any, key: str, environ: Mapping[str, str]) -> Any:
    """Replace ``${VAR}`` in every string of the document, naming the key when VAR is unset."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name is None:
                return "$"
            if name not in environ:
                raise ConfigError(key or "(file)", f"environment variable {name} is not set")
            return environ[name]

        return _ENV_REFERENCE.sub(replace, value)
    if isinstance(value, dict):
        return {k: substitute(v, join_key(key, str(k)), environ) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, f"{key}[{i}]", environ) for i, v in enumerate(value)]
    return value


def join_key(parent: str, key: str) -> str:
    """``parent.key``, or ``key`` at the top level: how errors name a key."""
    return f"{parent}.{key}" if parent else key


class Section:
    """One mapping of the document, read key by key with types checked and unknown keys refused."""

    def __init__(self, data: Any, path: str, known: tuple[str, ...]) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path or "(file)", "expected a mapping")
        for key in data:
            if key not in known:
                label = key if isinstance(key, str) and key.strip() else repr(key)
                raise ConfigError(join_key(path, label), "unknown key")
        self.data = data
        self.path = path

    def key(self, name: str) -> str:
        return join_key(self.path, name)

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def get(
        self, name: str, kind: type[T], default: T | None = None, *, required: bool = False
    ) -> T:
        value = self.data.get(name)
        if value is None:
            if required and default is None:
                raise ConfigError(self.key(name), "is required")
            return default  # type: ignore[return-value]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(self.key(name), f"expected {_TYPE_NAMES[kind]}, got {value!r}")
        return value

    def text(self, name: str, default: str | None = None, *, required: bool = False) -> str:
        value = self.get(name, str, default, required=required)
        if value is not None and not value.strip() and required:
            raise ConfigError(self.key(name), "must not be empty")
        return value

    def share(self, name: str, default: str) -> float:
        """A share written ``10%`` or as a number such as ``0.1``."""
        value = self.data.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return self.convert(name, default, parse_share)

    def duration(self, name: str, default: str) -> float:
        return self.convert(name, default, parse_duration)

    def convert(self, name: str, default: str, parse: Callable[[str], T]) -> T:
        text = self.text(name, default)
        try:
            return parse(text)
        except ValueError as exc:
            raise ConfigError(self.key(name), str(exc)) from None

    def choice(self, name: str, options: tuple[str, ...], default: str) -> str:
        value = self.text(name, default)
        if value not in options:
            raise ConfigError(
                self.key(name), f"expected one of {', '.join(options)}, got {value!r}"
            )
        return value


_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "a mapping",
}
