"""``python -m jinterp.experiments.grokking --out DIR``: see :mod:`jinterp.experiments.grokking.cli`."""

from .cli import main

main()
