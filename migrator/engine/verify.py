"""Verify means crypto, not state: which keys prove a store works, and the round trips that prove it.

`CONNECTED` "does not indicate that the connection is operating properly" (AWS), so a store is done
only when DescribeKey says `Enabled` and an Encrypt+Decrypt round trip succeeds for every verify key.
The keys are chosen at snapshot time, while they are still usable, and proven in parallel: the window
ends when the slowest key works, not after the sum of all round trips.

A key can fail for its own reasons (disabled, pending deletion, deleted) while its store is fine: such a
key is left out at snapshot time with a note, and during verification it is told apart from a store that
fails (Unavailable / KMSInvalidStateException for every key): if at least one key proves the store, the
others' own failures are warnings, not a rollback.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from migrator.aws.kms import AwsCallError, KmsApplier
from migrator.aws.store_config import KEY_OWN_STATES, Observation
from migrator.engine.clock import Clock, leave_signals_to_the_main_thread
from migrator.engine.errors import Blocked, StepFailed
from migrator.engine.waits import Deadline, call_within, poll_until

VerifyKey = dict[str, str]  # {"key_id", "arn", "state"} as journaled in the snapshot
OnPoll = Callable[[object, float], None]
# KeyStates that are the key's own: no connect or proxy fixes them (Unavailable is the store's).
KEY_OWN_ERRORS = frozenset({"DisabledException", "NotFoundException"})


class KeyUnusable(Exception):
    """A verify key failed for its own reason (disabled, pending deletion, gone), not its store's."""

    def __init__(self, key_id: str, reason: str):
        super().__init__(f"verify key {key_id}: {reason}")
        self.key_id, self.reason = key_id, reason


def select_verify_keys(kms: KmsApplier, store: Observation, named: tuple[str, ...],
                       on_excluded: Callable[[str, str], None] = lambda key_id, state: None) -> list[VerifyKey]:
    """The plan's verify keys (each must belong to the store), or up to 3 usable keys of the store.

    A named key that is disabled or pending deletion cannot prove anything: it is left out, and
    `on_excluded(key_id, state)` journals why; if no named key is left, the run blocks here.
    """
    if named:
        chosen, excluded = [], []
        for key_id in named:
            info = kms.describe_key(key_id)
            if info.custom_key_store_id != store.id:
                owner = info.custom_key_store_id or "no custom key store"
                raise Blocked(f"keys.verify_keys: verify key {key_id} belongs to {owner}, not to {store.id}")
            if info.state in KEY_OWN_STATES:
                on_excluded(info.key_id, info.state)
                excluded.append(f"{key_id} is {info.state}")
                continue
            chosen.append({"key_id": info.key_id, "arn": info.arn, "state": info.state})
        if not chosen:
            raise Blocked(f"keys.verify_keys: no verify key can prove the store ({'; '.join(excluded)}); "
                          "name an Enabled key of the store in verify.key_ids")
        return chosen
    connected = store.state == "CONNECTED"
    keys = kms.keys_of_store(store.id, want_enabled=3,
                             states=("Enabled",) if connected else ("Enabled", "Unavailable"))
    if not keys:
        raise Blocked(f"keys.verifiable: key store {store.id} has no Enabled KMS key to verify with; "
                      "name one in verify.key_ids")
    return [{"key_id": k.key_id, "arn": k.arn, "state": k.state} for k in keys]


class KeyProver:
    """Round trips for a set of keys, each journaled through `record_ok(key_id, encrypt_rid, decrypt_rid)`."""

    def __init__(self, kms: KmsApplier, clock: Clock, *, run_id: str, interval: float,
                 record_ok: Callable[[str, str | None, str | None], None], on_poll: OnPoll):
        self.kms, self.clock, self.run_id, self.interval = kms, clock, run_id, interval
        self.record_ok, self.on_poll = record_ok, on_poll

    def prove_all(self, key_ids: list[str], deadline: Deadline) -> list[KeyUnusable]:
        """Every key, in parallel (daemon threads, so Ctrl-C is never held up).

        Returns the keys that failed for their own reasons when at least one other key proved the store;
        otherwise the first store-level error is raised (or a StepFailed when every key was unusable).
        """
        if not key_ids:
            raise StepFailed("no key to verify with")
        errors: dict[str, BaseException] = {}
        threads = [threading.Thread(target=self._prove_into, args=(key_id, deadline, errors), daemon=True,
                                    name=f"verify-{key_id}") for key_id in key_ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
        own = [exc for exc in errors.values() if isinstance(exc, KeyUnusable)]
        for key_id, exc in errors.items():
            if not isinstance(exc, KeyUnusable):
                raise exc if isinstance(exc, Exception) else StepFailed(f"verifying {key_id}: {exc}")
        if own and len(own) == len(key_ids):
            raise StepFailed("no verify key could prove the store: " + "; ".join(str(e) for e in own))
        return own

    def _prove_into(self, key_id: str, deadline: Deadline, errors: dict[str, BaseException]) -> None:
        leave_signals_to_the_main_thread()
        try:
            self.prove(key_id, deadline)
        except BaseException as exc:  # reported by the caller's thread
            errors[key_id] = exc

    def prove(self, key_id: str, deadline: Deadline) -> None:
        """Until one round trip works (changes take up to 5 minutes to be fully effective), within the deadline."""
        context = {"xksmigrate-run": self.run_id}

        def attempt() -> str:
            try:
                info = self.kms.describe_key(key_id)
                if info.state in KEY_OWN_STATES:
                    raise KeyUnusable(key_id, f"KeyState {info.state}")
                if info.state != "Enabled":
                    return f"KeyState {info.state}"
                encrypt_rid, decrypt_rid = self.kms.round_trip(key_id, context)
            except AwsCallError as exc:
                if exc.code in KEY_OWN_ERRORS:
                    raise KeyUnusable(key_id, f"{exc.code}: {exc.message}") from None
                if exc.code == "KMSInvalidStateException" or exc.retryable:
                    return f"{exc.code}: {exc.message}"
                raise
            self.record_ok(key_id, encrypt_rid, decrypt_rid)
            return "ok"

        def bounded() -> str:  # a round trip in the window ends with the budget too
            return call_within(attempt, clock=self.clock, deadline=deadline, what=f"Encrypt+Decrypt with {key_id}")

        poll_until(bounded, lambda result: result == "ok", clock=self.clock, interval=self.interval,
                   deadline=deadline, what=f"verifying key {key_id}", on_poll=self.on_poll)
