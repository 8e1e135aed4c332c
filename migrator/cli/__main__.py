"""`python -m migrator.cli ...` runs the command line (the tests use it)."""

from migrator.cli import main

main()
