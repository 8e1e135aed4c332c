"""xksmigrate: safely switch an AWS KMS external key store between public and VPC endpoint connectivity."""

__version__ = "0.1.0"  # the one place the version lives (pyproject reads it)
