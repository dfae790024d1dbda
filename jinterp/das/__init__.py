"""Distributed alignment search (DAS): find the subspace where a causal variable lives.

Geiger, Wu, Potts, Icard and Goodman (2023) align a high-level causal model's variable with a
linear subspace of a hidden activation: learn a rotation ``R`` so that swapping the first ``k``
rotated coordinates of a base run's activation for those of a source run (an interchange
intervention) makes the model output what the causal model outputs under the interchange on
its variable. Boundless DAS (Wu et al. 2023) learns ``k`` too, with a soft mask over rows.

- :class:`Interchange` / :func:`interchange`: the intervention, usable as any jinterp hook
  (``run_with_hooks``, ``jinterp.At``) on any port's point, at chosen positions and heads.
- :class:`Rotation`, :func:`init_rotation`, :class:`Parametrisation`: exactly orthogonal
  learned bases (``expm`` of a skew matrix, or QR for wide activations).
- :func:`train_das` with :class:`DASConfig` (plain or ``boundless=True``), returning
  :class:`DASResult`; :func:`iia` (interchange-intervention accuracy), :func:`random_basis`.
- :mod:`jinterp.das.tasks` (two equalities as a causal model) and :mod:`jinterp.das.toy`
  (a toy MLP port, trained in-process or hand-built with a planted variable) for validation;
  ``python -m jinterp.experiments.das`` draws IIA against the subspace size.
"""

from jinterp.das.evaluate import iia, random_basis
from jinterp.das.intervention import Interchange, interchange
from jinterp.das.rotation import Parametrisation, Rotation, init_rotation, random_orthogonal
from jinterp.das.train import DASConfig, DASResult, soft_mask, train_das

__all__ = [
    "DASConfig", "DASResult", "Interchange", "Parametrisation", "Rotation", "iia",
    "init_rotation", "interchange", "random_basis", "random_orthogonal", "soft_mask",
    "train_das",
]
