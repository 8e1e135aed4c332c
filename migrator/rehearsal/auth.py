"""What the endpoint reads from a request's signature, and the refusals AWS answers before any handler runs.

`Signature.of(headers)` takes the access key id, Region and service from the SigV4 `Authorization`
header's credential scope (`Credential=AKID/DATE/REGION/SERVICE/aws4_request`) and the session token from
`X-Amz-Security-Token`; the signature itself is not verified (`world.identity`). A request without one
(an unsigned curl) is the default account in the default Region, as every request was before.

`refusal(service, kind)` is the error each protocol answers, in the shape botocore classifies:
- "expired": KMS/Secrets Manager `ExpiredTokenException` (400), EC2 `RequestExpired` (400), the query
  services (STS, IAM, ELBv2) `ExpiredToken` (403); "The security token included in the request is expired".
- "invalid" (unknown session token, or a Region the account does not have): `UnrecognizedClientException`
  (400), EC2 `AuthFailure` (401), query `InvalidClientTokenId` (403).
- "throttled": KMS `ThrottlingException` (400, KMS's "You have exceeded the rate at which you may call KMS"
  text), EC2 `RequestLimitExceeded` (503), query `Throttling` (400); botocore's standard retry mode treats
  all three as throttling.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message

from migrator.rehearsal.kms.errors import KmsError
from migrator.rehearsal.query.common import QueryError, error_body

_CREDENTIAL = re.compile(r"Credential=([^/,\s]*)/\d{8}/([^/]*)/([^/]+)/aws4_request")
JSON_SERVICES = ("kms", "secretsmanager", "")

_REFUSALS: dict[str, dict[str, tuple[str, int, str]]] = {
    "expired": {"json": ("ExpiredTokenException", 400, "The security token included in the request is expired"),
                "ec2": ("RequestExpired", 400, "Request has expired."),
                "query": ("ExpiredToken", 403, "The security token included in the request is expired")},
    "invalid": {"json": ("UnrecognizedClientException", 400, "The security token included in the request is "
                                                             "invalid."),
                "ec2": ("AuthFailure", 401, "AWS was not able to validate the provided access credentials"),
                "query": ("InvalidClientTokenId", 403, "The security token included in the request is invalid.")},
    "throttled": {"json": ("ThrottlingException", 400, "You have exceeded the rate at which you may call KMS. "
                                                       "Reduce the frequency of your calls."),
                  "ec2": ("RequestLimitExceeded", 503, "Request limit exceeded."),
                  "query": ("Throttling", 400, "Rate exceeded")},
}


@dataclass(frozen=True)
class Signature:
    access_key_id: str
    region: str
    service: str
    token: str | None

    @classmethod
    def of(cls, headers: Mapping[str, str] | Message[str, str]) -> Signature:
        found = _CREDENTIAL.search(headers.get("Authorization", "") or "")
        token = headers.get("X-Amz-Security-Token") or None
        if found is None:
            return cls("", "", "", token)
        return cls(found.group(1), found.group(2), found.group(3), token)


def refusal(service: str, kind: str) -> tuple[int, bytes, str, str]:
    """(HTTP status, body, content type, error code) of a refusal of `kind` in `service`'s protocol."""
    family = "json" if service in JSON_SERVICES else "ec2" if service == "ec2" else "query"
    code, status, message = _REFUSALS[kind][family]
    if family == "json":
        if service == "secretsmanager" and kind == "throttled":
            message = "Rate exceeded"
        err = KmsError(code, message, status)
        return err.status, err.body(), "application/x-amz-json-1.1", code
    return status, error_body(service, QueryError(code, message, status)), "text/xml", code
