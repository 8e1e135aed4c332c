"""The AWS layer: boto3 clients, the KMS applier, the XKS proxy client, secret references, the store's shape.

The bottom layer of the tool: it imports nothing else of `migrator` (tests/test_layers.py).
"""
