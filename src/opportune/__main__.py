"""``python -m opportune``: the ``opportune`` command line, for when the script is not on
the PATH (a virtualenv not activated, ``pip install --user``)."""

from opportune.cli import main

main(prog_name="opportune")
