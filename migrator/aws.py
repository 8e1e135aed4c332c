"""boto3 clients the way the engine and the inspector need them.

Standard AWS settings work unchanged: `--profile`/AWS_PROFILE, `--region`/AWS_REGION, the credential
chain, and AWS_ENDPOINT_URL (boto3 honours it natively; `endpoint_url` overrides it). Every client
uses botocore's `standard` retry mode, which handles per-call throttling and 5xx; tenacity in the
engine only drives waits and step retries, never around the same call.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ClientFactory:
    region: str
    profile: str | None = None
    endpoint_url: str | None = None
    max_attempts: int = 5
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    credentials: dict[str, str] | None = field(default=None, repr=False)  # explicit keys (rehearsals only)
    request_counter: Counter[str] = field(default_factory=Counter, repr=False)  # HTTP requests by operation
    _session: Any = field(default=None, repr=False)
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    def session(self) -> Any:
        if self._session is None:
            import boto3

            self._session = boto3.session.Session(profile_name=self.profile, region_name=self.region,
                                                  **(self.credentials or {}))
        return self._session

    def client(self, service: str) -> Any:
        if service not in self._clients:
            from botocore.config import Config

            config = Config(
                retries={"mode": "standard", "max_attempts": self.max_attempts},
                connect_timeout=self.connect_timeout,
                read_timeout=self.read_timeout,
                user_agent_extra="xksmigrate",
            )
            kwargs: dict[str, Any] = {"config": config, "region_name": self.region}
            if self.endpoint_url:
                kwargs["endpoint_url"] = self.endpoint_url
            client = self.session().client(service, **kwargs)
            client.meta.events.register("before-send", self._count)
            self._clients[service] = client
        return self._clients[service]

    def _count(self, event_name: str = "", **_: Any) -> None:
        """One tick per HTTP request (retries included): the figure the quota sees."""
        parts = event_name.split(".")
        if len(parts) >= 3:
            self.request_counter[f"{parts[1]}:{parts[2]}"] += 1
