"""Bad input through the real `xksmigrate` entry point: broken plans, world and fault files, bad --state.

The contract (DESIGN §5, cli.py): exit 2, exactly one line on stderr that names the file and the key
(or the option), nothing on stdout, never a traceback, and no AWS call at all. Every command runs with
`--endpoint-url` and AWS_ENDPOINT_URL pointing at a sentinel rehearsal world whose call log must stay
empty; a dry-run's own in-process world is proven never to have started by its journal (opened before
the world) holding no run.

Most cases run in-process through `migrator.cli.main` (argv, stdout and stderr of the real entry point,
SystemExit for the status); every hand-written file and every --state case also runs once as a
subprocess of the installed `xksmigrate` script. Data: tests/engine/data/bad/{plans,worlds,faults}/*.toml,
whose first line says what the error must contain (`# expect: KEY`).
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import os
import socket
import sqlite3
import string
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import REPO, load_world, read_world_log
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migrator.cli import commands as cli

pytestmark = pytest.mark.slow  # CLI processes or whole rehearsed migrations per case: the full tier

DATA = Path(__file__).parent / "data" / "bad"
PLAN = REPO / "plans" / "public-to-vpc.toml"
_SCRIPT = Path(sys.executable).with_name("xksmigrate")
XKSMIGRATE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "migrator.cli"]
INLINE_SECRET = "C4naryInl1neS3cretDoN0tEchoMe+/abcdefghijkl="  # the secret written into inline-*.toml
DRY_RUN_ONLY = {"other-region.toml"}  # a fine world on its own; wrong only for a us-east-1 plan
FUZZ_EXAMPLES = 400


def files(kind: str) -> list[str]:
    return sorted(p.name for p in (DATA / kind).glob("*.toml"))


def expectation(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode("ascii")
    assert first.startswith("# expect: "), path
    return first.removeprefix("# expect: ")


# -- harness --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sentinel() -> Iterator[Any]:
    """A rehearsal world every AWS client of these tests is pointed at; its call log must stay empty."""
    from migrator.rehearsal.server import RehearsalServer

    server = RehearsalServer(load_world("public-to-vpc")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, sentinel: Any) -> Iterator[Path]:
    """cwd and environment for every command: AWS settings aimed at the sentinel, journals under tmp."""
    work = tmp_path_factory.mktemp("bad-input")
    env = {"AWS_ENDPOINT_URL": sentinel.endpoint_url, "AWS_ACCESS_KEY_ID": "AKIAREHEARSAL0000000",
           "AWS_SECRET_ACCESS_KEY": "rehearsal", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
           "XKSMIGRATE_STATE": f"sqlite:///{work}/state/default.db",
           "XKSMIGRATE_REHEARSAL_STATE": f"sqlite:///{work}/state/rehearsal-default.db",
           "NEW_XKS_SECRET": "n" * 44, "OLD_XKS_SECRET": "o" * 44}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        for key in ("XKSMIGRATE_DEBUG", "AWS_PROFILE", "XKSMIGRATE_TIME_SCALE"):
            mp.delenv(key, raising=False)
        mp.chdir(work)
        yield work


def in_process(args: list[str]) -> tuple[int, str, str]:
    """`xksmigrate ARGS` through cli.main in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = ["xksmigrate", *args]
    code: Any = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
            except SystemExit as exc:
                code = exc.code
    finally:
        sys.argv = saved
    return (code if isinstance(code, int) else 0 if code is None else 1), out.getvalue(), err.getvalue()


def subprocess_cli(args: list[str], cwd: Path, timeout: float = 60) -> tuple[int, str, str]:
    proc = subprocess.run([*XKSMIGRATE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_line_error(result: tuple[int, str, str], where: str, expect: str) -> str:
    """Exit 2, nothing on stdout, one stderr line `xksmigrate: error: WHERE: ...` containing `expect`."""
    code, out, err = result
    assert code == 2, (code, out, err)
    assert out == "", out
    assert "Traceback" not in err and "locals" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    assert lines[0].startswith(f"xksmigrate: error: {where}"), lines[0]
    assert expect in lines[0], (expect, lines[0])
    return lines[0]


def aws_calls(server: Any) -> list[dict[str, Any]]:
    return [e for e in read_world_log(server) if e.get("kind") in ("call", "proxy")]


def runs_in(path: Path) -> int:
    """Runs recorded in a SQLite journal file (0 when the file was never created)."""
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path)) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return db.execute("SELECT count(*) FROM runs").fetchone()[0] if "runs" in tables else 0


