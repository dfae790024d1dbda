"""Two equalities as a causal model, and its counterfactual data.

Input ``(a, b, c, d)``, four symbols from ``0 .. n_values - 1``; the causal model computes two
intermediate booleans, ``V1 = (a == b)`` and ``V2 = (c == d)``, and reads them out:

- ``Readout.SAME``: ``y = (V1 == V2)``, two classes: the hierarchical equality task of Geiger
  et al. (2023, section 3);
- ``Readout.BOTH``: ``y = 2 V1 + V2``, four classes: both booleans.

An interchange intervention on ``V1`` runs the causal model on a *base* input with ``V1`` set to
its value on a *source* input: the counterfactual label is the readout of ``(V1(source),
V2(base))``. DAS trains a rotation so that the neural model under the matching interchange on a
subspace predicts that label; the fraction it gets right is the interchange-intervention
accuracy (IIA).

Which readout a trained toy MLP (:mod:`jinterp.das.toy`, one-hot symbols) represents with a
linear V1 is an empirical matter, measured in ``docs/das.md``: with ``BOTH`` it does (IIA 1.0
from one rotated dimension); with ``SAME`` a 2-block MLP reaches 100% accuracy through a
distributed lookup in which V1 is not linearly decodable after block 0 (a linear probe: 74%)
and DAS finds no subspace (IIA about 1/2 for ``n_dims`` up to 8 of 16). The hand-built model
of :func:`jinterp.das.toy.planted_params` realises either readout's variables exactly.

Sampling is balanced: ``V1`` and ``V2`` of every base and source are fair coins (uniform
tuples would make ``a == b`` rare), so the counterfactual label differs from the base label
for half the pairs and an intervention that changes nothing scores an IIA of 1/2: chance.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools

import numpy as np
from jaxtyping import Bool, Int

VARIABLES = ("V1", "V2")


class Readout(enum.Enum):
    """How the causal model's output reads the two booleans."""

    SAME = "same"  # y = (V1 == V2), 2 classes (hierarchical equality)
    BOTH = "both"  # y = 2 V1 + V2, 4 classes

    @property
    def n_classes(self) -> int:
        return 2 if self is Readout.SAME else 4


def readout(v1: Bool[np.ndarray, " batch"], v2: Bool[np.ndarray, " batch"],
            kind: Readout | str = Readout.SAME) -> Int[np.ndarray, " batch"]:
    """The causal model's output from its two variables."""
    if Readout(kind) is Readout.SAME:
        return (v1 == v2).astype(np.int32)
    return (2 * v1.astype(np.int32) + v2.astype(np.int32)).astype(np.int32)


def causal_model(values: Int[np.ndarray, "batch 4"], kind: Readout | str = Readout.SAME
                 ) -> tuple[Bool[np.ndarray, " batch"], Bool[np.ndarray, " batch"],
                            Int[np.ndarray, " batch"]]:
    """``(V1, V2, y)`` of each input ``(a, b, c, d)``."""
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[1] != 4:
        raise ValueError(f"inputs must have shape [batch, 4] (a, b, c, d); got {values.shape}.")
    v1 = values[:, 0] == values[:, 1]
    v2 = values[:, 2] == values[:, 3]
    return v1, v2, readout(v1, v2, kind)


def all_inputs(n_values: int) -> Int[np.ndarray, "n 4"]:
    """Every input tuple, in lexicographic order."""
    return np.array(list(itertools.product(range(n_values), repeat=4)), np.int32)


def _pair(rng: np.random.Generator, equal: np.ndarray, n_values: int) -> np.ndarray:
    """Two symbols per row, equal where ``equal`` and different elsewhere."""
    first = rng.integers(0, n_values, equal.shape[0])
    other = (first + rng.integers(1, n_values, equal.shape[0])) % n_values
    return np.stack([first, np.where(equal, first, other)], axis=1)


def sample_inputs(rng: np.random.Generator, n: int, n_values: int) -> Int[np.ndarray, "n 4"]:
    """``n`` inputs whose ``V1`` and ``V2`` are independent fair coins."""
    if n_values < 2:
        raise ValueError(f"n_values must be at least 2 (so a != b exists), got {n_values}.")
    v1, v2 = rng.random(n) < 0.5, rng.random(n) < 0.5
    return np.concatenate([_pair(rng, v1, n_values), _pair(rng, v2, n_values)],
                          axis=1).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class Counterfactuals:
    """Base and source inputs and the causal model's labels under an interchange.

    Attributes:
        base / source: input tuples ``[n, 4]``.
        base_label: the causal model's output on the base (what a null intervention gives).
        label: the counterfactual label: the output with ``variable`` set to the source's.
        variable: ``"V1"`` or ``"V2"``.
    """

    base: Int[np.ndarray, "n 4"]
    source: Int[np.ndarray, "n 4"]
    base_label: Int[np.ndarray, " n"]
    label: Int[np.ndarray, " n"]
    variable: str


def interchange_data(rng: np.random.Generator, n: int, n_values: int, variable: str = "V1",
                     kind: Readout | str = Readout.SAME) -> Counterfactuals:
    """``n`` random (base, source) pairs and their counterfactual labels for ``variable``."""
    if variable not in VARIABLES:
        raise ValueError(f"variable must be one of {VARIABLES}, got {variable!r}.")
    base, source = sample_inputs(rng, n, n_values), sample_inputs(rng, n, n_values)
    b1, b2, base_label = causal_model(base, kind)
    s1, s2, _ = causal_model(source, kind)
    v1, v2 = (s1, b2) if variable == "V1" else (b1, s2)
    return Counterfactuals(base, source, base_label, readout(v1, v2, kind), variable)
