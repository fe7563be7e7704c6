"""The generic half of reading a config file: YAML in, a checked mapping out.

Nothing here knows a key of ours. It reads the file (every failure a ``ConfigError`` on
``(file)``), replaces ``${VAR}`` in every string by that environment variable (``$$`` is a
literal ``$``), parses the value kinds the config uses (durations such as ``90s``, ``5m``,
``1h``, ``2d``; shares; ``HOST:PORT``), and reads one mapping at a time with
:class:`Section`, which refuses unknown keys and names the offending key in every error.

A section's keys can also be declared once, as :class:`Key` values in a :class:`Keys`
(its type and default, how check-config prints it, whether it is secret): the parser, the
error messages and the printer all come from that declaration. Each source API and sink
type declares its keys this way beside its adapter and registers a :class:`Kind`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml

from exporter.errors import ConfigError

MAX_DURATION = 3650 * 86400.0
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_ENV_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

T = TypeVar("T")
C = TypeVar("C")
V = TypeVar("V")


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

    def positive_duration(self, name: str, default: str) -> float:
        """A duration longer than zero: an interval, a window, a budget's period."""
        seconds = self.duration(name, default)
        if seconds <= 0:
            raise ConfigError(self.key(name), "must be longer than zero")
        return seconds

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


class Secret:
    """A string that never shows itself: ``repr`` and ``str`` print a mask."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that must send it (the token request)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def readable_file(section: Section, name: str, *, required: bool = False) -> str | None:
    """The path a key names, once it is known to be readable (so a typo fails at start)."""
    path = section.text(name, required=required)
    if path is None:
        return None
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(section.key(name), f"cannot read {path!r}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(section.key(name), "a path cannot contain a NUL character") from None
    return path


Values = dict[str, Any]
# A text key's default: a value, or computed from the keys of the section read before it.
TextDefault = str | None | Callable[[Values], str | None]


@dataclass(frozen=True, slots=True)
class Key:
    """One key of a section, declared once: how it is read (type, default, checks) and shown.

    ``read`` gets the section and the values of the keys declared before this one, so a
    default may depend on them (a time field on the endpoint). ``show`` turns the parsed
    value back into what check-config prints; a ``secret`` key prints as ``***``.
    """

    name: str
    read: Callable[[Section, Values], Any]
    show: Callable[[Any], Any] = lambda value: value
    secret: bool = False


class Keys:
    """The declared keys of one section, in the order check-config prints them."""

    def __init__(self, *keys: Key) -> None:
        self.keys = keys
        self.names = tuple(key.name for key in keys)

    def __add__(self, other: Keys) -> Keys:
        return Keys(*self.keys, *other.keys)

    def read(self, data: Any, path: str) -> Values:
        """Every declared key of the mapping ``data`` at ``path``, parsed; others refused."""
        section = Section(data, path, self.names)
        values: Values = {}
        for key in self.keys:
            values[key.name] = key.read(section, values)
        return values

    def show(self, config: object) -> Values:
        """The parsed values as check-config prints them, read from ``config``'s attributes."""
        shown: Values = {}
        for key in self.keys:
            value = getattr(config, key.name)
            shown[key.name] = "***" if key.secret and value is not None else key.show(value)
        return shown


@dataclass(frozen=True, slots=True)
class Kind(Generic[C]):
    """A source API or a sink type: its own keys, and how their values become its config.

    ``make`` receives the parsed values and the section's path; it checks what involves
    several keys (raising ``ConfigError`` on the key at fault) and builds the frozen config.
    A source API also names its request budgets: family to (requests, per seconds).
    """

    keys: Keys
    make: Callable[[Values, str], C]
    budgets: Mapping[str, tuple[int, float]] = field(default_factory=dict)


def text_key(
    name: str,
    default: TextDefault = None,
    *,
    required: bool = False,
    pattern: tuple[re.Pattern[str], str] | None = None,
    secret: bool = False,
) -> Key:
    """A string; ``pattern`` is a regular expression it must match and the error to give."""

    def read(section: Section, values: Values) -> str | Secret | None:
        fallback = default(values) if callable(default) else default
        value = section.text(name, fallback, required=required)
        if value is not None and pattern is not None and not pattern[0].match(value):
            raise ConfigError(section.key(name), pattern[1])
        return Secret(value) if secret and value is not None else value

    return Key(name, read, secret=secret)


def int_key(
    name: str, default: int | None = None, *, low: int, high: int, required: bool = False
) -> Key:
    """An integer between ``low`` and ``high``, both included (None when absent, no default)."""

    def read(section: Section, values: Values) -> int | None:
        value = section.get(name, int, default, required=required)
        if value is not None and not low <= value <= high:
            raise ConfigError(section.key(name), f"must be between {low} and {high}")
        return value

    return Key(name, read)


def flag_key(name: str, default: bool) -> Key:
    """``true`` or ``false``."""
    return Key(name, lambda section, values: section.get(name, bool, default))


def duration_key(name: str, default: str) -> Key:
    """A duration longer than zero, printed in its shortest exact form."""

    return Key(
        name, lambda section, values: section.positive_duration(name, default), show=format_duration
    )


def choice_key(name: str, options: tuple[str, ...], default: str) -> Key:
    """One of a few words."""
    return Key(name, lambda section, values: section.choice(name, options, default))


def table_key(name: str, table: Mapping[str, V], default: str) -> Key:
    """A name looked up in ``table`` (a syslog facility to its code); printed as the name."""
    names = {value: key for key, value in table.items()}
    return Key(
        name,
        lambda section, values: table[section.choice(name, tuple(table), default)],
        show=lambda value: names[value],
    )


def file_key(name: str) -> Key:
    """An optional path to a readable file."""
    return Key(name, lambda section, values: readable_file(section, name))