COMMANDS = {
    "run": lambda plan, ep, state: ["run", plan, "--yes", "--endpoint-url", ep, "--state", state],
    "run --dry-run": lambda plan, ep, state: ["run", plan, "--dry-run", "--yes", "--state", state],
    "plan": lambda plan, ep, state: ["plan", plan, "--endpoint-url", ep, "--state", state],
}


# -- hand-written broken plans ----------------------------------------------------------------------

@pytest.mark.parametrize("name", files("plans"))
def test_broken_plan_file(name, workdir, sentinel):
    source = f"plans/{name}"
    expect = expectation(DATA / source)
    rel = os.path.relpath(DATA / source, workdir)
    state = workdir / f"state-{name}.db"
    for command, build in COMMANDS.items():
        line = assert_one_line_error(in_process(build(rel, sentinel.endpoint_url, f"sqlite:///{state}")),
                                     f"{rel}: ", expect)
        assert INLINE_SECRET not in line, line
        assert runs_in(state) == 0, command
    # The installed script once per file, the command rotating with the file.
    command = list(COMMANDS)[files("plans").index(name) % len(COMMANDS)]
    result = subprocess_cli(COMMANDS[command](rel, sentinel.endpoint_url, f"sqlite:///{state}"), workdir)
    assert INLINE_SECRET not in assert_one_line_error(result, f"{rel}: ", expect)
    assert runs_in(state) == 0
    assert aws_calls(sentinel) == []


def test_ten_megabyte_plan(workdir, sentinel):
    big = workdir / "big-plan.toml"
    big.write_bytes(PLAN.read_bytes() + b"# " + b"x" * (10 * 1024 * 1024) + b"\n")
    for build in COMMANDS.values():
        result = subprocess_cli(build(big.name, sentinel.endpoint_url, f"sqlite:///{workdir}/big.db"), workdir)
        assert_one_line_error(result, f"{big.name}: ", "larger than 1048576 bytes")
    assert runs_in(workdir / "big.db") == 0
    assert aws_calls(sentinel) == []


# -- broken world and fault files --------------------------------------------------------------------

def _sim_serve_refuses(option: str, path: Path, workdir: Path, expect: str) -> None:
    log = workdir / f"serve-{path.parent.name}-{path.stem}.log"
    rel = os.path.relpath(path, workdir)
    result = subprocess_cli(["sim", "serve", option, rel, "--port", "0", "--log", str(log)], workdir, timeout=30)
    assert_one_line_error(result, f"{rel}: ", expect)  # and no endpoint line: no world ever listened
    assert not log.exists() or log.read_text() == ""


@pytest.mark.parametrize("name", files("worlds"))
def test_broken_world_file(name, workdir, sentinel):
    path = DATA / "worlds" / name
    expect, rel = expectation(path), os.path.relpath(path, workdir)
    state = workdir / f"rehearsal-{name}.db"
    args = ["run", str(PLAN), "--dry-run", "--yes", "--world", rel, "--state", f"sqlite:///{state}"]
    assert_one_line_error(in_process(args), f"{rel}: ", expect)
    if files("worlds").index(name) % 3 == 0:  # a third of them through the installed script too
        assert_one_line_error(subprocess_cli(args, workdir), f"{rel}: ", expect)
    assert runs_in(state) == 0  # the engine never started, so the in-process world saw no call
    if name not in DRY_RUN_ONLY:
        _sim_serve_refuses("--world", path, workdir, expect)
    assert aws_calls(sentinel) == []


@pytest.mark.parametrize("name", files("faults"))
def test_broken_fault_file(name, workdir, sentinel):
    path = DATA / "faults" / name
    expect, rel = expectation(path), os.path.relpath(path, workdir)
    state = workdir / f"rehearsal-faults-{name}.db"
    args = ["run", str(PLAN), "--dry-run", "--yes", "--faults", rel, "--state", f"sqlite:///{state}"]
    assert_one_line_error(in_process(args), f"{rel}: ", expect)
    if files("faults").index(name) % 3 == 0:  # a third of them through the installed script too
        assert_one_line_error(subprocess_cli(args, workdir), f"{rel}: ", expect)
    assert runs_in(state) == 0
    _sim_serve_refuses("--faults", path, workdir, expect)
    assert aws_calls(sentinel) == []


