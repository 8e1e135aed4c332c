"""KMS custom key store operations of the rehearsal world (facts §1 and §2), external key stores only.

Rules modelled (with the choices made where the references say UNCONFIRMED):
- Update: connectivity, endpoint, VPC service name and owner need DISCONNECTED; in which states name,
  credential and path may change is `[world] update_state_rule` (UPDATE_STATE_RULES quotes the three AWS
  texts; default: the UpdateCustomKeyStore operation doc of the API reference). A parameter that is *present*
  counts as a change (we do not compare it to the current value), which is the stricter reading of "to
  change this value, the store must be disconnected".
- A connectivity change must come with a *different* XksProxyUriEndpoint (ValidationException otherwise).
- Update with proxy-related values sends GetHealthStatus with the NEW values before applying them. For a
  switch to VPC_ENDPOINT_SERVICE (UNCONFIRMED, facts open item 1) the world checks the endpoint service and
  then reaches the proxy through it, i.e. the same checks a connect makes.
- Connect on CONNECTED/CONNECTING is accepted and changes nothing (UNCONFIRMED, open item 3).
- Uniqueness is checked against OTHER stores only; a store may keep its hostname across a switch (open item 2).
  A public and a VPC store may not share an endpoint in a Region across accounts either (facts §5); the other
  rules are per account and Region (the cell).
- Missing or contradictory connectivity parameters raise ValidationException (the model has no better name).
"""

from __future__ import annotations

import re
from typing import Any

from migrator.rehearsal.kms import checks
from migrator.rehearsal.kms.errors import KmsError, invalid_state, require
from migrator.rehearsal.world import model
from migrator.rehearsal.world.state import StoreRuntime, WorldState

_ENDPOINT = re.compile(r"^https://[a-zA-Z0-9.-]+$")
_PATH = re.compile(r"^(/[a-zA-Z0-9/_-]+/kms/xks/v\d{1,2})$|^(/kms/xks/v\d{1,2})$")
_SERVICE = re.compile(r"^(com|eu)\.amazonaws\.vpce\.([a-z]+-){2,3}\d+\.vpce-svc-[0-9a-z]+$")
_ACCESS_KEY = re.compile(r"^[A-Z2-7]{20,30}$")
_SECRET = re.compile(r"^[a-zA-Z0-9/+=]{43,64}$")
_OWNER = re.compile(r"^[0-9]{12}$")
PROXY_FIELDS = ("XksProxyConnectivity", "XksProxyUriEndpoint", "XksProxyUriPath",
                "XksProxyAuthenticationCredential", "XksProxyVpcEndpointServiceName",
                "XksProxyVpcEndpointServiceOwner")
NEEDS_DISCONNECTED = ("XksProxyConnectivity", "XksProxyUriEndpoint", "XksProxyVpcEndpointServiceName",
                      "XksProxyVpcEndpointServiceOwner")
MAX_STORES = 10
_ANY_STATE = ("CONNECTED", "CONNECTING", "FAILED", "DISCONNECTED", "DISCONNECTING")
# The states in which each of the other properties may change, per `[world] update_state_rule`. The AWS texts
# disagree (aws-xks-facts.md "Where the documents disagree" 1 and §1.1); the default is the API reference.
UPDATE_STATE_RULES: dict[str, dict[str, tuple[str, ...]]] = {
    # API reference, UpdateCustomKeyStore: "you can update the CustomKeyStoreName,
    # XksProxyAuthenticationCredential, and XksProxyUriPath of an external key store when it is in the
    # CONNECTED or DISCONNECTED state."
    "api_operation": {"NewCustomKeyStoreName": ("CONNECTED", "DISCONNECTED"),
                      "XksProxyAuthenticationCredential": ("CONNECTED", "DISCONNECTED"),
                      "XksProxyUriPath": ("CONNECTED", "DISCONNECTED")},
    # API reference, CustomKeyStoreInvalidStateException: "UpdateCustomKeyStore can be called on a custom key
    # store in the CONNECTED state only to update NewCustomKeyStoreName. For all other properties, the custom
    # key store ConnectionState must be DISCONNECTED." (the strictest reading)
    "api_exception": {"NewCustomKeyStoreName": ("CONNECTED", "DISCONNECTED"),
                      "XksProxyAuthenticationCredential": ("DISCONNECTED",),
                      "XksProxyUriPath": ("DISCONNECTED",)},
    # Developer Guide, update-xks-keystore: name, credential and path "Any connection state" (the world's
    # behaviour before this option existed).
    "developer_guide": {"NewCustomKeyStoreName": _ANY_STATE, "XksProxyAuthenticationCredential": _ANY_STATE,
                        "XksProxyUriPath": _ANY_STATE},
}


