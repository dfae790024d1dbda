"""``python -m jinterp.sae.train --model DIR --hook NAME --arch topk --d-sae N ... --out DIR``.

The command line of :func:`jinterp.sae.train_on_model` (see :mod:`jinterp.sae.cli` for the
options; ``python -m jinterp.sae.train --help`` lists them). Run it as a module: importing
``jinterp.sae.train`` would shadow the function ``jinterp.sae.train``, so code imports
:func:`jinterp.sae.cli.main` instead.
"""

if __name__ == "__main__":
    import sys

    from jinterp.sae.cli import main

    main(sys.argv[1:])
