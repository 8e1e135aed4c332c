"""Placeholder until the CLI lands: keeps the console script importable."""


def main() -> None:
    raise SystemExit("xksmigrate: the command line is not built yet")
