"""``--part dimensionality|correlated|computation|basis``: one paper section per command.

Each part trains its grid (checkpointed under ``OUT/checkpoints``, so a rerun resumes), writes
its PNGs and ``OUT/summary.json`` with the paper's claim next to the measured numbers.
``fast=True`` shrinks every part to a seconds-long smoke run (used by the tests).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import time

import numpy as np

from . import part_plots
from .basis import BasisStudy, run_basis
from .computation import ComputationStudy, run_computation
from .correlated import CorrelatedStudy, run_correlated
from .dimensionality import DimensionalityStudy, run_dimensionality
from .geometry import line_fractions
from .training import TrainConfig

PARTS = ("dimensionality", "correlated", "computation", "basis")

PAPER = {
    "dimensionality": {
        "lines": {"3/4": "tetrahedron", "2/3": "triangle", "1/2": "antipodal pair",
                  "2/5": "pentagon", "3/8": "square antiprism"},
        "line_fractions": "not published (the figure shows all five lines populated)",
        "setup": "n=400, m=30, I=1 (notebook: n=200, m=20, 20 sparsities, 10k steps)",
    },
    "correlated": {
        "correlated": "prefer orthogonal (separate tegum factors)",
        "anticorrelated": "prefer negative interference, ideally antipodal",
        "collapse": "sparse: hexagon, partners side by side; dense: collapse to principal "
                    "components",
        "match_fraction": "not published",
    },
    "computation": {
        "setup": "n=100, m=40, I=0.8^i, x in U[-1,1], y=|x|",
        "claim": "dense: each neuron one feature; sparse: more features computed than m/2 "
                 "(superposition), asymmetric superposition + inhibition motif",
    },
    "basis": {
        "setup": "n=10, m=5, I=0.75^i, lowest loss of 1000 fits per sparsity",
        "claim": "features align with neurons; monosemantic neurons when dense, shifting to "
                 "polysemantic as sparsity grows",
    },
}

_TINY = TrainConfig(steps=200, batch_size=64, steps_per_call=100, learning_rate=1e-2)
# the base suite's --fast uniform study trains a [4, 4, 12] grid with this config: the fast
# dimensionality part uses the same shapes, so the two share one compiled training chunk
_TINY_UNIFORM = TrainConfig(steps=300, batch_size=128, steps_per_call=100, learning_rate=1e-2)


def part_config(part: str, fast: bool = False, size: str = "notebook", seed: int = 0):
    """The study config of one part, trained with ``seed`` (``size``: dimensionality only)."""
    study = _part_config(part, fast, size)
    return dataclasses.replace(study, train=dataclasses.replace(study.train, seed=seed))


def _part_config(part: str, fast: bool, size: str):
    if part == "dimensionality":
        if fast:
            return DimensionalityStudy(n_features=12, n_hidden=4, n_sparsities=2, n_restarts=2,
                                       eval_batch=1024, eval_repeats=1,
                                       train=_TINY_UNIFORM)
        make = DimensionalityStudy.paper if size == "paper" else DimensionalityStudy.notebook
        return make()
    if part == "correlated":
        if fast:
            return CorrelatedStudy(density=(0.3, 0.05), n_restarts=2, eval_batch=1024, train=_TINY)
        return CorrelatedStudy()
    if part == "computation":
        if fast:
            return ComputationStudy(n_features=6, n_hidden=4, density=(1.0, 0.1), n_restarts=1,
                                    eval_batch=1024, train=_TINY)
        return ComputationStudy()
    if part == "basis":
        if fast:
            return BasisStudy(density=(1.0, 0.1), n_restarts=2, n_control_restarts=1,
                              eval_batch=1024, train=_TINY)
        return BasisStudy()
    raise ValueError(f"unknown part {part!r}; choose one of {PARTS}")


def _lists(x):
    if isinstance(x, dict):
        return {str(k): _lists(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_lists(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    return x


def _dimensionality(study, out, progress, label):
    res = run_dimensionality(study, out, progress)
    figs = {
        "dimensionality": part_plots.plot_dimensionality(
            res, os.path.join(out, "dimensionality.png"), label),
        "peak_gram_blocks": part_plots.plot_peak_gram_blocks(
            res, os.path.join(out, "dimensionality_peaks.png"), res["dimensionality_peaks"]),
    }
    inv = res["inv_density"]
    rep = res["represented"]
    d = res["feature_dimensionality"]
    types = iter(res["factor_type"])  # (rank, size) per represented feature, sparsity-major
    per_sparsity = []
    for s in range(len(inv)):
        counts = collections.Counter(next(types) for _ in range(int(rep[s].sum())))
        per_sparsity.append({
            "inv_density": float(inv[s]), "dims_per_feature": float(res["dims_per_feature"][s]),
            "represented": int(rep[s].sum()),
            "median_D": float(np.median(d[s][rep[s]])) if rep[s].any() else None,
            # most common tegum factors: [rank, size, features in such factors]
            "factor_types": [[r, k, c] for (r, k), c in counts.most_common(3)],
            "line_fractions": line_fractions(d[s][rep[s]], tol=study.line_tol),
        })
    keys = ("line_fractions", "lines_held", "represented_features", "dimensionality_peaks",
            "peak_geometry")
    return {**{k: res[k] for k in keys}, "per_sparsity": per_sparsity, "figures": figs}


def _correlated(study, out, progress):
    res = run_correlated(study, out, progress)
    summary = {name: {k: res[name][k] for k in ("prediction", "match_fraction", "matches",
                                                 "pair_angles_deg")}
               for name in res if name != "density"}
    summary["density"] = res["density"]
    summary["figures"] = {"correlated": part_plots.plot_correlated(
        res, os.path.join(out, "correlated.png"))}
    return summary


def _computation(study, out, progress):
    res = run_computation(study, out, progress)
    keys = ("density", "n_computed", "n_both_signs", "no_superposition_max", "n_neurons",
            "n_sides", "n_features_both_sides", "n_superposed_neurons", "superposed_neurons",
            "superposition", "monosemantic", "polysemantic", "dead")
    summary = {k: res[k] for k in keys}
    summary["asymmetric_neurons"] = [len(a) for a in res["asymmetric"]]
    summary["asymmetric_examples"] = [a[:3] for a in res["asymmetric"]]
    counts = {k: res[k] for k in ("monosemantic", "polysemantic")}
    summary["figures"] = {
        "neurons": part_plots.plot_neuron_stacks(res["W1"], res["density"],
                                                 os.path.join(out, "computation_neurons.png"),
                                                 "W1 (normalised)", counts),
        "computed": part_plots.plot_computed(res, os.path.join(out, "computation_computed.png")),
    }
    return summary


def _basis(study, out, progress):
    res = run_basis(study, out, progress)
    summary = {"density": res["density"], "relu": res["relu"],
               "linear_control": res["linear_control"]}
    summary["figures"] = {
        "summary": part_plots.plot_basis_summary(res, os.path.join(out, "basis.png")),
        "neurons": part_plots.plot_neuron_stacks(res["W"], res["density"],
                                                 os.path.join(out, "basis_neurons.png"), "W",
                                                 res["relu"]),
    }
    return summary


def run_part(part: str, out_dir: str, *, fast: bool = False, size: str = "notebook",
             seed: int = 0, progress: bool = True) -> dict:
    """Runs one part, writes its figures and ``summary.json`` into ``out_dir``; returns it."""
    return run_study(part, part_config(part, fast, size, seed), out_dir, progress=progress)


def run_study(part: str, study, out_dir: str, *, progress: bool = True) -> dict:
    """Like :func:`run_part` with an explicit study config (e.g. fewer restarts or steps)."""
    seed = study.train.seed
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.perf_counter()
    if part == "dimensionality":
        label = f"n={study.n_features}, m={study.n_hidden}, seed {seed}"
        ours = _dimensionality(study, out_dir, progress, label)
    elif part == "correlated":
        ours = _correlated(study, out_dir, progress)
    elif part == "computation":
        ours = _computation(study, out_dir, progress)
    else:
        ours = _basis(study, out_dir, progress)
    summary = {"part": part, "paper": PAPER[part], "ours": _lists(ours),
               "config": json.loads(json.dumps(dataclasses.asdict(study), default=list)),
               "runtime_s": round(time.perf_counter() - t0, 1)}
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary
