"""Study 3: induction heads in a 2-layer attention-only transformer.

Reproduces, at toy scale, A Mathematical Framework for Transformer Circuits (Elhage et al.
2021) and In-context Learning and Induction Heads (Olsson et al. 2022): a phase change in the
loss on repeated random subsequences, induction heads in layer 1 composing (K-composition) with
a previous-token head in layer 0, their causal role under jinterp patching / ablation, and a
1-layer control that forms no induction head. Run
``python -m jinterp.experiments.induction --help``.
"""

from jinterp.experiments.induction.data import DataConfig, repeated_tokens, sample_batch
from jinterp.experiments.induction.patching import head_sweep, head_sweep_loop, patching_analysis
from jinterp.experiments.induction.phase import PhaseChange, find_phase_change
from jinterp.experiments.induction.scores import (
    copying_scores,
    induction_score,
    k_composition,
    layer_k_composition,
    previous_token_score,
)
from jinterp.experiments.induction.study import StudyConfig, run_study
from jinterp.experiments.induction.train import (
    TrainConfig,
    init_state,
    make_train_call,
    run_training,
)

__all__ = [
    "DataConfig", "PhaseChange", "StudyConfig", "TrainConfig", "copying_scores",
    "find_phase_change", "head_sweep", "head_sweep_loop", "induction_score", "init_state",
    "k_composition", "layer_k_composition", "make_train_call", "patching_analysis",
    "previous_token_score", "repeated_tokens", "run_study", "run_training", "sample_batch",
]