def test_world_and_faults_without_dry_run_are_refused(workdir, sentinel):
    world = REPO / "plans" / "worlds" / "public-to-vpc.toml"
    for option in ("--world", "--faults"):
        result = in_process(["run", str(PLAN), "--yes", option, str(world), "--endpoint-url", sentinel.endpoint_url])
        assert_one_line_error(result, "--world and --faults belong to --dry-run", "")
    assert aws_calls(sentinel) == []


# -- bad --state --------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _state_cases(tmp: Path) -> dict[str, tuple[str, str]]:
    (tmp / "a-file").write_text("not a directory\n")
    (tmp / "a-directory").mkdir(exist_ok=True)
    (tmp / "not-a-database").write_text("just text, not SQLite\n" * 200)
    return {
        "garbage": ("state/journal.db", "did you mean sqlite:///state/journal.db"),
        "unknown driver": ("mysql://xks:hunter2@db.example.com/journal", "unsupported journal driver 'mysql'"),
        "psycopg2": ("postgresql+psycopg2://xks:hunter2@127.0.0.1/j", "unsupported journal driver"),
        "nothing listens": (f"postgresql://xks:hunter2@127.0.0.1:{_free_port()}/journal", "cannot open the journal"),
        "directory is a file": (f"sqlite:///{tmp}/a-file/journal.db", "cannot create the journal directory"),
        "under /proc (fails for root too)": ("sqlite:////proc/xksmigrate-test/journal.db", "journal"),
        "a directory": (f"sqlite:///{tmp}/a-directory", "cannot open the journal"),
        "not a database": (f"sqlite:///{tmp}/not-a-database", "file is not a database"),
        "in memory": ("sqlite://", "in-memory SQLite journal"),
    }


@pytest.mark.slow  # 9 URLs x 6 commands, each a CLI start-up
def test_bad_state_urls(workdir, sentinel):
    cases = _state_cases(workdir)
    ep = sentinel.endpoint_url
    commands = {"run": ["run", str(PLAN), "--yes", "--endpoint-url", ep],
                "plan": ["plan", str(PLAN), "--endpoint-url", ep], "resume": ["resume", "--yes", "--endpoint-url", ep],
                "status": ["status"], "history": ["history"],
                "unlock": ["unlock", "lock-00000000"]}
    for label, (url, expect) in cases.items():
        for command, args in commands.items():
            line = assert_one_line_error(in_process([*args, "--state", url]), "--state: ", expect)
            assert "hunter2" not in line, (label, command)
        # `run` once more through the installed script, the URL given by XKSMIGRATE_STATE
        proc = subprocess.run([*XKSMIGRATE, *commands["run"]], cwd=workdir, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL, env={**os.environ, "XKSMIGRATE_STATE": url})
        line = assert_one_line_error((proc.returncode, proc.stdout, proc.stderr), "--state: ", expect)
        assert "hunter2" not in line, label
    assert aws_calls(sentinel) == []


# -- hypothesis: generated broken plans through the CLI --------------------------------------------------

BASE: dict[str, Any] = {
    "plan": {"name": "fuzz", "region": "us-east-1", "max_disconnected": "15m", "poll_interval": "5s"},
    "keystores": [{
        "id": "cks-1234567890abcdef0",
        "target": {"connectivity": "VPC_ENDPOINT_SERVICE", "uri_endpoint": "https://myproxy-private.xks.example.com",
                   "uri_path": "/payments/kms/xks/v1",
                   "vpc_endpoint_service_name": "com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0",
                   "credential": {"access_key_id": "XKSPROXYNEWACCESSKEY7", "secret": "env:NEW_XKS_SECRET"}},
        "original_credential": {"secret": "env:OLD_XKS_SECRET"},
        "verify": {"key_ids": ["1234abcd-12ab-34cd-56ef-1234567890ab"]},
    }],
}
KS, TARGET = ("keystores", 0), ("keystores", 0, "target")
TABLES = {(): ("plan", "keystores"), ("plan",): (*BASE["plan"], "account_id", "extra_trusted_roots"),
          KS: ("id", "name", "probe", "target", "original_credential", "accept_no_rollback", "verify"),
          TARGET: ("connectivity", "uri_endpoint", "uri_path", "vpc_endpoint_service_name",
                   "vpc_endpoint_service_owner", "credential"),
          (*TARGET, "credential"): ("access_key_id", "secret"),
          (*KS, "original_credential"): ("access_key_id", "secret", "accept_no_rollback"),
          (*KS, "verify"): ("key_ids",)}
