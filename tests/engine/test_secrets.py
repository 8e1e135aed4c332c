"""Secret references resolve to SecretValue, and neither the value nor a near miss ever shows up in text."""

from __future__ import annotations

import logging
import pickle
import traceback

import pytest

from migrator.aws.secret_refs import SecretError, SecretValue, is_reference, resolve_secret

CANARY = "CANARYcanary0123456789/+=CANARYcanary0123456789"  # 47 chars: a valid RawSecretAccessKey shape


def test_env_reference(monkeypatch):
    monkeypatch.setenv("XKS_TEST_SECRET", CANARY)
    value = resolve_secret("env:XKS_TEST_SECRET")
    assert value.reveal() == CANARY and value.ref == "env:XKS_TEST_SECRET"


@pytest.mark.parametrize("setting", [None, ""])
def test_env_missing_or_empty_names_the_variable(monkeypatch, setting):
    monkeypatch.delenv("XKS_TEST_SECRET", raising=False)
    if setting is not None:
        monkeypatch.setenv("XKS_TEST_SECRET", setting)
    with pytest.raises(SecretError, match=r"environment variable XKS_TEST_SECRET is (not set|empty)"):
        resolve_secret("env:XKS_TEST_SECRET")


def test_file_reference_strips_one_newline(tmp_path):
    path = tmp_path / "s"
    path.write_text(CANARY + "\n")
    assert resolve_secret(f"file:{path}").reveal() == CANARY
    path.write_text(CANARY)
    assert resolve_secret(f"file:{path}").reveal() == CANARY
    path.write_text(CANARY + "\n\n")  # only one newline is stripped: the rest makes it invalid
    with pytest.raises(SecretError, match="not a valid XKS proxy secret"):
        resolve_secret(f"file:{path}")


def test_file_unreadable(tmp_path):
    with pytest.raises(SecretError, match=r"file:.*missing: cannot read .*No such file"):
        resolve_secret(f"file:{tmp_path / 'missing'}")
    with pytest.raises(SecretError, match="cannot read"):
        resolve_secret(f"file:{tmp_path}")  # a directory


@pytest.mark.parametrize("bad", ["short", CANARY + "x" * 20, CANARY[:-3] + "!!!", " " + CANARY])
def test_wrong_shape_is_refused_without_echo(monkeypatch, bad):
    monkeypatch.setenv("XKS_TEST_SECRET", bad)
    with pytest.raises(SecretError) as info:
        resolve_secret("env:XKS_TEST_SECRET")
    message = str(info.value)
    assert message == ("the secret behind env:XKS_TEST_SECRET is not a valid XKS proxy secret "
                       "(43-64 characters of A-Z a-z 0-9 / + =)")
    assert bad.strip() not in message


def test_secretsmanager_against_the_rehearsal_world(start_world):
    """secretsmanager: references resolve over HTTP through boto3, exactly as against AWS."""
    from engine_helpers import load_world

    from migrator.aws.clients import ClientFactory
    from migrator.dryrun import DUMMY_CREDENTIALS
    from migrator.rehearsal.world import model

    world = load_world()
    world.secrets.append(model.Secret(name="xks-AbCdEf", value=CANARY))
    server = start_world(world)
    factory = ClientFactory(region=world.region, endpoint_url=server.endpoint_url,
                            credentials=dict(DUMMY_CREDENTIALS))
    arn = world.secrets[-1].arn(world.region, world.account_id)  # the example world serves its own first

    assert resolve_secret(f"secretsmanager:{arn}", client_factory=factory).reveal() == CANARY
    assert [k for k, n in factory.request_counter.items() if k.endswith(":GetSecretValue") and n == 1] != []

    missing = arn.replace("xks-AbCdEf", "xks-missing")
    with pytest.raises(SecretError) as info:
        resolve_secret(f"secretsmanager:{missing}", client_factory=factory)
    # The reference and AWS's error code, never AWS's message (it could quote a request) nor a value.
    assert missing in str(info.value) and "ResourceNotFoundException" in str(info.value)
    assert "can't find the specified secret" not in str(info.value) and CANARY not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    with pytest.raises(SecretError, match="no AWS client"):
        resolve_secret(f"secretsmanager:{arn}")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("env:NAME", True), ("env:_X1", True), ("file:/run/s", True), ("file:s.txt", True),
     ("secretsmanager:arn:aws:secretsmanager:us-east-1:111122223333:secret:x", True), ("secretsmanager:name", True),
     ("env:", False), ("env:1X", False), ("env:A-B", False), ("file:", False), ("vault:x", False), (CANARY, False),
     ("", False), ("ENV:X", False), ("env: X", False), ("file:/x\n", False)],
)
def test_is_reference(value, expected):
    assert is_reference(value) is expected


def test_non_reference_is_refused_without_echo():
    with pytest.raises(SecretError) as info:
        resolve_secret(CANARY)
    assert CANARY not in str(info.value)


def test_redaction_everywhere(caplog):
    value = SecretValue(CANARY, "env:X")
    texts = [repr(value), str(value), f"{value}", f"{value!r}", f"{value:>80}", format(value, ""), str([value]),
             str({"k": value}), "%s" % (value,)]  # noqa: UP031 (the %-format path is what logging uses)
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("secret %s", value)
    texts.append(caplog.text)
    try:
        raise RuntimeError(f"failed with {value}")
    except RuntimeError:
        texts.append(traceback.format_exc())
    for text in texts:
        assert CANARY not in text and "redacted" in text
    with pytest.raises(TypeError):
        pickle.dumps(value)


def test_traceback_locals_do_not_show_the_value():
    """Tracebacks that render locals (rich, pytest --showlocals) use repr, which is redacted."""
    def boom(secret: SecretValue):
        raise ValueError("x")

    try:
        boom(SecretValue(CANARY, "env:X"))
    except ValueError as exc:
        tb = traceback.TracebackException.from_exception(exc, capture_locals=True)
        text = "".join(tb.format())
    assert "SecretValue(ref='env:X', value=<redacted>)" in text and CANARY not in text
