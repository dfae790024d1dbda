"""Locating the phase change in a loss curve.

Rule (documented so the number means something): smooth the per-step loss on the predictable
targets with a trailing moving average of ``window`` steps; take the *plateau* level as the
median of the smoothed curve over the first ``plateau_frac`` of training and the *final* level
as its last value. Unless the final level is below ``max_final_frac`` (default half) of the
plateau there is no phase change (``None``): the one-layer control does lower its loss on
repeated tokens by about a nat, gradually, by raising every token already in the context
(in-context unigram copying), but only an induction circuit takes it far below. Otherwise the
phase change step is the first step at which the smoothed loss crosses the midpoint between the
two levels; the drop starts where it first falls 10% of the way and ends where it is 90% of the
way down (its width is the "sharpness" reported next to the step).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from jaxtyping import Float


@dataclasses.dataclass(frozen=True)
class PhaseChange:
    """Where the loss dropped (steps are 1-based counts of optimizer steps taken)."""

    step: int
    start: int
    end: int
    plateau: float
    final: float

    @property
    def width(self) -> int:
        return self.end - self.start


def smooth(x: Float[np.ndarray, " step"], window: int) -> Float[np.ndarray, " step"]:
    """Trailing moving average (shorter windows at the start, so no lag is invented there)."""
    x = np.asarray(x, np.float64)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}.")
    csum = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(idx - window, 0)
    return (csum[idx] - csum[lo]) / (idx - lo)


def _first_below(curve: np.ndarray, level: float) -> int:
    below = np.nonzero(curve < level)[0]
    return int(below[0]) + 1  # step count after which the loss is below the level


def find_phase_change(loss: Float[np.ndarray, " step"], window: int = 50, plateau_frac: float = 0.1,
                      max_final_frac: float = 0.5) -> PhaseChange | None:
    """The phase change of ``loss`` (one value per step) by the rule in the module docstring."""
    loss = np.asarray(loss, np.float64)
    if loss.ndim != 1 or len(loss) < 2:
        raise ValueError(
            f"loss must be a 1-D per-step curve with >= 2 steps; got shape {loss.shape}.")
    curve = smooth(loss, window)
    plateau = float(np.median(curve[: max(1, int(plateau_frac * len(curve)))]))
    final = float(curve[-1])
    if final > max_final_frac * plateau:
        return None
    level = lambda frac: plateau - frac * (plateau - final)
    return PhaseChange(step=_first_below(curve, level(0.5)), start=_first_below(curve, level(0.1)),
                       end=_first_below(curve, level(0.9)), plateau=plateau, final=final)
