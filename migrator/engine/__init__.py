"""The engine: drives key stores through the machine table (machine.py) with a durable journal.

Imports aws/, journal/, preflight/ and plan; never cli/ or the rehearsal wing (tests/test_layers.py).
"""
