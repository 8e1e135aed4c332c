"""The XKS proxy, to the letter of the spec: its HTTP API, SigV4 verification, AES-256-GCM."""
