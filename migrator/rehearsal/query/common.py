"""Shared pieces of the query-protocol (XML) APIs: errors, form-parameter parsing, XML bodies, derived ids.

The EC2, ELBv2, IAM and STS handlers (`query.ec2`, `query.elbv2`, `query.iam`) all speak the AWS
query protocol: a flat form body in, an XML document out. botocore parses those documents with the
service model, so the element names and list shapes here follow botocore's `ec2` protocol (lowerCamel
`locationName`s, lists of `<item>`) and `query` protocol (`<XResult>` inside `<XResponse>`, lists of
`<member>`). Every value goes through ElementTree, which escapes it; characters XML 1.0 cannot carry
are dropped so an odd request value never makes the whole body unparseable.

Ids and ARNs the world file does not spell out (load balancer ARNs, subnets, permission ids) are
derived from names with a hash, so they are stable across runs and processes.
"""

from __future__ import annotations

import hashlib
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from typing import Any

from migrator.rehearsal.world import model
from migrator.rehearsal.world.identity import CALLER_ARN

EC2_XMLNS = "http://ec2.amazonaws.com/doc/2016-11-15/"
XMLNS = {
    "elasticloadbalancing": "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/",
    "iam": "https://iam.amazonaws.com/doc/2010-05-08/",
    "sts": "https://sts.amazonaws.com/doc/2011-06-15/",
}

_XML_INVALID = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class QueryError(Exception):
    """An AWS error answer: botocore raises ClientError with `code` as Error.Code."""

    def __init__(self, code: str, message: str, http_status: int = 400):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status


# ---------------------------------------------------------------------------------------------
# Request parameters (flat form fields)


def list_param(params: Mapping[str, str], prefix: str) -> list[str]:
    """`prefix.1`, `prefix.2`, ... in index order (EC2 lists; pass `X.member` for query lists)."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)$")
    found = sorted((int(m.group(1)), v) for k, v in params.items() if (m := pattern.match(k)))
    return [v for _, v in found]


def filters_param(params: Mapping[str, str]) -> dict[str, list[str]]:
    """EC2 `Filter.N.Name` / `Filter.N.Value.M` as {name: values}; a name given twice merges its values."""
    out: dict[str, list[str]] = {}
    pattern = re.compile(r"Filter\.(\d+)\.Name$")
    for key, name in params.items():
        if m := pattern.match(key):
            values = list_param(params, f"Filter.{m.group(1)}.Value")
            out.setdefault(name, []).extend(values)
    return out


def bool_param(params: Mapping[str, str], name: str, code: str = "InvalidParameterValue") -> bool | None:
    """A boolean form field (`true`/`false`, as botocore sends it), None when absent."""
    raw = params.get(name)
    if raw is None:
        return None
    lowered = raw.strip().lower()
    if lowered not in ("true", "false"):
        raise QueryError(code, f"Value ({raw}) for parameter {name} is invalid. Expected a boolean.")
    return lowered == "true"


def required(params: Mapping[str, str], name: str, code: str = "MissingParameter") -> str:
    value = params.get(name, "")
    if not value:
        raise QueryError(code, f"The request must contain the parameter {name}")
    return value


def wildcard_match(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """AWS filter/IAM action matching: `*` any run, `?` one character, nothing else special."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


# ---------------------------------------------------------------------------------------------
# XML


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return _XML_INVALID.sub("", str(value))


def add(parent: ET.Element, tag: str, value: Any, item_tag: str) -> None:
    """Append `value` under `parent` as <tag>: dicts become children, lists <item_tag> entries, None is left out."""
    if value is None:
        return
    node = ET.SubElement(parent, tag)
    if isinstance(value, Mapping):
        for key, child in value.items():
            add(node, key, child, item_tag)
    elif isinstance(value, list | tuple):
        for entry in value:
            add(node, item_tag, entry, item_tag)
    else:
        node.text = _text(value)


def _serialize(root: ET.Element) -> bytes:
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def request_id() -> str:
    return str(uuid.uuid4())


