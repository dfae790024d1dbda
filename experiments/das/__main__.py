"""``python -m jinterp.experiments.das --out DIR``: see :mod:`.cli`."""

from jinterp.experiments.das.cli import main

if __name__ == "__main__":
    main()
