"""`python -m seqops …` runs the `seqops` CLI."""

from seqops.cli import main

main()
