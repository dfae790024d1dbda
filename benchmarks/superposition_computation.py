"""Computation in superposition judged over three seeds fixed in advance (1, 2, 3).

Runs ``--part computation`` once per seed (checkpointed, so an interrupted run resumes; ~20 min
per seed on a 2-core machine) and prints one JSON object: per seed and density the computed
sides (:mod:`jinterp.experiments.superposition.sides`), the features with both signs, the
neurons carrying computed sides of two features, and the median and range over the seeds.

The criteria were written down before the first judged run: at each of the two sparsest
densities (1 - S = 0.03 and 0.01) the model computes in superposition when it computes more
sides than it has neurons (m = 40; the direct test) and, the stricter reading, more features
with both signs (full-distribution relative error < 0.1) than m/2 = 20.

    nice -n 19 .venv/bin/python benchmarks/superposition_computation.py
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from jinterp.experiments.superposition.parts import part_config, run_study

SEEDS = (1, 2, 3)  # fixed before any judged run; seed 0 makes the README's figures
JUDGED_DENSITIES = (0.03, 0.01)
KEYS = ("n_sides", "n_both_signs", "n_computed", "n_superposed_neurons", "polysemantic")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="runs/superposition")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    args = parser.parse_args()
    per_seed = {}
    for seed in args.seeds:
        study = part_config("computation", seed=seed)
        summary = run_study("computation", study, os.path.join(args.out, f"computation_seed{seed}"))
        ours = summary["ours"]
        row = {k: dict(zip(ours["density"], ours[k])) for k in KEYS}
        row["asymmetric_neurons"] = dict(zip(ours["density"], ours["asymmetric_neurons"]))
        row["runtime_s"] = summary["runtime_s"]
        per_seed[seed] = row
    m = summary["ours"]["n_neurons"]
    stats, passed = {}, {}
    for p in JUDGED_DENSITIES:
        sides = [per_seed[s]["n_sides"][p] for s in args.seeds]
        both = [per_seed[s]["n_both_signs"][p] for s in args.seeds]
        stats[p] = {k: {"median": float(np.median([per_seed[s][k][p] for s in args.seeds])),
                        "range": [min(per_seed[s][k][p] for s in args.seeds),
                                  max(per_seed[s][k][p] for s in args.seeds)]}
                    for k in KEYS}
        passed[p] = {"sides_gt_m": bool(np.median(sides) > m),
                     "both_signs_gt_m_half": bool(np.median(both) > m // 2)}
    print(json.dumps({"seeds": list(args.seeds), "n_neurons": m,
                      "config": summary["config"], "per_seed": per_seed,
                      "judged": stats, "passed_median": passed}))


if __name__ == "__main__":
    main()
