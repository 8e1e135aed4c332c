"""The AWS CLI form of what a run, its rollback and an operator at a stuck store do: one renderer.

`mutating_calls` / `rollback_calls` spell out the calls of a run and of its rollback in order (for
`xksmigrate plan`); `stuck_commands` the manual restore of the snapshot (for a stuck run, see
RUNBOOK.md#stuck). Every `--xks-proxy-*` flag comes from `FLAGS`, so the three cannot disagree on
which parameters exist (a restore without the endpoint service owner fails for a cross-account
service). Secrets are never written out: a credential shows its reference.
"""

from __future__ import annotations

import shlex

from migrator.aws.kms import update_parameters
from migrator.aws.store_config import Observation, StoreConfig
from migrator.plan import KeystorePlan, Plan

# (StoreConfig field, UpdateCustomKeyStore parameter, AWS CLI flag), in the order the commands give them.
FLAGS: tuple[tuple[str, str, str], ...] = (
    ("connectivity", "XksProxyConnectivity", "--xks-proxy-connectivity"),
    ("uri_endpoint", "XksProxyUriEndpoint", "--xks-proxy-uri-endpoint"),
    ("uri_path", "XksProxyUriPath", "--xks-proxy-uri-path"),
    ("vpc_endpoint_service_name", "XksProxyVpcEndpointServiceName", "--xks-proxy-vpc-endpoint-service-name"),
    ("vpc_endpoint_service_owner", "XksProxyVpcEndpointServiceOwner", "--xks-proxy-vpc-endpoint-service-owner"),
    ("access_key_id", "XksProxyAuthenticationCredential", "--xks-proxy-authentication-credential"),
)
CREDENTIAL_FLAG = FLAGS[-1][2]
# A restore always names these (the state the store is in is not known), the others only when set.
_ALWAYS_RESTORED = ("connectivity", "uri_endpoint", "uri_path")


def cli_flags() -> tuple[str, ...]:
    """Every `--xks-proxy-*` flag this module can emit."""
    return tuple(flag for _, _, flag in FLAGS)


def _credential_arg(access_key_id: str, secret_ref: str) -> str:
    # The secret is never written out: the reference stands in for RawSecretAccessKey.
    return f"{CREDENTIAL_FLAG} AccessKeyId={access_key_id},RawSecretAccessKey=<{secret_ref}>"


def _store_arg(keystore: KeystorePlan, snapshot: Observation | None) -> str:
    sid = (snapshot.id if snapshot else "") or keystore.id
    return sid or f"<id of {keystore.name}>"


def _update(region: str, sid: str, desired: StoreConfig, current: StoreConfig,
            credential: tuple[str, str] | None) -> str:
    """`aws kms update-custom-key-store` with exactly the parameters the engine sends (kms.update_parameters)."""
    params = update_parameters(sid, desired, current, credential is not None)
    args = ["aws", "kms", "update-custom-key-store", "--custom-key-store-id", sid]
    for _, name, flag in FLAGS:
        if name in params:
            args += [flag, str(params[name])]
    text = shlex.join([*args, "--region", region])
    if credential:
        text += " " + _credential_arg(*credential)
    return text


def _window(region: str, sid: str, update: str, keystore: KeystorePlan, skip_disconnect: bool) -> list[str]:
    r = ["--region", region]
    calls = []
    if not skip_disconnect:
        calls.append(shlex.join(["aws", "kms", "disconnect-custom-key-store", "--custom-key-store-id", sid, *r]))
    calls.append(shlex.join(["aws", "kms", "describe-custom-key-stores", "--custom-key-store-id", sid, *r])
                 + "  # repeat every poll_interval until ConnectionState = DISCONNECTED")
    calls.append(update)
    calls.append(shlex.join(["aws", "kms", "connect-custom-key-store", "--custom-key-store-id", sid, *r]))
    calls.append(shlex.join(["aws", "kms", "describe-custom-key-stores", "--custom-key-store-id", sid, *r])
                 + "  # repeat until ConnectionState = CONNECTED (FAILED: stop, roll back)")
    keys = list(keystore.verify_key_ids) or ["<each of up to 3 Enabled keys of the store>"]
    for key in keys:
        calls.append(shlex.join(["aws", "kms", "encrypt", "--key-id", key, "--plaintext", "fileb://<random 32 bytes>",
                                 "--encryption-context", "xksmigrate-run=<run id>", *r]))
        calls.append(shlex.join(["aws", "kms", "decrypt", "--key-id", key, "--ciphertext-blob",
                                 "fileb://<ciphertext>", "--encryption-context", "xksmigrate-run=<run id>", *r])
                     + "  # plaintext must match")
    return calls


def mutating_calls(plan: Plan, keystore: KeystorePlan, snapshot: Observation | None) -> list[str]:
    """The AWS calls a run makes for this store, in order (describe polls and verification included)."""
    sid = _store_arg(keystore, snapshot)
    current = snapshot.config if snapshot else StoreConfig("", "", "")
    t = keystore.target
    credential = None
    if t.credential:
        access_key_id = t.credential.access_key_id or (current.access_key_id if snapshot else "")
        credential = (access_key_id or "<current access key id>", t.credential.secret_ref)
    update = _update(plan.region, sid, StoreConfig.for_target(t, current), current, credential)
    state = snapshot.state if snapshot else ""
    return _window(plan.region, sid, update, keystore, skip_disconnect=state in ("DISCONNECTED", "DISCONNECTING"))


def rollback_calls(plan: Plan, keystore: KeystorePlan, snapshot: Observation | None) -> list[str]:
    """The calls that restore the recorded configuration (disconnect first when the store is not disconnected)."""
    sid = _store_arg(keystore, snapshot)
    if snapshot is None:
        return [f"# no snapshot of {keystore.ref}: nothing recorded to roll back to"]
    original = snapshot.config
    credential = None
    if keystore.target.credential:
        old = keystore.original_credential
        ref = old.secret_ref if old else "<original secret: not given>"
        credential = ((old.access_key_id if old else "") or original.access_key_id, ref)
    update = _update(plan.region, sid, original, StoreConfig.for_target(keystore.target, original), credential)
    calls = _window(plan.region, sid, update, keystore, skip_disconnect=False)
    calls[0] += "  # only if the store is not already DISCONNECTED"
    return calls


def _restore_args(original: StoreConfig) -> list[str]:
    """The `--xks-proxy-*` arguments that put `original` back whatever the store holds now (no credential)."""
    args: list[str] = []
    for name, _, flag in FLAGS:
        value = getattr(original, name)
        if name == "access_key_id":
            continue  # needs the secret: RUNBOOK.md#stuck says how to add it
        if value or name in _ALWAYS_RESTORED:
            args += [flag, value]
    return args


def stuck_commands(region: str, store_id: str, original: StoreConfig | None, connection_state: str) -> list[str]:
    """What an operator runs by hand to put a stuck store back on its snapshot, in RUNBOOK.md#stuck's order."""
    def kms(operation: str, *args: str) -> str:
        return shlex.join(["aws", "kms", "--region", region, operation, "--custom-key-store-id", store_id, *args])

    commands = [kms("describe-custom-key-stores")]
    if connection_state in ("CONNECTED", "CONNECTING", "FAILED"):
        commands.append(kms("disconnect-custom-key-store"))
    if original is not None:
        commands.append(kms("update-custom-key-store", *_restore_args(original)))
    commands.append(kms("connect-custom-key-store"))
    commands.append(kms("describe-custom-key-stores", "--query",
                        "CustomKeyStores[0].[ConnectionState,ConnectionErrorCode]"))
    return commands