def _store(state: WorldState, store_id: Any) -> StoreRuntime:
    rt = state.stores.get(store_id) if isinstance(store_id, str) else None
    if rt is None:
        raise KmsError("CustomKeyStoreNotFoundException",
                       f"Custom key store {store_id} does not exist in account {state.account_id}.")
    return rt


def _check_pattern(p: dict[str, Any], name: str, pattern: re.Pattern[str]) -> None:
    if name in p and not (isinstance(p[name], str) and pattern.match(p[name])):
        raise KmsError("ValidationException", f"1 validation error detected: Value at '{name}' failed to satisfy "
                                              f"constraint: Member must satisfy regular expression pattern: "
                                              f"{pattern.pattern}")


def _validate(p: dict[str, Any]) -> None:
    _check_pattern(p, "XksProxyUriEndpoint", _ENDPOINT)
    _check_pattern(p, "XksProxyUriPath", _PATH)
    if p.get("XksProxyVpcEndpointServiceName"):
        _check_pattern(p, "XksProxyVpcEndpointServiceName", _SERVICE)
    if p.get("XksProxyVpcEndpointServiceOwner"):
        _check_pattern(p, "XksProxyVpcEndpointServiceOwner", _OWNER)
    if "XksProxyConnectivity" in p and p["XksProxyConnectivity"] not in (checks.PUBLIC, checks.VPC):
        raise KmsError("ValidationException", "XksProxyConnectivity must be PUBLIC_ENDPOINT or VPC_ENDPOINT_SERVICE")
    cred = p.get("XksProxyAuthenticationCredential")
    if cred is not None:
        if not isinstance(cred, dict) or "AccessKeyId" not in cred or "RawSecretAccessKey" not in cred:
            raise KmsError("ValidationException", "XksProxyAuthenticationCredential needs AccessKeyId and "
                                                  "RawSecretAccessKey")
        _check_pattern(cred, "AccessKeyId", _ACCESS_KEY)
        _check_pattern(cred, "RawSecretAccessKey", _SECRET)


def _uniqueness(state: WorldState, target: checks.Target, exclude: str) -> None:
    """Facts §5: endpoint+path unique; a VPC store's endpoint shared with nobody; one store per service."""
    others = [rt.ks for rt in state.stores.values() if rt.ks.id != exclude]
    for ks in others:
        if ks.uri_endpoint.lower() == target.uri_endpoint.lower() and ks.uri_path == target.uri_path:
            raise KmsError("XksProxyUriInUseException",
                           f"The proxy URI {target.uri_endpoint}{target.uri_path} is already associated with "
                           f"another external key store in this Region.")
    # "... even if the key stores are in different AWS accounts" (facts §5): a public store and a VPC store
    # never share an endpoint in a Region; within the account a VPC store shares its endpoint with nobody.
    elsewhere = [rt.ks for cell in state.cells.values() if cell.region == state.region and cell is not state
                 for rt in cell.stores.values()]
    for ks, rule in [*((ks, "any") for ks in others), *((ks, "mixed") for ks in elsewhere)]:
        vpc = {ks.connectivity, target.connectivity} == {checks.PUBLIC, checks.VPC} if rule == "mixed" \
            else checks.VPC in (ks.connectivity, target.connectivity)
        if vpc and ks.uri_endpoint.lower() == target.uri_endpoint.lower():
            raise KmsError("XksProxyUriEndpointInUseException",
                           f"The proxy URI endpoint {target.uri_endpoint} is already associated with another "
                           f"external key store with VPC endpoint service connectivity in this Region.")
    if target.connectivity == checks.VPC:
        owner = target.service_owner or state.account_id
        for ks in others:
            if (ks.connectivity == checks.VPC and ks.vpc_endpoint_service_name == target.service_name
                    and (ks.vpc_endpoint_service_owner or state.account_id) == owner):
                raise KmsError("XksProxyVpcEndpointServiceInUseException",
                               f"The VPC endpoint service {target.service_name} is already associated with "
                               f"another external key store in this Region.")


def _name_in_use(state: WorldState, name: str, exclude: str = "") -> None:
    if any(rt.ks.name == name and rt.ks.id != exclude for rt in state.stores.values()):
        raise KmsError("CustomKeyStoreNameInUseException", f"Custom key store name {name} is already in use.")


def _reject(outcome: checks.Outcome) -> None:
    if not outcome.ok:
        raise KmsError(outcome.exception or "KMSInternalException", outcome.message)


