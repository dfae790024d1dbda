"""The public names of circuit discovery: circuits as interventions, ACDC, learned edge masks.

Re-exported by :mod:`jinterp.patching` (``from jinterp.patching import acdc, Circuit``).
"""

from jinterp.patching.acdc import AcdcLog, AcdcStep, acdc
from jinterp.patching.circuit import (
    Circuit,
    CircuitKL,
    circuit_logits,
    faithfulness,
    kl_to_clean,
    run_circuit,
)
from jinterp.patching.edge_mask import EdgeMaskLog, learn_edge_mask

__all__ = [
    "AcdcLog", "AcdcStep", "Circuit", "CircuitKL", "EdgeMaskLog", "acdc", "circuit_logits",
    "faithfulness", "kl_to_clean", "learn_edge_mask", "run_circuit",
]
