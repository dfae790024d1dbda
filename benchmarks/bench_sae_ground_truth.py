"""Ground-truth check: SAEs of every architecture recover a planted dictionary.

Unit feature directions in superposition, sparse non-negative coefficients with power-law
firing frequencies (:mod:`jinterp.sae.synthetic`); every architecture trains with jinterp's
training loop (one compiled sweep per step count, :func:`jinterp.sae.ground_truth.solve`) and
is scored by the fraction of true features whose best decoder row has cosine >= 0.9 (target:
>= 0.9 for each). Problems (:data:`jinterp.sae.ground_truth.PROBLEMS`):

* ``full`` (default): 1024 features in 256 dimensions, 8 active, d_sae 4096, 4000 steps.
* ``small``: 128 in 32, 2 active, d_sae 512; relu/topk/switch 1500 steps, the others 6000
  (the unit test until 2026-11, ~6 minutes).
* ``test``: 64 in 32, 1 active, d_sae 256, 800 steps (``tests/sae/test_ground_truth.py``).

Prints one JSON object. Usage:
``python benchmarks/bench_sae_ground_truth.py [--problem full|small|test] [--steps N]
[--only relu,topk] [--seed 0] [--no-progress]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource

from jinterp.sae.ground_truth import ARCHITECTURES, PROBLEMS, configs, solve


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problem", choices=sorted(PROBLEMS), default="full")
    p.add_argument("--steps", type=int, default=None,
                   help="one step count for every architecture (default: the problem's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=None, help="comma-separated architectures (default: all)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args()
    problem = PROBLEMS[args.problem]
    only = tuple(args.only.split(",")) if args.only else ARCHITECTURES
    results, seconds = solve(problem, seed=args.seed, only=only, steps=args.steps,
                             progress=not args.no_progress)
    cfgs = configs(problem)
    out = {
        "problem": args.problem,
        "data": dataclasses.asdict(problem.data),
        "train": {"d_sae": problem.d_sae, "batch": problem.batch_size, "seed": args.seed,
                  "seconds_all_architectures": seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024},
        "threshold_cosine": 0.9,
        "target_recovery": 0.9,
        "architectures": {
            n: {"recovery": r.recovery, "mean_max_cosine": r.mean_max_cosine, "l0": r.l0,
                "fvu": r.fvu, "passes": r.recovery >= 0.9,
                "steps": problem.steps[n] if args.steps is None else args.steps,
                "lr": problem.lr[n], "config": _config_summary(cfgs[n])}
            for n, r in results.items()},
    }
    print(json.dumps(out))


def _config_summary(cfg) -> dict:
    """The config fields that differ from the architecture's defaults (JSON-ready)."""
    default = type(cfg)(cfg.architecture.value, d_in=cfg.d_in, d_sae=cfg.d_sae, k=cfg.k,
                        n_experts=cfg.n_experts)
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
            if getattr(cfg, f.name) != getattr(default, f.name)
            and isinstance(getattr(cfg, f.name), (int, float, tuple))}


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    main()
