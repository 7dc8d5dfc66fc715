"""`python -m aarmor`: the same command line as the `aarmor` script."""

from aarmor.cli import main

main()
