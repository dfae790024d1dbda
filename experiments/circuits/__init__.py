"""The circuit study: the induction circuit of a 2-layer attention-only model, end to end.

Trains the induction study's model, localises the circuit with ``jinterp.patching``'s compiled
activation-patching sweeps and AtP*, path-patches the previous-token head into the induction
heads' keys, queries and values, discovers the circuit with ACDC and a learned edge mask
(with their faithfulness), checks the causal findings against the attention patterns, and
writes ``report.md``, ``summary.json``, PNG figures and an HTML attention-pattern viewer. Run
``python -m jinterp.experiments.circuits --out DIR`` (``--fast``: a seconds-long smoke run).
"""

from jinterp.experiments.circuits.config import CircuitConfig
from jinterp.experiments.circuits.discover import check_api, discover_circuits
from jinterp.experiments.circuits.localise import rank_correlation, run_sweeps
from jinterp.experiments.circuits.paths import path_effects
from jinterp.experiments.circuits.study import checks, reference_heads, run_study
from jinterp.experiments.circuits.task import (
    InductionRecovery,
    SecondCopyLoss,
    make_metric,
    make_prompts,
    second_copy_loss,
)

__all__ = [
    "CircuitConfig", "InductionRecovery", "SecondCopyLoss", "check_api", "checks",
    "discover_circuits", "make_metric", "make_prompts", "path_effects", "rank_correlation",
    "reference_heads", "run_study", "run_sweeps", "second_copy_loss",
]
