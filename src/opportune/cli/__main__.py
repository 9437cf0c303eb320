"""``python -m opportune.cli``: the console script, for subprocesses."""

from opportune.cli import main

main()