STRING_LEAVES = [("plan", "name"), ("plan", "region"), (*KS, "id"), (*TARGET, "connectivity"),
                 (*TARGET, "uri_endpoint"), (*TARGET, "uri_path"), (*TARGET, "vpc_endpoint_service_name"),
                 (*TARGET, "credential", "access_key_id")]
REQUIRED = {("plan",): "plan: is required", ("keystores",): "keystores: at least one",
            ("plan", "name"): "plan.name: is required", ("plan", "region"): "plan.region: is required",
            (*KS, "id"): "keystores[0].id: id or name is required", TARGET: "keystores[0].target: is required",
            (*TARGET, "connectivity"): "connectivity: is required",
            (*TARGET, "uri_endpoint"): "uri_endpoint: is required",
            (*TARGET, "vpc_endpoint_service_name"): "keystores[0].target.vpc_endpoint_service_name: is required",
            (*TARGET, "credential", "access_key_id"): "credential.access_key_id: is required",
            (*TARGET, "credential", "secret"): "keystores[0].target.credential.secret: is required",
            (*KS, "original_credential"): "keystores[0].original_credential: is required",
            (*KS, "original_credential", "secret"): "keystores[0].original_credential.secret: is required"}
HOST = st.from_regex(r"[a-z0-9]{1,12}(\.[a-z0-9]{1,8}){0,3}", fullmatch=True)
RAW_SECRET = st.from_regex(r"[A-Za-z0-9/+=]{43,64}", fullmatch=True)
WRONG_TYPED = (st.integers(-10**6, 10**6) | st.booleans() | st.floats(allow_nan=False)
               | st.lists(st.integers(0, 9), min_size=1, max_size=3)  # [] is a valid key_ids
               | st.fixed_dictionaries({"x": st.integers(0, 9)}))
NOT_A_DURATION = st.booleans() | st.lists(st.integers(0, 9), max_size=2) | st.text("xyz !?", min_size=1, max_size=8)


