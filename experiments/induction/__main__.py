"""``python -m jinterp.experiments.induction --out DIR``: see :mod:`.cli`."""

from jinterp.experiments.induction.cli import main

if __name__ == "__main__":
    main()
