"""The KMS calls the engine makes (the applier), and how their errors are classified.

Each method is one AWS call (botocore's `standard` retry mode already retried throttling and 5xx
inside it). Errors come out as `AwsCallError` with `retryable` set from an explicit list, so the
engine's step retries never retry something that cannot get better (an XKS proxy rejection, a
missing permission) and never wrap a call that botocore retries already more than once per step.
"""

from __future__ import annotations

import secrets as _random
from collections.abc import Callable
from typing import Any, Protocol

from migrator.aws.secret_refs import SecretValue
from migrator.aws.store_config import KeyInfo, Observation, StoreConfig

# Errors a later attempt of the same step can get past (botocore gave up on them already once).
RETRYABLE = frozenset({
    "ThrottlingException", "KMSInternalException", "DependencyTimeoutException", "InternalFailure",
    "ServiceUnavailable", "ServiceUnavailableException", "RequestTimeout", "RequestTimeoutException",
    "RequestLimitExceeded", "TooManyRequestsException", "ConnectionError", "ReadTimeout",
    "ConnectTimeout", "EndpointConnectionError", "InternalError", "HTTP5xx",
})
# Errors that no retry fixes: the plan, the proxy or the permissions must change first.
NON_RETRYABLE = frozenset({
    "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException",
    "ExpiredTokenException", "ValidationException", "CustomKeyStoreNotFoundException",
    "CustomKeyStoreNameInUseException", "CustomKeyStoreInvalidStateException", "NotFoundException",
    "DisabledException", "InvalidKeyUsageException", "InvalidCiphertextException",
    "IncorrectKeyException", "KMSInvalidStateException",
    "XksProxyUriInUseException", "XksProxyUriEndpointInUseException", "XksProxyUriUnreachableException",
    "XksProxyIncorrectAuthenticationCredentialException", "XksProxyVpcEndpointServiceInUseException",
    "XksProxyVpcEndpointServiceNotFoundException", "XksProxyVpcEndpointServiceInvalidConfigurationException",
    "XksProxyInvalidResponseException", "XksProxyInvalidConfigurationException",
})


class AwsCallError(Exception):
    """One failed AWS call: operation, error code, AWS's message and request id."""

    def __init__(self, operation: str, code: str, message: str, request_id: str | None = None):
        super().__init__(f"{operation}: {code}: {message}")
        self.operation, self.code, self.message, self.request_id = operation, code, message, request_id

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE or (self.code not in NON_RETRYABLE and self.code.startswith("HTTP5"))


class SharedLooks(Protocol):
    """The cell's one describe stream (aws/cell_poller.CellPoller), as the applier sees it."""

    @property
    def paced(self) -> bool: ...

    def describe(self, store_id: str, polling: bool = False) -> Observation: ...

    def admit_window(self) -> float: ...


class KmsApplier:
    """Thin, counted wrappers over the KMS API. `on_call(operation, request_id, error_code)` sees every call."""

    def __init__(self, kms_client: Any, on_call: Callable[[str, str | None, str | None], None] | None = None,
                 poller: SharedLooks | None = None):
        self._kms = kms_client
        self._on_call = on_call or (lambda op, rid, err: None)
        self._poller = poller  # `describe` through the cell's shared stream (aws/cell_poller.py)

    def _call(self, operation: str, method: str, **params: Any) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = getattr(self._kms, method)(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            meta = exc.response.get("ResponseMetadata", {})
            code = error.get("Code") or f"HTTP{meta.get('HTTPStatusCode', '')}"
            if code.isdigit():
                code = f"HTTP{code}"
            rid = meta.get("RequestId")
            self._on_call(operation, rid, code)
            raise AwsCallError(operation, code, _scrub(error.get("Message", "")), rid) from None
        except BotoCoreError as exc:
            code = type(exc).__name__
            if code not in RETRYABLE and "Connect" in code:
                code = "ConnectionError"
            self._on_call(operation, None, code)
            raise AwsCallError(operation, code, str(exc)) from None
        rid = _request_id(response)
        self._on_call(operation, rid, None)
        return dict(response)

    # -- reading ---------------------------------------------------------------------------
    def find_store(self, store_id: str | None = None, name: str | None = None) -> Observation | None:
        """The store named by id or name, or None when KMS says it does not exist (by id through the cell's poller
        when there is one, so that a snapshot's look is one of the cell's paced looks too)."""
        if store_id and self._poller is not None:
            try:
                return self._poller.describe(store_id)
            except AwsCallError as exc:
                if exc.code == "CustomKeyStoreNotFoundException":
                    return None
                raise
        params = {"CustomKeyStoreId": store_id} if store_id else {"CustomKeyStoreName": name}
        try:
            response = self._call("DescribeCustomKeyStores", "describe_custom_key_stores", **params)
        except AwsCallError as exc:
            if exc.code == "CustomKeyStoreNotFoundException":
                return None
            raise
        stores = response.get("CustomKeyStores", [])
        return Observation.from_describe(stores[0]) if stores else None

    @property
    def paced_looks(self) -> bool:
        """Are this store's looks spaced by its cell's poller (so a wait may ask again as soon as answered)?"""
        return self._poller is not None and self._poller.paced

    def admit_window(self) -> float:
        """Wait for the cell's turn to start a disconnected window (the real seconds waited; 0 alone)."""
        return self._poller.admit_window() if self._poller is not None else 0.0

    def describe(self, store_id: str, polling: bool = False) -> Observation:
        """The store now (through the cell's poller when there is one: one describe serves every store);
        `polling`: a wait for a change to finish, which can let a step's look go first."""
        if self._poller is not None:
            return self._poller.describe(store_id, polling)
        found = self.find_store(store_id=store_id)
        if found is None:
            raise AwsCallError("DescribeCustomKeyStores", "CustomKeyStoreNotFoundException",
                               f"custom key store {store_id} does not exist")
        return found

    def all_stores(self) -> list[Observation]:
        stores: list[Observation] = []
        marker: str | None = None
        while True:
            params: dict[str, Any] = {"Limit": 100}
            if marker:
                params["Marker"] = marker
            response = self._call("DescribeCustomKeyStores", "describe_custom_key_stores", **params)
            stores.extend(Observation.from_describe(e) for e in response.get("CustomKeyStores", []))
            if not response.get("Truncated"):
                return stores
            marker = response.get("NextMarker")

    def describe_key(self, key_id: str) -> KeyInfo:
        meta = self._call("DescribeKey", "describe_key", KeyId=key_id)["KeyMetadata"]
        return KeyInfo(key_id=meta["KeyId"], arn=meta.get("Arn", ""), state=meta.get("KeyState", ""),
                       custom_key_store_id=meta.get("CustomKeyStoreId", ""),
                       xks_key_id=(meta.get("XksKeyConfiguration") or {}).get("Id", ""))

    def keys_of_store(self, store_id: str, *, want_enabled: int = 3,
                      states: tuple[str, ...] = ("Enabled",)) -> list[KeyInfo]:
        """Keys of the store in one of `states`, at most `want_enabled` (ListKeys has no store filter)."""
        found: list[KeyInfo] = []
        marker: str | None = None
        while len(found) < want_enabled:
            params: dict[str, Any] = {"Limit": 1000}
            if marker:
                params["Marker"] = marker
            response = self._call("ListKeys", "list_keys", **params)
            for entry in response.get("Keys", []):
                info = self.describe_key(entry["KeyId"])
                if info.custom_key_store_id == store_id and info.state in states:
                    found.append(info)
                    if len(found) >= want_enabled:
                        break
            if not response.get("Truncated"):
                break
            marker = response.get("NextMarker")
        return found

    # -- changing --------------------------------------------------------------------------
    def disconnect(self, store_id: str) -> str | None:
        response = self._call("DisconnectCustomKeyStore", "disconnect_custom_key_store", CustomKeyStoreId=store_id)
        return _request_id(response)

    def connect(self, store_id: str) -> str | None:
        response = self._call("ConnectCustomKeyStore", "connect_custom_key_store", CustomKeyStoreId=store_id)
        return _request_id(response)

    def update(self, store_id: str, desired: StoreConfig, current: StoreConfig,
               credential: tuple[str, SecretValue] | None = None) -> str | None:
        """Send the UpdateCustomKeyStore that turns `current` into `desired`; returns the request id."""
        params = update_parameters(store_id, desired, current, credential is not None)
        if credential is not None:
            access_key_id, secret = credential
            params["XksProxyAuthenticationCredential"] = {"AccessKeyId": access_key_id,
                                                          "RawSecretAccessKey": secret.reveal()}
        response = self._call("UpdateCustomKeyStore", "update_custom_key_store", **params)
        return _request_id(response)

    def round_trip(self, key_id: str, context: dict[str, str]) -> tuple[str | None, str | None]:
        """Encrypt then Decrypt 32 random bytes under the key; returns both request ids."""
        plaintext = _random.token_bytes(32)
        enc = self._call("Encrypt", "encrypt", KeyId=key_id, Plaintext=plaintext, EncryptionContext=context)
        dec = self._call("Decrypt", "decrypt", CiphertextBlob=enc["CiphertextBlob"], EncryptionContext=context,
                         KeyId=key_id)
        if dec.get("Plaintext") != plaintext:
            raise AwsCallError("Decrypt", "RoundTripMismatch", "decrypted bytes differ from the encrypted ones")
        return (enc.get("ResponseMetadata", {}).get("RequestId"), dec.get("ResponseMetadata", {}).get("RequestId"))


def update_parameters(store_id: str, desired: StoreConfig, current: StoreConfig,
                      with_credential: bool = False) -> dict[str, Any]:
    """UpdateCustomKeyStore parameters (without the secret) that move `current` to `desired`.

    Connectivity changes always carry the endpoint (KMS requires it) and, for VPC, the service name.
    For PUBLIC the service name is omitted: KMS clears it, and boto3 refuses an empty string (min 20).
    """
    params: dict[str, Any] = {"CustomKeyStoreId": store_id}
    if desired.connectivity != current.connectivity:
        params["XksProxyConnectivity"] = desired.connectivity
        params["XksProxyUriEndpoint"] = desired.uri_endpoint
    elif desired.uri_endpoint != current.uri_endpoint:
        params["XksProxyUriEndpoint"] = desired.uri_endpoint
    if desired.connectivity == "VPC_ENDPOINT_SERVICE":
        if (desired.vpc_endpoint_service_name != current.vpc_endpoint_service_name
                or "XksProxyConnectivity" in params):
            params["XksProxyVpcEndpointServiceName"] = desired.vpc_endpoint_service_name
        if desired.vpc_endpoint_service_owner and (
                desired.vpc_endpoint_service_owner != current.vpc_endpoint_service_owner):
            params["XksProxyVpcEndpointServiceOwner"] = desired.vpc_endpoint_service_owner
    if desired.uri_path and desired.uri_path != current.uri_path:
        params["XksProxyUriPath"] = desired.uri_path
    return params


def needs_disconnect(params: dict[str, Any]) -> bool:
    """Whether these update parameters touch a property that requires DISCONNECTED (facts §1.1)."""
    return any(k in params for k in ("XksProxyConnectivity", "XksProxyUriEndpoint",
                                     "XksProxyVpcEndpointServiceName", "XksProxyVpcEndpointServiceOwner"))


def _request_id(response: dict[str, Any]) -> str | None:
    rid = (response.get("ResponseMetadata") or {}).get("RequestId")
    return str(rid) if rid else None


def _scrub(message: str) -> str:
    """AWS messages never carry our secret, but cap their length for one-line reporting."""
    message = " ".join(message.split())
    return message if len(message) <= 300 else message[:297] + "..."
