"""``python -m jinterp.experiments.tracr``: see :mod:`.cli`."""

from jinterp.experiments.tracr.cli import main

if __name__ == "__main__":
    main()