def key_text(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _toml_escape(c: str) -> str:
    """TOML's escape of one character: \\uXXXX inside the BMP, \\UXXXXXXXX above it (\\u only takes 4 digits)."""
    return f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if value != value else ("inf" if value > 0 else "-inf") if value in (float("inf"), -float(
            "inf")) else repr(value)
    if isinstance(value, str):
        return '"' + "".join(c if c.isprintable() and c not in '"\\' else _toml_escape(c) for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{_toml_value(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


def to_toml(data: dict[str, Any]) -> str:
    return "".join(f"{_toml_value(k)} = {_toml_value(v)}\n" for k, v in data.items())


def _at(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


@st.composite
def broken_plan(draw: Any) -> tuple[str, bytes, str, str | None]:
    """(kind, file bytes, text the error must contain, a secret it must not contain)."""
    data = json.loads(json.dumps(BASE))
    kind = draw(st.sampled_from(["wrong_type", "unknown_key", "missing", "bad_id", "bad_arn", "endpoint_port",
                                 "endpoint_form", "path_without_kms", "inline_secret", "bad_reference",
                                 "service_region", "bad_duration", "bytes", "text", "several"]))
    secret = None
    if kind == "wrong_type":
        path = draw(st.sampled_from([*STRING_LEAVES, ("plan",), TARGET, (*KS, "verify", "key_ids")]))
        _at(data, path[:-1])[path[-1]] = draw(WRONG_TYPED.filter(lambda v: not isinstance(v, str | dict)
                                                                  or path[-1] not in ("plan", "target")))
        expect = key_text(path)
    elif kind == "unknown_key":
        table = draw(st.sampled_from(sorted(TABLES, key=len)))
        key = draw(st.text(string.ascii_lowercase + "_", min_size=1, max_size=12).filter(
            lambda k, t=table: k not in TABLES[t]))
        # Valid TOML values only (a lone surrogate cannot be written in TOML): the error must be the key's.
        _at(data, table)[key] = draw(st.integers(0, 9) | st.text(st.characters(blacklist_categories=("Cs",)),
                                                                 max_size=5))
        expect = f"{key_text((*table, key))}: unknown key"
    elif kind == "missing":
        path = draw(st.sampled_from(sorted(REQUIRED, key=str)))
        del _at(data, path[:-1])[path[-1]]
        expect = REQUIRED[path]
    elif kind == "bad_id":
        _at(data, KS)["id"] = "cks-" + draw(st.text("ghijklmnopqrstuvwxyzGHIJ-_", min_size=1, max_size=30))
        expect = "keystores[0].id"
    elif kind == "bad_arn":
        account = draw(st.from_regex(r"[0-9]{1,11}|[0-9]{13,15}|[a-z]{12}", fullmatch=True))
        region = draw(st.sampled_from(["us-east-1", "eu-west-1", "US-EAST-1", ""]))
        _at(data, KS)["verify"]["key_ids"] = [f"arn:aws:kms:{region}:{account}:key/1234abcd-12ab-34cd-56ef-"
                                              "1234567890ab"]
        expect = "keystores[0].verify.key_ids[0]"
    elif kind == "endpoint_port":
        _at(data, TARGET)["uri_endpoint"] = f"https://{draw(HOST)}:{draw(st.integers(0, 99999))}"
        expect = "keystores[0].target.uri_endpoint"
    elif kind == "endpoint_form":
        form = draw(st.sampled_from(["http://{}", "https://{}/", "https://{}/kms/xks/v1", "{}", "ftp://{}",
                                     "https://user@{}", "https://{}?x=1"]))
        _at(data, TARGET)["uri_endpoint"] = form.format(draw(HOST))
        expect = "keystores[0].target.uri_endpoint"
    elif kind == "path_without_kms":
        _at(data, TARGET)["uri_path"] = "/" + draw(st.text("abcdefghij/_-", max_size=60))
        expect = "keystores[0].target.uri_path"
    elif kind in ("inline_secret", "bad_reference"):
        where = draw(st.sampled_from([(*TARGET, "credential"), (*KS, "original_credential")]))
        if kind == "inline_secret":
            value = secret = draw(RAW_SECRET)
        else:
            value = draw(st.sampled_from(["env:", "env:1NAME", "env:A B", "vault:x", "file:", " env:X",
                                          "secretsmanager:", "ENV:X", "env:X\n"]))
        _at(data, where)["secret"] = value
        expect = f"{key_text(where)}.secret"
    elif kind == "service_region":
        region = draw(st.sampled_from(["eu-west-1", "ap-southeast-2", "us-west-2"]))
        _at(data, TARGET)["vpc_endpoint_service_name"] = f"com.amazonaws.vpce.{region}.vpce-svc-0123456789abcdef0"
        expect = "keystores[0].target.vpc_endpoint_service_name"
    elif kind == "bad_duration":
        key = draw(st.sampled_from(["max_disconnected", "poll_interval"]))
        data["plan"][key] = draw(NOT_A_DURATION)
        expect = f"plan.{key}"
    elif kind == "bytes":
        return kind, draw(st.binary(max_size=300)), "", None
    elif kind == "text":
        return kind, draw(st.text(max_size=300)).encode("utf-8", "surrogatepass"), "", None
    else:  # several mutations at once: any one of them may be reported first
        for path in draw(st.lists(st.sampled_from(sorted(REQUIRED, key=str)), min_size=2, max_size=3, unique=True)):
            with contextlib.suppress(KeyError, IndexError, TypeError):
                del _at(data, path[:-1])[path[-1]]
        data.setdefault("plan", {})["region"] = draw(st.sampled_from([7, "Mars-1", ""]))
        expect = ""
    return kind, to_toml(data).encode(), expect, secret


def test_the_fuzz_base_plan_is_valid():
    """Every generated case is one mutation away from this plan, so each mutation is what breaks it."""
    from migrator.plan import parse_plan

    plan = parse_plan(to_toml(BASE), "base.toml")
    assert plan.keystores[0].target.credential is not None


@pytest.mark.slow  # 400 generated plans through the CLI
def test_generated_broken_plans_through_the_cli(workdir, sentinel):
    counts: collections.Counter[str] = collections.Counter()
    state = workdir / "fuzz-state.db"
    plan_file = workdir / "fuzz.toml"

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(case=broken_plan(), command=st.sampled_from(sorted(COMMANDS)))
    def check(case: tuple[str, bytes, str, str | None], command: str) -> None:
        kind, body, expect, secret = case
        plan_file.write_bytes(body)
        line = assert_one_line_error(in_process(COMMANDS[command]("fuzz.toml", sentinel.endpoint_url,
                                                                  f"sqlite:///{state}")), "fuzz.toml: ", expect)
        if secret:
            assert secret not in line
        assert not state.exists()
        counts[kind] += 1

    check()
    assert aws_calls(sentinel) == []
    total = sum(counts.values())
    assert total >= FUZZ_EXAMPLES and len(counts) == 15, counts
    print(f"\nfuzz: {total} generated broken plans through the CLI, by kind: {dict(sorted(counts.items()))}")
