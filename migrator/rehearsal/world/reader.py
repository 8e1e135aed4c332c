"""Reading world and fault files: TOML text to dicts, and typed getters that fail with one clear line.

Split from `model` so the schema's parts (`model`, `balancing`) share one reader without importing each
other. Every error is a `WorldFileError` naming the file, the key and the reason.
"""

from __future__ import annotations

import math
import re
import tomllib
from typing import Any


class WorldFileError(ValueError):
    """A world or fault file is wrong; the message is one line naming file, key and reason."""


class Reader:
    """Reads one TOML table with typed getters that raise WorldFileError naming file and key."""

    def __init__(self, source: str, path: str, table: dict[str, Any]):
        self.source, self.path, self.table = source, path, table
        self.used: set[str] = set()

    def fail(self, key: str, reason: str) -> WorldFileError:
        key = key if key.isprintable() else ascii(key)[1:-1]  # a quoted TOML key may hold a newline
        where = f"{self.path}.{key}" if self.path else key
        return WorldFileError(f"{self.source}: {where}: {reason}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., *, choices=None,
            pattern: re.Pattern[str] | None = None) -> Any:
        self.used.add(key)
        if key not in self.table:
            if default is ...:
                raise self.fail(key, "is required")
            return default
        value = self.table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and kind is not bool and kind != (bool,):
            raise self.fail(key, f"must be {_kind_name(kind)}, not a boolean")
        if not isinstance(value, kind):
            raise self.fail(key, f"must be {_kind_name(kind)}, got {type(value).__name__}")
        if isinstance(value, float) and not (math.isfinite(value) and value >= 0):  # nan/inf/-1 hang or crash
            raise self.fail(key, f"must be a finite, non-negative number; got {value!r}")
        if choices is not None and value not in choices:
            raise self.fail(key, f"must be one of {', '.join(map(str, choices))}; got {value!r}")
        if pattern is not None and isinstance(value, str) and not pattern.match(value):
            raise self.fail(key, f"{value!r} does not match {pattern.pattern}")
        return value

    def strings(self, key: str, default: list[str] | None = None, *, choices=None,
                pattern: re.Pattern[str] | None = None) -> list[str]:
        values = self.get(key, list, default if default is not None else [])
        for item in values:
            if not isinstance(item, str):
                raise self.fail(key, "must be a list of strings")
            if choices is not None and item not in choices:
                raise self.fail(key, f"entries must be one of {', '.join(choices)}; got {item!r}")
            if pattern is not None and not pattern.match(item):
                raise self.fail(key, f"{item!r} does not match {pattern.pattern}")
        return list(values)

    def tables(self, key: str) -> list[Reader]:
        self.used.add(key)
        raw = self.table.get(key, [])
        if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
            raise self.fail(key, "must be an array of tables ([[...]])")
        prefix = f"{self.path}.{key}" if self.path else key
        return [Reader(self.source, f"{prefix}[{i}]", t) for i, t in enumerate(raw)]

    def table_reader(self, key: str) -> Reader:
        self.used.add(key)
        raw = self.table.get(key, {})
        if not isinstance(raw, dict):
            raise self.fail(key, "must be a table")
        return Reader(self.source, f"{self.path}.{key}" if self.path else key, raw)

    def done(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.fail(unknown[0], "unknown key")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
             list: "a list", dict: "a table"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def parse_toml_text(text: str | bytes, source: str) -> dict[str, Any]:
    """TOML text to a dict, or WorldFileError naming the file, line and reason."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WorldFileError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise WorldFileError(f"{source}: not valid TOML: {exc}") from None
    except RecursionError:
        raise WorldFileError(f"{source}: not valid TOML: nested too deeply") from None
