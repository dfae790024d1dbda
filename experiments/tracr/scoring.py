"""Scoring a method against a ground truth: ROC (as in ACDC, Conmy et al. 2023) and AUC in numpy."""

from __future__ import annotations

import numpy as np
from jaxtyping import Bool, Float


def roc_curve(scores: Float[np.ndarray, " n"], labels: Bool[np.ndarray, " n"]
              ) -> tuple[Float[np.ndarray, " k"], Float[np.ndarray, " k"]]:
    """``(fpr, tpr)`` sweeping a threshold over ``scores`` from high to low (ties together)."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the end of each run of ties
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    fpr = np.r_[0.0, fp / max(1, (~y).sum())]
    tpr = np.r_[0.0, tp / max(1, y.sum())]
    return fpr, tpr


def _area(fpr: np.ndarray, tpr: np.ndarray) -> float:
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def roc_auc(scores: Float[np.ndarray, " n"], labels: Bool[np.ndarray, " n"]) -> float | None:
    """Area under :func:`roc_curve` (trapezoids: ties count half); None without both classes."""
    labels = np.asarray(labels, bool)
    if labels.all() or not labels.any():
        return None
    return _area(*roc_curve(scores, labels))


def points_roc(selections: list[Bool[np.ndarray, " n"]], labels: Bool[np.ndarray, " n"]
               ) -> tuple[np.ndarray, np.ndarray, float | None]:
    """ROC of a family of binary selections (ACDC at several thresholds) and its area.

    Each selection is one ``(fpr, tpr)`` point; the curve joins them in order of ``fpr`` (then
    ``tpr``) from ``(0, 0)`` to ``(1, 1)``, as the ACDC paper draws its threshold sweeps.
    """
    labels = np.asarray(labels, bool)
    pts = [(0.0, 0.0), (1.0, 1.0)]
    for sel in selections:
        sel = np.asarray(sel, bool)
        pts.append(((sel & ~labels).sum() / max(1, (~labels).sum()),
                    (sel & labels).sum() / max(1, labels.sum())))
    pts.sort()
    fpr, tpr = np.array([p[0] for p in pts]), np.maximum.accumulate([p[1] for p in pts])
    auc = None if labels.all() or not labels.any() else _area(fpr, tpr)
    return fpr, tpr, auc


def precision_recall(found: Bool[np.ndarray, " n"], labels: Bool[np.ndarray, " n"]
                     ) -> tuple[float | None, float]:
    """Precision (None when nothing is found) and recall of a binary selection."""
    found, labels = np.asarray(found, bool), np.asarray(labels, bool)
    tp = int((found & labels).sum())
    precision = tp / found.sum() if found.any() else None
    return precision, tp / max(1, labels.sum())
