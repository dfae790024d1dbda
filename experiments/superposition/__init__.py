"""Toy Models of Superposition (Elhage et al. 2022) reproduced in JAX.

Modules: :mod:`.model` (the ReLU-output toy model, many instances at once), :mod:`.training`
(scanned AdamW with orbax resume), :mod:`.analysis` (feature dimensionality, dimensions per
feature, angles, phase classification), :mod:`.phase` (exact loss and analytic optimum of the
n = 2, m = 1 model), :mod:`.studies` (the four reproductions), :mod:`.plots`, :mod:`.cli`.

The later sections, one ``--part`` each (:mod:`.parts`): :mod:`.dimensionality` (D_i with
restarts, polytope lines) with :mod:`.geometry` (tegum factors), :mod:`.correlated`,
:mod:`.computation` (absolute value in superposition), :mod:`.basis` (privileged basis) with
:mod:`.neurons`; figures in :mod:`.part_plots`.
"""

from .analysis import (
    angular_gaps_deg,
    classify_two_feature_model,
    dims_per_feature,
    feature_dimensionality,
    histogram_peaks,
)
from .basis import BasisStudy, run_basis
from .computation import ComputationStudy, run_computation
from .correlated import CorrelatedStudy, run_correlated
from .dimensionality import DimensionalityStudy, run_dimensionality
from .geometry import line_fractions, tegum_factors
from .model import ToyModelConfig, forward, init_params, sample_features
from .parts import run_part
from .phase import analytic_phase_diagram, expected_loss
from .studies import (
    PentagonStudy,
    PhaseStudy,
    UniformStudy,
    run_pentagon,
    run_phase_diagram,
    run_uniform,
)
from .training import TrainConfig, train, train_with

__all__ = [
    "BasisStudy",
    "ComputationStudy",
    "CorrelatedStudy",
    "DimensionalityStudy",
    "PentagonStudy",
    "PhaseStudy",
    "ToyModelConfig",
    "TrainConfig",
    "UniformStudy",
    "analytic_phase_diagram",
    "angular_gaps_deg",
    "classify_two_feature_model",
    "dims_per_feature",
    "expected_loss",
    "feature_dimensionality",
    "forward",
    "histogram_peaks",
    "init_params",
    "line_fractions",
    "run_basis",
    "run_computation",
    "run_correlated",
    "run_dimensionality",
    "run_part",
    "tegum_factors",
    "train_with",
    "run_pentagon",
    "run_phase_diagram",
    "run_uniform",
    "sample_features",
    "train",
]
