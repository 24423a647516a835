"""``python -m scanner``: the ``lred`` command."""
from .entry import main

main()
