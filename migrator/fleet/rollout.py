"""The rollout as data: the exact waves, and when a fleet must stop starting stores. Pure logic, no I/O.

- The canary stores go first, each in a wave of its own (first and alone).
- Then the waves the fleet file names, in its order.
- Then every store no wave names, in file order, by the ramp: "exponential" waves of 1 (when nothing went
  before), 2, 4, 8, ... (SSM Automation's rate control), or "one_wave". The ramp never puts two stores that
  share a proxy in one wave: one proxy failing mid-window would take both down at once (a store that would
  is moved to the next wave that has no store of its proxy).
- Within a wave at most max_in_flight stores are disconnected at once (the fleet runner's job).
- A failed canary stops the fleet; otherwise once more stores failed than failure_tolerance no new store
  starts, the stores in flight finish, and the fleet ends naming the store that stopped it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from migrator.fleet.spec import Rollout

FAILED_OUTCOMES = frozenset({"rolled_back", "stuck", "failed", "interrupted"})  # a store that did not complete
# "blocked" (nothing changed) counts too: a store the fleet meant to move and could not is a failure of the rollout
NOT_DONE = FAILED_OUTCOMES | {"blocked"}


@dataclass(frozen=True)
class StoreSlot:
    """What the rollout needs to know of a store: how it is named and which proxy it depends on."""

    ref: str
    proxies: frozenset[str]  # the proxy hosts it depends on: its target's, and the one it uses today


@dataclass(frozen=True)
class Wave:
    number: int  # 1-based, canary waves included
    refs: tuple[str, ...]
    canary: bool = False

    @property
    def label(self) -> str:
        return f"canary {self.number}" if self.canary else f"wave {self.number}"


def plan_waves(rollout: Rollout, stores: Sequence[StoreSlot]) -> tuple[Wave, ...]:
    """Every store in exactly one wave, in the order they start."""
    waves = [Wave(i + 1, (ref,), canary=True) for i, ref in enumerate(rollout.canary)]
    for refs in rollout.waves:
        waves.append(Wave(len(waves) + 1, tuple(refs)))
    named = set(rollout.canary) | {ref for wave in rollout.waves for ref in wave}
    rest = [s for s in stores if s.ref not in named]
    size = 1 if not waves else 2
    while rest:
        capacity = len(rest) if rollout.ramp == "one_wave" else size
        wave: list[str] = []
        deferred: list[StoreSlot] = []
        proxies: set[str] = set()
        for store in rest:
            if len(wave) < capacity and not store.proxies & proxies:
                wave.append(store.ref)
                proxies |= store.proxies
            else:
                deferred.append(store)
        waves.append(Wave(len(waves) + 1, tuple(wave)))
        rest, size = deferred, size * 2
    return tuple(waves)


def shared_proxies(wave: Wave, stores: Sequence[StoreSlot]) -> list[tuple[str, str, str]]:
    """(proxy, store, store) for each two stores of one wave that depend on the same proxy host: what
    `fleet plan` blocks in a wave the fleet file wrote by hand (the ramp never builds one)."""
    proxies_of = {s.ref: s.proxies for s in stores}
    seen: dict[str, str] = {}
    clashes: list[tuple[str, str, str]] = []
    for ref in wave.refs:
        for proxy in sorted(proxies_of.get(ref, frozenset())):
            if proxy in seen:
                clashes.append((proxy, seen[proxy], ref))
            else:
                seen[proxy] = ref
    return clashes


@dataclass
class Tolerance:
    """Counts the fleet's failures; says when no new store may start, and which store made it so."""

    failure_tolerance: int
    failures: int = 0
    stopped_by: str | None = None

    def record(self, ref: str, outcome: str, *, canary: bool) -> None:
        if outcome not in NOT_DONE:
            return
        self.failures += 1
        if self.stopped_by is None and (canary or self.failures > self.failure_tolerance):
            self.stopped_by = ref

    @property
    def may_start(self) -> bool:
        return self.stopped_by is None
