"""Command line: ``python -m jinterp.experiments.superposition [--out DIR] [--fast] [--only ...]``.

Runs the pentagon, the n = 2 phase diagram and the uniform-superposition study, writes one PNG per
figure and ``summary.json`` into ``--out``. ``--part dimensionality|correlated|computation|basis``
runs one of the later sections of the paper instead (see :mod:`.parts`; default output
``runs/superposition/<part>``). Checkpoints live in ``DIR/checkpoints/<study>``;
rerunning with the same ``--out`` resumes each study from its newest checkpoint (a finished study
is just reloaded and re-analysed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import numpy as np

from jinterp import distributed

from . import plots
from .parts import PARTS, run_part
from .studies import (
    PentagonStudy,
    PhaseStudy,
    UniformStudy,
    run_pentagon,
    run_phase_diagram,
    run_uniform,
)
from .training import TrainConfig

STUDIES = ("pentagon", "phase", "uniform")
ANALYTIC_STEPS = 3000  # Adam steps for the analytic superposition optimum (cheap: 4 params)

PAPER = {
    "pentagon_angles_deg": [72.0] * 5,
    "pentagon_dimensionalities": [0.4] * 5,
    "phase_diagram": "trained and analytic diagrams agree (qualitative, no number published)",
    "dims_per_feature": "sticky at 1 (dense) and 1/2 (antipodal pairs) over a range of 1/(1-S)",
    "dimensionality_lines": [1.0, 0.75, 2 / 3, 0.5, 0.4, 0.375],
}


@dataclasses.dataclass(frozen=True)
class Suite:
    """Sizes of all three studies; ``full()`` reproduces the paper, ``fast()`` is for tests."""

    pentagon: PentagonStudy
    phase: PhaseStudy
    uniform: UniformStudy

    @classmethod
    def full(cls) -> "Suite":
        return cls(
            pentagon=PentagonStudy(train=TrainConfig(steps=10_000, batch_size=1024)),
            phase=PhaseStudy(train=TrainConfig(steps=5_000, batch_size=256)),
            uniform=UniformStudy(train=TrainConfig(steps=10_000, batch_size=256)),
        )

    @classmethod
    def fast(cls) -> "Suite":
        tiny = TrainConfig(steps=300, batch_size=128, steps_per_call=100, learning_rate=1e-2)
        return cls(
            pentagon=PentagonStudy(n_seeds=2, eval_batch=4096, train=tiny),
            phase=PhaseStudy(n_importance=3, n_density=3, n_seeds=2, train=tiny),
            uniform=UniformStudy(n_features=12, n_hidden=4, n_sparsities=4, train=tiny),
        )


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


def run_suite(suite: Suite, out_dir: str, only=STUDIES, progress: bool = True,
              analytic_steps: int = ANALYTIC_STEPS) -> dict:
    """Runs the chosen studies, writes figures and ``summary.json``, returns the summary."""
    os.makedirs(out_dir, exist_ok=True)
    summary: dict = {"paper": PAPER, "figures": {}, "runtime_s": {}}
    if "pentagon" in only:
        t0 = time.perf_counter()
        res = run_pentagon(suite.pentagon, out_dir, progress)
        summary["pentagon_angles_deg"] = _jsonable(res["angles_deg"])
        summary["pentagon_dimensionalities"] = _jsonable(res["dimensionalities"])
        summary["pentagon_norms"] = _jsonable(res["norms"])
        summary["pentagon_bias"] = _jsonable(res["b"])
        summary["pentagon_seed_losses"] = _jsonable(res["seed_losses"])
        summary["figures"]["pentagon"] = plots.plot_pentagon(
            res, os.path.join(out_dir, "pentagon.png"))
        summary["runtime_s"]["pentagon"] = round(time.perf_counter() - t0, 1)
    if "phase" in only:
        t0 = time.perf_counter()
        res = run_phase_diagram(suite.phase, out_dir, progress, analytic_steps=analytic_steps)
        summary["phase_diagram_agreement"] = res["agreement"]
        summary["phase_diagram"] = {
            "relative_importance": _jsonable(res["relative_importance"]),
            "density": _jsonable(res["density"]),
            "trained_phase": _jsonable(res["trained_phase"]),
            "analytic_phase": _jsonable(res["analytic_phase"]),
            "codes": {"0": "not learned", "1": "dedicated", "2": "superposition", "3": "other"},
        }
        summary["figures"]["phase_diagram"] = plots.plot_phase_diagram(
            res, os.path.join(out_dir, "phase_diagram.png"))
        summary["runtime_s"]["phase"] = round(time.perf_counter() - t0, 1)
    if "uniform" in only:
        t0 = time.perf_counter()
        res = run_uniform(suite.uniform, out_dir, progress)
        summary["dims_per_feature"] = [
            [float(x), float(y)] for x, y in zip(res["inv_density"], res["dims_per_feature"])
        ]
        summary["dimensionality_peaks"] = res["dimensionality_peaks"]
        summary["dimensionality_line_fractions"] = res["line_fractions"]
        summary["represented_features"] = int(res["represented"].sum())
        summary["figures"]["dims_per_feature"] = plots.plot_dims_per_feature(
            res, os.path.join(out_dir, "dims_per_feature.png"))
        summary["figures"]["feature_dimensionality"] = plots.plot_feature_dimensionality(
            res, os.path.join(out_dir, "feature_dimensionality.png"))
        summary["runtime_s"]["uniform"] = round(time.perf_counter() - t0, 1)
    summary["config"] = json.loads(json.dumps(dataclasses.asdict(suite), default=list))
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jinterp.experiments.superposition",
        description="Reproduce Toy Models of Superposition (Elhage et al. 2022): the pentagon, "
        "the n=2, m=1 phase diagram, dimensions per feature and feature dimensionality. "
        "Rerunning with the same --out resumes from the checkpoints there.",
    )
    parser.add_argument("--out", default=None, help="output directory (figures, summary.json, "
                        "checkpoints); default runs/superposition[/<part>]")
    parser.add_argument("--part", choices=PARTS, default=None,
                        help="run one later section of the paper instead of the base suite")
    parser.add_argument("--size", choices=("notebook", "paper"), default="notebook",
                        help="--part dimensionality: the notebook's n=200, m=20 or the paper's "
                        "n=400, m=30")
    parser.add_argument("--seed", type=int, default=0, help="--part: training seed")
    parser.add_argument("--fast", action="store_true", help="tiny sizes for tests (seconds)")
    parser.add_argument("--only", nargs="+", choices=STUDIES, default=list(STUDIES),
                        help="run a subset of the studies")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    distributed.add_arguments(parser)
    return parser


def _main_part(args) -> dict:
    out = args.out or os.path.join("runs", "superposition", args.part)
    t0 = time.perf_counter()
    summary = run_part(args.part, out, fast=args.fast, size=args.size, seed=args.seed,
                       progress=not args.no_progress)
    ours = summary["ours"]
    for key in ("line_fractions", "lines_held", "dimensionality_peaks", "n_computed",
                "n_both_signs", "aligned_fraction"):
        if key in ours:
            print(f"{key}: {ours[key]}")
    for key in ("correlated", "anticorrelated", "collapse", "relu", "linear_control"):
        if key in ours:
            value = ours[key]
            brief = {k: value[k] for k in ("match_fraction", "aligned_fraction", "monosemantic",
                                           "polysemantic") if k in value}
            print(f"{key}: {brief}")
    print(f"total {time.perf_counter() - t0:.1f}s; wrote {os.path.join(out, 'summary.json')}")
    return summary


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    distributed.single_process(distributed.initialize_from_args(args),
                               "python -m jinterp.experiments.superposition")
    if args.part is not None:
        return _main_part(args)
    args.out = args.out or os.path.join("runs", "superposition")
    suite = Suite.fast() if args.fast else Suite.full()
    t0 = time.perf_counter()
    summary = run_suite(suite, args.out, only=tuple(args.only), progress=not args.no_progress)
    keys = ("pentagon_angles_deg", "pentagon_dimensionalities", "phase_diagram_agreement",
            "dimensionality_peaks")
    for key in keys:
        if key in summary:
            value = summary[key]
            if isinstance(value, list):
                value = [round(v, 3) for v in value]
            print(f"{key}: {value}")
    print(f"total {time.perf_counter() - t0:.1f}s; wrote {os.path.join(args.out, 'summary.json')}")
    return summary
