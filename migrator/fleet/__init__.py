"""The fleet: many key stores across accounts and Regions, in waves (`xksmigrate fleet ...`).

spec.py reads and validates a fleet file (every error one line naming the file and the key, before any AWS
call) into a FleetSpec: one Plan holding every store (what `fleet plan` preflights, with the cross-account
checks the many-accounts work built) and, for each store, the single-store plan its own run is driven by, so
every store keeps its own journal, lock, resume and rollback. rollout.py turns the rollout table into the exact
order: the canary alone, then waves, never more than max_in_flight at once.
"""