def create(state: WorldState, p: dict[str, Any]) -> dict[str, Any]:
    """CreateCustomKeyStore for EXTERNAL_KEY_STORE: public proxies are tested live, VPC services at create."""
    name = require(p, "CustomKeyStoreName")
    if p.get("CustomKeyStoreType") != "EXTERNAL_KEY_STORE":
        raise KmsError("UnsupportedOperationException", "The rehearsal world models only EXTERNAL_KEY_STORE.")
    _name_in_use(state, name)
    if len(state.stores) >= MAX_STORES:
        raise KmsError("LimitExceededException", f"An account can have at most {MAX_STORES} custom key stores.")
    for required in ("XksProxyUriEndpoint", "XksProxyUriPath", "XksProxyConnectivity",
                     "XksProxyAuthenticationCredential"):
        require(p, required)
    _validate(p)
    cred = p["XksProxyAuthenticationCredential"]
    vpc = p["XksProxyConnectivity"] == checks.VPC
    if vpc and not p.get("XksProxyVpcEndpointServiceName"):
        raise KmsError("ValidationException", "XksProxyVpcEndpointServiceName is required for VPC_ENDPOINT_SERVICE")
    if not vpc and (p.get("XksProxyVpcEndpointServiceName") or p.get("XksProxyVpcEndpointServiceOwner")):
        raise KmsError("ValidationException", "XksProxyVpcEndpointServiceName is only valid for VPC_ENDPOINT_SERVICE")
    target = checks.Target(p["XksProxyConnectivity"], p["XksProxyUriEndpoint"], p["XksProxyUriPath"],
                           cred["AccessKeyId"], cred["RawSecretAccessKey"],
                           p.get("XksProxyVpcEndpointServiceName", "") if vpc else "",
                           p.get("XksProxyVpcEndpointServiceOwner", "") if vpc else "")
    store_id = state.new_keystore_id()
    _uniqueness(state, target, exclude=store_id)
    _reject(checks.full_check(state, target, "CreateCustomKeyStore", store_id, with_proxy=not vpc))
    state.add_store(model.KeyStore(
        id=store_id, name=name, connectivity=target.connectivity, uri_endpoint=target.uri_endpoint,
        uri_path=target.uri_path, access_key_id=target.access_key_id, secret=target.secret,
        vpc_endpoint_service_name=target.service_name, vpc_endpoint_service_owner=target.service_owner,
        state="DISCONNECTED"))
    return {"CustomKeyStoreId": store_id}


def describe_entry(state: WorldState, rt: StoreRuntime) -> dict[str, Any]:
    ks = rt.ks
    config: dict[str, Any] = {"Connectivity": ks.connectivity, "AccessKeyId": ks.access_key_id,
                              "UriEndpoint": ks.uri_endpoint, "UriPath": ks.uri_path}
    if ks.connectivity == checks.VPC:
        config["VpcEndpointServiceName"] = ks.vpc_endpoint_service_name
        config["VpcEndpointServiceOwner"] = ks.vpc_endpoint_service_owner or state.account_id
    entry: dict[str, Any] = {"CustomKeyStoreId": ks.id, "CustomKeyStoreName": ks.name,
                             "ConnectionState": ks.state, "CreationDate": rt.created_wall,
                             "CustomKeyStoreType": "EXTERNAL_KEY_STORE", "XksProxyConfiguration": config}
    if ks.state == "FAILED" and ks.connection_error_code:
        entry["ConnectionErrorCode"] = ks.connection_error_code
    return entry


def describe(state: WorldState, p: dict[str, Any]) -> dict[str, Any]:
    """DescribeCustomKeyStores by id, by name, or all, with Limit/Marker paging (facts §2.5)."""
    if "CustomKeyStoreId" in p and "CustomKeyStoreName" in p:
        raise KmsError("ValidationException", "Specify CustomKeyStoreId or CustomKeyStoreName, not both.")
    stores = list(state.stores.values())
    if "CustomKeyStoreId" in p:
        stores = [_store(state, p["CustomKeyStoreId"])]
    elif "CustomKeyStoreName" in p:
        stores = [rt for rt in stores if rt.ks.name == p["CustomKeyStoreName"]]
        if not stores:
            raise KmsError("CustomKeyStoreNotFoundException",
                           f"Custom key store {p['CustomKeyStoreName']} does not exist.")
    start = 0
    if "Marker" in p:
        if not (isinstance(p["Marker"], str) and p["Marker"].isdigit() and int(p["Marker"]) <= len(stores)):
            raise KmsError("InvalidMarkerException", "The marker is not valid.")
        start = int(p["Marker"])
    limit = p.get("Limit", 1000)
    if not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise KmsError("ValidationException", "Limit must be between 1 and 1000.")
    page = stores[start:start + limit]
    out: dict[str, Any] = {"CustomKeyStores": [describe_entry(state, rt) for rt in page], "Truncated": False}
    if start + limit < len(stores):
        out.update(NextMarker=str(start + limit), Truncated=True)
    return out


