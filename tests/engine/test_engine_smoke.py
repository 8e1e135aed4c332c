"""The forward path of both example plans, in-process, against the rehearsal world over HTTP, on both journals."""

from __future__ import annotations

import pytest
from engine_helpers import ROOMY_BUDGET, example_plan, load_world, make_env, mutating_calls, read_world_log

from migrator.aws.kms import KmsApplier
from migrator.engine import runner as engine


@pytest.mark.parametrize("name", ["public-to-vpc", "vpc-to-public"])
def test_example_plan_completes_with_the_target_live(name, journal, start_world):
    server = start_world(load_world(name, time_scale=600.0))
    plan = example_plan(name, max_disconnected=ROOMY_BUDGET)
    env = make_env(server, journal)

    result = engine.start(plan, env)

    assert (result.outcome, result.exit_code) == ("completed", 0), result.message
    store = result.stores[0]
    live = KmsApplier(env.clients.client("kms")).describe(store.id)  # what AWS says now, not what we remember
    target = plan.keystores[0].target
    assert live.state == "CONNECTED"
    assert (live.config.connectivity, live.config.uri_endpoint) == (target.connectivity, target.uri_endpoint)
    assert live.config.vpc_endpoint_service_name == (target.vpc_endpoint_service_name or "")
    assert store.final == {k: getattr(live.config, k) for k in engine.CONFIG_KEYS}
    # The journal agrees with AWS and saw every step in order.
    run = journal.get_run(result.run_id)
    assert run.outcome == "completed" and run.migrations[0].state == "completed"
    assert run.migrations[0].outcome == "completed"  # on the row too, written with the final transition
    states = [e.to_state for e in journal.events(result.run_id) if e.kind == "transition"]
    assert states == ["snapshotted", "preflighted", "approved", "disconnecting", "disconnected", "updating",
                      "updated", "connecting", "connected", "verifying", "completed"]
    seqs = [e.seq for e in journal.events(result.run_id)]
    assert seqs == list(range(1, len(seqs) + 1))
    # Exactly one disconnect, one update and one connect reached the world.
    assert mutating_calls(read_world_log(server)) == ["DisconnectCustomKeyStore", "UpdateCustomKeyStore",
                                                      "ConnectCustomKeyStore"]
