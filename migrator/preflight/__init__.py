"""Preflight: read-only checks (pass/warn/block with a remedy), the gate, the plan report, the AWS CLI renderer.

Imports aws/, journal views and plan; never the engine, the CLI or the rehearsal wing (tests/test_layers.py).
"""
