"""Probes at every (layer, position) in one compiled program.

- :func:`fit_probes`: logistic (optax L-BFGS) and linear probes, ridge in closed form,
  k-sparse probes (Gurnee et al. 2023: top-k features by class-mean difference, then refit),
  each with a train/test split, a control task (permuted labels) and selectivity.
- :func:`fit_structural_probe`: Hewitt & Manning's structural probe at every layer, scored by
  distance Spearman and UUAS; :func:`synthetic_trees` plants a tree metric to validate it.
- :func:`plot_probe_scores`: accuracy-by-layer figures.
"""

from jinterp.probes.config import ProbeConfig, ProbeKind
from jinterp.probes.fit import ProbeResult, fit_probes, split
from jinterp.probes.linear import ridge, top_k_by_mean_difference
from jinterp.probes.optimize import Method, minimize
from jinterp.probes.plot import plot_probe_scores
from jinterp.probes.structural import (
    StructuralProbeResult,
    fit_structural_probe,
    probe_distances,
    spearman,
    synthetic_trees,
    tree_distances,
    uuas,
)

__all__ = [
    "Method", "ProbeConfig", "ProbeKind", "ProbeResult", "StructuralProbeResult",
    "fit_probes", "fit_structural_probe", "minimize", "plot_probe_scores", "probe_distances",
    "ridge", "spearman", "split", "synthetic_trees", "top_k_by_mean_difference",
    "tree_distances", "uuas",
]
