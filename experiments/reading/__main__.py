"""``python -m jinterp.experiments.reading --out DIR``: see :mod:`.cli`."""

from jinterp.experiments.reading.cli import main

if __name__ == "__main__":
    main()