def connect(state: WorldState, p: dict[str, Any]) -> dict[str, Any]:
    rt = _store(state, require(p, "CustomKeyStoreId"))
    if rt.ks.state in ("DISCONNECTING", "FAILED"):
        raise invalid_state(rt.ks, "ConnectCustomKeyStore")
    if rt.ks.state == "DISCONNECTED":
        state.start_connect(rt)
    return {}


def disconnect(state: WorldState, p: dict[str, Any]) -> dict[str, Any]:
    rt = _store(state, require(p, "CustomKeyStoreId"))
    if rt.ks.state in ("DISCONNECTING", "DISCONNECTED"):
        raise invalid_state(rt.ks, "DisconnectCustomKeyStore")
    state.start_disconnect(rt)
    return {}


def delete(state: WorldState, p: dict[str, Any]) -> dict[str, Any]:
    rt = _store(state, require(p, "CustomKeyStoreId"))
    if rt.ks.state != "DISCONNECTED":
        raise invalid_state(rt.ks, "DeleteCustomKeyStore")
    if any(k.keystore == rt.ks.id for k in state.world.keys):
        raise KmsError("CustomKeyStoreHasCMKsException",
                       "Cannot delete a custom key store that contains KMS keys. Schedule their deletion first.")
    state.remove_store(rt.ks.id)
    return {}


def update(state: WorldState, p: dict[str, Any]) -> dict[str, Any]:
    """UpdateCustomKeyStore: state rules, connectivity rules, uniqueness, then a live check with new values."""
    rt = _store(state, require(p, "CustomKeyStoreId"))
    ks = rt.ks
    if "NewCustomKeyStoreName" in p:
        _name_in_use(state, p["NewCustomKeyStoreName"], exclude=ks.id)
    if any(k in p for k in NEEDS_DISCONNECTED) and ks.state != "DISCONNECTED":
        raise invalid_state(ks, "UpdateCustomKeyStore")
    allowed = UPDATE_STATE_RULES[state.world.update_state_rule]
    if any(k in p and ks.state not in states for k, states in allowed.items()):
        raise invalid_state(ks, "UpdateCustomKeyStore")
    _validate(p)
    connectivity = p.get("XksProxyConnectivity", ks.connectivity)
    service = p.get("XksProxyVpcEndpointServiceName")
    # API reference, XksProxyConnectivity: "If you change the XksProxyConnectivity to VPC_ENDPOINT_SERVICE,
    # you must also change the XksProxyUriEndpoint" (and the same "to PUBLIC_ENDPOINT"). The exception name
    # is UNCONFIRMED (no documented one); ValidationException is what the model offers for a bad parameter.
    new_endpoint = p.get("XksProxyUriEndpoint")
    if connectivity != ks.connectivity and (new_endpoint is None or new_endpoint.lower() == ks.uri_endpoint.lower()):
        raise KmsError("ValidationException", f"Changing XksProxyConnectivity to {connectivity} requires changing "
                                              f"the XksProxyUriEndpoint too.")
    if connectivity == checks.VPC:
        service = ks.vpc_endpoint_service_name if service is None else service
        owner = p.get("XksProxyVpcEndpointServiceOwner",
                      ks.vpc_endpoint_service_owner if ks.connectivity == checks.VPC else "")
        if not service or (connectivity != ks.connectivity and not p.get("XksProxyVpcEndpointServiceName")):
            raise KmsError("ValidationException",
                           "VPC_ENDPOINT_SERVICE connectivity requires an XksProxyVpcEndpointServiceName.")
    else:
        if service or p.get("XksProxyVpcEndpointServiceOwner"):
            raise KmsError("ValidationException", "PUBLIC_ENDPOINT connectivity requires a null or empty "
                                                  "XksProxyVpcEndpointServiceName.")
        service, owner = "", ""
    cred = p.get("XksProxyAuthenticationCredential") or {"AccessKeyId": ks.access_key_id,
                                                         "RawSecretAccessKey": ks.secret}
    target = checks.Target(connectivity, p.get("XksProxyUriEndpoint", ks.uri_endpoint),
                           p.get("XksProxyUriPath", ks.uri_path), cred["AccessKeyId"], cred["RawSecretAccessKey"],
                           service, owner)
    proxy_change = any(k in p for k in PROXY_FIELDS)
    if proxy_change:
        _uniqueness(state, target, exclude=ks.id)
        _reject(checks.full_check(state, target, "UpdateCustomKeyStore", ks.id))
        rt.updated_since_connect = True
    ks.name = p.get("NewCustomKeyStoreName", ks.name)
    ks.connectivity, ks.uri_endpoint, ks.uri_path = target.connectivity, target.uri_endpoint, target.uri_path
    ks.access_key_id, ks.secret = target.access_key_id, target.secret
    ks.vpc_endpoint_service_name, ks.vpc_endpoint_service_owner = target.service_name, target.service_owner
    return {}
