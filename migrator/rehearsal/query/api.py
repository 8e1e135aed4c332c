"""EC2 / ELBv2 / IAM / STS query protocol (form in, XML out) over the live world.

`rehearsal.server` calls `handle_query` for every request whose form body carries `Action=...`, with the
service taken from the SigV4 credential scope and the caller holding the world lock. Answers are
byte-for-byte what botocore parses with its service models, errors included, so the engine meets
this world exactly as it meets AWS. The handlers live in `ec2`, `elbv2` and `iam`
of this package; their module docstrings list what is approximated.

Only `QueryError` becomes an error answer; any other exception is a bug and propagates to the server.
"""

from __future__ import annotations

from collections.abc import Mapping

from migrator.rehearsal.query import ec2 as query_ec2
from migrator.rehearsal.query import elbv2 as query_elbv2
from migrator.rehearsal.query import iam as query_iam
from migrator.rehearsal.query.common import QueryError, error_body
from migrator.rehearsal.world import model

__all__ = ["SERVICES", "QueryError", "handle_query"]

SERVICES = ("ec2", "elasticloadbalancing", "iam", "sts")


def handle_query(world: model.World, service: str, action: str, params: Mapping[str, str]) -> tuple[int, bytes]:
    """(HTTP status, XML body) for one query-protocol request; Modify* calls change `world` in place."""
    try:
        if service == "ec2":
            return 200, query_ec2.handle(world, action, params)
        if service == "elasticloadbalancing":
            return 200, query_elbv2.handle(world, action, params)
        if service in ("iam", "sts"):
            return 200, query_iam.handle(world, service, action, params)
        raise QueryError("InvalidAction", f"The service {service!r} is not served by the rehearsal world")
    except QueryError as exc:
        return exc.http_status, error_body(service, exc)
