"""Toy Models of Superposition (Elhage et al. 2022) reproduced in JAX.

Modules: :mod:`.model` (the ReLU-output toy model, many instances at once), :mod:`.training`
(scanned AdamW with orbax resume), :mod:`.analysis` (feature dimensionality, dimensions per
feature, angles, phase classification), :mod:`.phase` (exact loss and analytic optimum of the
n = 2, m = 1 model), :mod:`.studies` (the four reproductions), :mod:`.plots`, :mod:`.cli`.
"""

from .analysis import (
    angular_gaps_deg,
    classify_two_feature_model,
    dims_per_feature,
    feature_dimensionality,
    histogram_peaks,
)
from .model import ToyModelConfig, forward, init_params, sample_features
from .phase import analytic_phase_diagram, expected_loss
from .studies import (
    PentagonStudy,
    PhaseStudy,
    UniformStudy,
    run_pentagon,
    run_phase_diagram,
    run_uniform,
)
from .training import TrainConfig, train

__all__ = [
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
    "run_pentagon",
    "run_phase_diagram",
    "run_uniform",
    "sample_features",
    "train",
]
