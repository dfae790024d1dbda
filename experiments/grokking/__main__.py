"""``python -m jinterp.experiments.grokking --out DIR``: see :mod:`.cli`."""

from .cli import main

main()