def ec2_body(action: str, fields: Mapping[str, Any]) -> bytes:
    """<ActionResponse xmlns=ec2><requestId/>fields...</ActionResponse>; lists use <item>."""
    root = ET.Element(f"{action}Response", xmlns=EC2_XMLNS)
    ET.SubElement(root, "requestId").text = request_id()
    for key, value in fields.items():
        add(root, key, value, "item")
    return _serialize(root)


def query_body(service: str, action: str, fields: Mapping[str, Any]) -> bytes:
    """<ActionResponse><ActionResult>fields..</ActionResult><ResponseMetadata/></ActionResponse>; <member> lists."""
    root = ET.Element(f"{action}Response", xmlns=XMLNS[service])
    result = ET.SubElement(root, f"{action}Result")
    for key, value in fields.items():
        add(result, key, value, "member")
    meta = ET.SubElement(root, "ResponseMetadata")
    ET.SubElement(meta, "RequestId").text = request_id()
    return _serialize(root)


def error_body(service: str, error: QueryError) -> bytes:
    """EC2: <Response><Errors><Error>..; the others: <ErrorResponse><Error><Type>.. (what botocore expects)."""
    if service == "ec2":
        root = ET.Element("Response")
        err = ET.SubElement(ET.SubElement(root, "Errors"), "Error")
        ET.SubElement(err, "Code").text = _text(error.code)
        ET.SubElement(err, "Message").text = _text(error.message)
        ET.SubElement(root, "RequestID").text = request_id()
    else:
        root = ET.Element("ErrorResponse", xmlns=XMLNS.get(service, XMLNS["sts"]))
        err = ET.SubElement(root, "Error")
        ET.SubElement(err, "Type").text = "Receiver" if error.http_status >= 500 else "Sender"
        ET.SubElement(err, "Code").text = _text(error.code)
        ET.SubElement(err, "Message").text = _text(error.message)
        ET.SubElement(root, "RequestId").text = request_id()
    return _serialize(root)


# ---------------------------------------------------------------------------------------------
# Derived, stable identifiers


def stable_hex(*parts: str, length: int = 17) -> str:
    """Hex digits derived from `parts`: the same world yields the same ids in every run."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]


_LB_KIND = {"network": "net", "application": "app", "gateway": "gwy"}


def lb_account(world: model.World, lb: model.LoadBalancer) -> str:
    """The account a load balancer lives in: that of the endpoint service it backs, else the world's."""
    for svc in world.endpoint_services:
        if svc.load_balancer == lb.name and svc.owner:
            return svc.owner
    return world.account_id


def lb_arn(world: model.World, lb: model.LoadBalancer) -> str:
    kind = _LB_KIND.get(lb.type, "net")
    return (f"arn:aws:elasticloadbalancing:{world.region}:{lb_account(world, lb)}:"
            f"loadbalancer/{kind}/{lb.name}/{stable_hex(lb.name, length=16)}")


def find_lb(world: model.World, name: str) -> model.LoadBalancer | None:
    return next((lb for lb in world.load_balancers if lb.name == name), None)


def vpc_id(world: model.World, account: str) -> str:
    """One VPC per account: the world does not model VPCs, but ELBv2 answers name one."""
    return f"vpc-{stable_hex(account, world.region, 'vpc')}"


def subnet_id(lb: model.LoadBalancer, zone: str) -> str:
    return f"subnet-{stable_hex(lb.name, zone, 'subnet')}"


def denied(world: model.World, iam_action: str) -> bool:
    """Whether `service:Action` is in the world's denied actions (IAM matching: case-insensitive, wildcards)."""
    return any(wildcard_match(p, iam_action, ignore_case=True) for p in world.iam.denied_actions)


def caller_arn(world: model.World) -> str:
    """The principal of the request being answered (a role session's, set by the server), else `[iam]`'s."""
    return CALLER_ARN.get() or world.iam.caller_arn or f"arn:aws:iam::{world.account_id}:user/rehearsal-operator"


def unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))
