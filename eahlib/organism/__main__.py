"""``python -m eahlib.organism``: see :mod:`eahlib.organism.cli`."""

from eahlib.organism.cli import main

main()
