"""KMS as the rehearsal world serves it: the JSON protocol, custom key stores, keys, and KMS calling proxies."""
