"""What probe to fit: a frozen config shared by every (layer, position) of one fit."""

from __future__ import annotations

import dataclasses
import enum

from jinterp.probes.optimize import Method


class ProbeKind(str, enum.Enum):
    """``logistic``: classification (softmax; one sigmoid logit for two classes), optax.
    ``linear``: least-squares regression with an L2 penalty, optax.
    ``ridge``: the same objective as ``linear``, solved in closed form."""

    LOGISTIC = "logistic"
    LINEAR = "linear"
    RIDGE = "ridge"


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """A probe fitted at every (layer, position) at once.

    Attributes:
        kind: see :class:`ProbeKind`.
        l2: penalty ``l2 / 2 * |W|^2`` added to the *mean* loss over training examples (the
            bias is not penalised). scikit-learn's ``C`` is ``l2 = 1 / (C * n_train)``.
        k: fit on the ``k`` features with the largest class-mean difference only (k-sparse
            probing, Gurnee et al. 2023; logistic, two classes). ``None``: all features.
        steps: optimizer steps (``logistic`` / ``linear``).
        method: ``lbfgs`` (default) or ``adam``; ``lr`` is Adam's step size.
        standardize: z-score each feature with training statistics before fitting (the
            returned weights are folded back to raw activations).
    """

    kind: ProbeKind | str = ProbeKind.LOGISTIC
    l2: float = 1e-3
    k: int | None = None
    steps: int = 100
    method: Method | str = Method.LBFGS
    lr: float = 1e-2
    standardize: bool = True

    def __post_init__(self):
        for field, enum_type in (("kind", ProbeKind), ("method", Method)):
            value = getattr(self, field)
            try:
                object.__setattr__(self, field, enum_type(value))
            except ValueError:
                raise ValueError(f"{field}={value!r} is not one of "
                                 f"{[e.value for e in enum_type]}.") from None
        if self.l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {self.l2}.")
        if self.kind is ProbeKind.RIDGE and self.l2 == 0:
            raise ValueError("ridge needs l2 > 0 (its normal equations are singular otherwise).")
        if self.steps <= 0:
            raise ValueError(f"steps must be positive, got {self.steps}.")
        if self.k is not None and (self.k <= 0 or self.kind is not ProbeKind.LOGISTIC):
            raise ValueError("k (k-sparse probing) needs a positive k and kind='logistic'.")
