"""The TOML side of plan loading: one table with typed getters, and values shown safely in one-line errors.

Kept apart from `plan.py` (which says what a plan means) so each stays short. Every failure is a `PlanError`
`FILE: KEY: reason`; a value that could be a secret is never echoed.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any


class PlanError(ValueError):
    """The plan is unusable; str() is one line: `FILE: KEY: reason`."""


# Any run this long of the RawSecretAccessKey alphabet might be a secret: such values are never echoed.
SECRETISH = re.compile(r"[a-zA-Z0-9/+=]{43,}")
_TOML_TYPES = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "an array",
               dict: "a table"}


def one_line(text: str) -> str:
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def show(value: Any) -> str:
    """A value for an error message: quoted, one line, short, and never something that could be a secret."""
    if isinstance(value, str) and SECRETISH.search(value):
        return "(value not shown: it could be a secret)"
    text = repr(value)
    return one_line(text if len(text) <= 140 else text[:137] + "...")


def decode_toml(text: str | bytes, source: str, max_bytes: int, what: str) -> tuple[dict[str, Any], str, bytes]:
    """UTF-8 TOML of at most `max_bytes` -> (the document, its text, its bytes); a PlanError names `source`."""
    src = one_line(str(source))
    if isinstance(text, str):
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise PlanError(f"{src}: not UTF-8 text (character {exc.start})") from None
    else:
        raw = bytes(text)
    if len(raw) > max_bytes:
        raise PlanError(f"{src}: larger than {max_bytes} bytes ({max_bytes // 1048576} MiB); not {what}")
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PlanError(f"{src}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = tomllib.loads(decoded.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as exc:
        reason = SECRETISH.sub("(not shown)", str(exc))  # tomllib quotes duplicate keys
        raise PlanError(one_line(f"{src}: not valid TOML: {reason}")) from None
    except RecursionError:
        raise PlanError(f"{src}: not valid TOML: nested too deeply") from None
    return data, decoded, raw


def type_name(value: Any) -> str:
    for kind, name in _TOML_TYPES.items():
        if isinstance(value, kind):
            return name.split(" ", 1)[1]
    return type(value).__name__  # datetime, date, time


def _key_text(key: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_-]+(\[\d+\])*", key) and not SECRETISH.search(key):
        return key
    return show(key) if SECRETISH.search(key) else one_line(repr(key))


class Table:
    """One TOML table with typed getters; every failure is a PlanError `FILE: KEY: reason`."""

    def __init__(self, source: str, path: str, data: dict[str, Any]):
        self.source, self.path, self.data = source, path, data
        self.used: set[str] = set()

    def where(self, key: str) -> str:
        key = _key_text(key)
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, reason: str) -> PlanError:
        return PlanError(one_line(f"{self.source}: {self.where(key)}: {reason}"))

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, kind: type, *, required: bool = False, default: Any = None) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise self.fail(key, "is required")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise self.fail(key, f"must be {_TOML_TYPES[kind]}, not {type_name(value)}")
        return value

    def text(self, key: str, pattern: re.Pattern[str] | None = None, *, lengths: tuple[int, int] = (1, 256),
             required: bool = False, hint: str = "", secret: bool = False) -> str | None:
        value = self.get(key, str, required=required)
        if value is None:
            return None
        shown = "the value (not shown)" if secret else show(value)
        lo, hi = lengths
        if not lo <= len(value) <= hi:
            raise self.fail(key, f"{shown} is {len(value)} characters; must be {lo}-{hi}{hint}")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(key, f"{shown} does not match {pattern.pattern}{hint}")
        if pattern is None and not value.isprintable():
            raise self.fail(key, "must be printable text on one line")
        return str(value)

    def table(self, key: str, *, required: bool = False) -> Table | None:
        raw = self.get(key, dict, required=required)
        return None if raw is None else Table(self.source, self.where(key), raw)

    def tables(self, key: str) -> list[Table]:
        raw = self.get(key, list, default=[])
        if not all(isinstance(item, dict) for item in raw):
            raise self.fail(key, "must be an array of tables ([[...]])")
        return [Table(self.source, f"{self.where(key)}[{i}]", item) for i, item in enumerate(raw)]

    def expect(self, *keys: str) -> None:
        """Refuse unknown keys first: a typo'd key explains a "required" error better than the error itself."""
        unknown = sorted(set(self.data) - set(keys))
        if unknown:
            raise self.fail(unknown[0], f"unknown key (expected one of: {', '.join(keys)})")

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.fail(unknown[0], "unknown key")
