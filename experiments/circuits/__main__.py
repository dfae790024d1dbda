"""``python -m jinterp.experiments.circuits --out DIR``: see :mod:`.cli`."""

from jinterp.experiments.circuits.cli import main

if __name__ == "__main__":
    main()
