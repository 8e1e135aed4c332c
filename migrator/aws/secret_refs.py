"""Secret references (`env:NAME`, `file:PATH`, `secretsmanager:ARN`) and the value they resolve to.

A `SecretValue` never shows its value in repr/str/format, so it cannot leak into the journal, logs,
JSON output or a traceback by accident; code that needs the raw value calls `.reveal()` at the last
moment (only `kms.py` and `proxy.py` do).

Every message this module produces names the reference, never the value: a wrong secret is described by
its shape ("not 43-64 characters of ..."), which is all an operator needs to fix it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

# RawSecretAccessKey in the KMS model (facts §1.2): min 43, max 64, `^[a-zA-Z0-9\/+=]+$`.
RAW_SECRET_PATTERN = re.compile(r"^[a-zA-Z0-9/+=]{43,64}$")
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
REFERENCE_SCHEMES = ("env", "file", "secretsmanager")
REFERENCE_FORMS = "env:NAME, file:PATH or secretsmanager:ARN"
_MAX_SECRET_FILE = 64 * 1024  # a secret file is a few dozen bytes; refuse to slurp anything large


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

    def __reduce__(self) -> str:  # never pickled with its value
        raise TypeError("SecretValue cannot be pickled")


def _split(ref: str) -> tuple[str, str] | None:
    scheme, sep, rest = ref.partition(":")
    if not sep or scheme not in REFERENCE_SCHEMES or not rest or rest != rest.strip():
        return None
    if any(ch in rest for ch in "\r\n\x00"):
        return None
    if scheme == "env" and not ENV_NAME_PATTERN.fullmatch(rest):
        return None
    return scheme, rest


def is_reference(value: str) -> bool:
    """True when `value` is a well-formed reference (never true for a raw secret, which has no scheme)."""
    return isinstance(value, str) and _split(value) is not None


def resolve_secret(ref: str, *, client_factory: Any = None) -> SecretValue:
    """Resolve a reference to its value and check the value has the shape KMS accepts.

    Resolution happens only when needed (preflight or the update), never at plan load, so a plan can be
    validated on a machine that does not hold the secrets.
    """
    parts = _split(ref) if isinstance(ref, str) else None
    if parts is None:
        raise SecretError(f"not a secret reference (expected {REFERENCE_FORMS}); the value is not shown")
    scheme, rest = parts
    if scheme == "env":
        value = os.environ.get(rest)
        if not value:
            state = "is not set" if value is None else "is empty"
            raise SecretError(f"{ref}: environment variable {rest} {state}")
    elif scheme == "file":
        value = _read_file(ref, Path(rest).expanduser())
    else:
        value = _read_secrets_manager(ref, rest, client_factory)
    if not RAW_SECRET_PATTERN.fullmatch(value):
        raise SecretError(
            f"the secret behind {ref} is not a valid XKS proxy secret (43-64 characters of A-Z a-z 0-9 / + =)"
        )
    return SecretValue(value, ref)


def _read_file(ref: str, path: Path) -> str:
    try:
        with path.open("rb") as fh:
            data = fh.read(_MAX_SECRET_FILE + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SecretError(f"{ref}: cannot read {path}: {reason}") from None
    if len(data) > _MAX_SECRET_FILE:
        raise SecretError(f"{ref}: {path} is larger than {_MAX_SECRET_FILE} bytes; not a secret file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"{ref}: {path} is not UTF-8 text") from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    return text


def _read_secrets_manager(ref: str, secret_id: str, client_factory: Any) -> str:
    if client_factory is None:
        raise SecretError(f"{ref}: no AWS client available to read Secrets Manager")
    try:
        response = client_factory.client("secretsmanager").get_secret_value(SecretId=secret_id)
    except Exception as exc:  # botocore ClientError, endpoint and credential errors alike
        from migrator.aws.clients import aws_error_code

        code = aws_error_code(exc)
        raise SecretError(f"{ref}: Secrets Manager GetSecretValue on {secret_id} failed: {code}") from None
    value = response.get("SecretString") if isinstance(response, dict) else None
    if not isinstance(value, str):
        raise SecretError(f"{ref}: Secrets Manager secret {secret_id} has no SecretString (binary secrets unsupported)")
    return value
