"""boto3 clients the way the engine and the inspector need them.

Standard AWS settings work unchanged: `--profile`/AWS_PROFILE, `--region`/AWS_REGION, the credential
chain, and AWS_ENDPOINT_URL (boto3 honours it natively; `endpoint_url` overrides it). Every client
uses botocore's `standard` retry mode, which handles per-call throttling and 5xx; tenacity in the
engine only drives waits and step retries, never around the same call.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# One boto3 session per profile and process: a session parses each service model once (EC2's is
# megabytes), and boto3 sessions are not thread-safe, so clients are created under a lock.
_SESSIONS: dict[str | None, Any] = {}
_SESSION_LOCK = threading.Lock()


def _shared_session(profile: str | None) -> Any:
    import boto3

    if profile not in _SESSIONS:
        _SESSIONS[profile] = boto3.session.Session(profile_name=profile)
    return _SESSIONS[profile]


@dataclass
class ClientFactory:
    region: str
    profile: str | None = None
    endpoint_url: str | None = None
    max_attempts: int = 5
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    credentials: dict[str, str] | None = field(default=None, repr=False)  # explicit keys (rehearsals only)
    # The custom key store APIs' shared budget per account-Region cell (aws/rate_budget.py), in requests per
    # (simulated) second; None: none (a test's own client). `time_scale` makes a rehearsal's second simulated.
    cell_rate: float | None = None
    time_scale: float = 1.0
    account_id: str | None = None
    request_counter: Counter[str] = field(default_factory=Counter, repr=False)  # HTTP requests by operation
    _session: Any = field(default=None, repr=False)  # a boto3 Session of the caller's (tests); else shared
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)
    # The cell's one DescribeCustomKeyStores stream, made on first use by aws/cell_poller.poller_for.
    shared_poller: object | None = field(default=None, repr=False)
    # Other cells reached from this one (aws/roles.clients_for), and the role this factory's clients sign as.
    cells: dict[tuple[str | None, ...], ClientFactory] = field(default_factory=dict, repr=False)
    role: object | None = field(default=None, repr=False)  # aws/roles.AssumedRole

    def budget_cell(self) -> tuple[str, str, str]:
        """The key of this factory's request budget (aws/rate_budget.py): endpoint, account, Region."""
        return (self.endpoint_url or "aws", self.account_id or "caller", self.region)

    def client(self, service: str) -> Any:
        with _SESSION_LOCK:
            return self._client(service)

    def _client(self, service: str) -> Any:
        if service not in self._clients:
            from botocore.config import Config

            config = Config(
                retries={"mode": "standard", "max_attempts": self.max_attempts},
                connect_timeout=self.connect_timeout,
                read_timeout=self.read_timeout,
                user_agent_extra="xksmigrate",
            )
            kwargs: dict[str, Any] = {"config": config, "region_name": self.region, **(self.credentials or {})}
            if self.endpoint_url:
                kwargs["endpoint_url"] = self.endpoint_url
            client = (self._session or _shared_session(self.profile)).client(service, **kwargs)
            client.meta.events.register("before-send", self._count)
            if service == "kms" and self.cell_rate is not None:
                from migrator.aws import rate_budget

                rate_budget.attach(client, rate_budget.cell_budget(self.budget_cell(), rate=self.cell_rate,
                                                                   scale=self.time_scale))
            self._clients[service] = client
        return self._clients[service]

    def _count(self, event_name: str = "", **_: Any) -> None:
        """One tick per HTTP request (retries included): the figure the quota sees."""
        parts = event_name.split(".")
        if len(parts) >= 3:
            self.request_counter[f"{parts[1]}:{parts[2]}"] += 1


def aws_error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore error (never its message, which could quote a request);
    for anything else the exception's type name."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
    return type(exc).__name__
