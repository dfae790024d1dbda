"""Steering and directional ablation.

- Vectors at every layer from one pass each: :func:`diff_in_means`, :func:`caa_vectors`
  (contrast pairs), :func:`actadd_vector` (a prompt pair, position by position).
- Applying them: :func:`steering_hooks` / :func:`steer` (chosen layers, positions, scale;
  built on ``jinterp.At`` and ``Steer``) and :class:`ActAdd`.
- Removing a direction: :func:`ablation_hooks` (every layer and position, ``ProjectOut``) and
  :func:`orthogonalize_weights` (the same edit written into the weights).
"""

from jinterp.steering.ablation import ablation_hooks, orthogonalize_weights, resid_writers
from jinterp.steering.apply import ActAdd, steer, steering_hooks
from jinterp.steering.vectors import actadd_vector, caa_vectors, diff_in_means

__all__ = [
    "ActAdd", "ablation_hooks", "actadd_vector", "caa_vectors", "diff_in_means",
    "orthogonalize_weights", "resid_writers", "steer", "steering_hooks",
]
