"""DAS on a toy model trained in-process: interchange-intervention accuracy against the size of
the aligned subspace, learned against random, where the variable lives and where it does not.

``python -m jinterp.experiments.das --out DIR`` (about a minute on 2 cores): see :mod:`.study`.
"""
