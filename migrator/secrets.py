"""Secret references (`env:NAME`, `file:PATH`, `secretsmanager:ARN`) and the value they resolve to.

A `SecretValue` never shows its value in repr/str/format, so it cannot leak into the journal, logs,
JSON output or a traceback by accident; code that needs the raw value calls `.reveal()` at the last
moment (only `kms.py` and `proxy.py` do).
"""

from __future__ import annotations


class SecretError(ValueError):
    """A reference that cannot be resolved; the message names the reference, never a value."""


class SecretValue:
    __slots__ = ("_value", "ref")

    def __init__(self, value: str, ref: str):
        self._value = value
        self.ref = ref

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"SecretValue(ref={self.ref!r}, value=<redacted>)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce__(self):  # never pickled with its value
        raise TypeError("SecretValue cannot be pickled")
