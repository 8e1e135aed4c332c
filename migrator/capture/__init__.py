"""`xksmigrate capture`: read the real account (read-only) and write a world file the rehearsal world loads.

observe.py reads one account-Region cell through the AWS layer, probes.py shakes hands with and signs to each
proxy endpoint, collect.py gathers both for a plan's stores, pseudonyms.py scrubs names with a keyed hash,
twin.py turns what was seen into world TOML, and translate.py reads a real-names plan through the same
pseudonyms. Only the CLI imports this package; it never imports the rehearsal world (they meet at a file).
"""
