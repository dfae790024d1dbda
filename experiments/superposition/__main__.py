"""``python -m jinterp.experiments.superposition --out DIR``: see :mod:`.cli`."""

from .cli import main

if __name__ == "__main__":
    main()
