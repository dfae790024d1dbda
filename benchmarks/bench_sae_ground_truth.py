"""Full-size ground-truth check: SAEs of every architecture recover a planted dictionary.

1024 unit feature directions in 256 dimensions, sparse non-negative coefficients with
power-law firing frequencies (:mod:`jinterp.sae.synthetic`); every architecture trains with
jinterp's training loop (all of them in one compiled sweep, :mod:`jinterp.sae.ground_truth`)
and is scored by the fraction of true features whose best decoder row has cosine >= 0.9
(target: >= 0.9 for each). Prints one JSON object. ``--fast`` runs the small test size.

Usage: ``python benchmarks/bench_sae_ground_truth.py [--steps 4000] [--fast]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource

from jinterp.sae import synthetic
from jinterp.sae.config import SAEConfig
from jinterp.sae.ground_truth import recover_features


def configs(d: int, d_sae: int, k: int, dead_tokens: int) -> dict[str, SAEConfig]:
    """The recipes of ``tests/sae/test_ground_truth.py`` (see its docstring for each choice)."""
    return {
        "relu": SAEConfig("relu", d_in=d, d_sae=d_sae, l1_coefficient=1.0),
        "topk": SAEConfig("topk", d_in=d, d_sae=d_sae, k=k, dead_after_tokens=dead_tokens),
        "batchtopk": SAEConfig("batchtopk", d_in=d, d_sae=d_sae, k=k, dead_after_tokens=dead_tokens,
                               aux_k_coefficient=1.0),
        "jumprelu": SAEConfig("jumprelu", d_in=d, d_sae=d_sae, l0_coefficient=1.0,
                              jumprelu_bandwidth=0.05, jumprelu_init_threshold=0.05,
                              dead_after_tokens=dead_tokens, pre_act_loss_coefficient=0.1),
        "gated": SAEConfig("gated", d_in=d, d_sae=d_sae, l1_coefficient=3.0,
                           dead_after_tokens=dead_tokens, pre_act_loss_coefficient=1.0),
        "matryoshka": SAEConfig("matryoshka", d_in=d, d_sae=d_sae, k=k,
                                dead_after_tokens=dead_tokens, aux_k_coefficient=1.0,
                                matryoshka_prefixes=(d_sae // 2,)),
        # Expert width d_sae / n_experts >= n_features: a token can hold any feature, so each
        # expert must be able to hold them all (8 experts of 512 for 1024 features: 0.75).
        "switch": SAEConfig("switch", d_in=d, d_sae=d_sae, k=k, n_experts=4),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-features", type=int, default=1024)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--d-sae", type=int, default=4096)
    p.add_argument("--mean-active", type=int, default=8)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=None, help="comma-separated architectures (default: all)")
    p.add_argument("--fast", action="store_true", help="the unit-test size (128 in 32 dims, 2 active)")
    args = p.parse_args()
    if args.fast:
        args.n_features, args.d, args.d_sae, args.mean_active = 128, 32, 512, 2
        args.steps, args.lr = 1500, 1e-2
    data = synthetic.SyntheticConfig(n_features=args.n_features, d=args.d,
                                     mean_active=args.mean_active)
    cfgs = configs(args.d, args.d_sae, args.mean_active, dead_tokens=20 * args.batch)
    if args.only:
        cfgs = {n: cfgs[n] for n in args.only.split(",")}
    results, seconds = recover_features(cfgs, data, steps=args.steps, batch_size=args.batch,
                                        lr=args.lr, seed=args.seed, progress=True)
    out = {
        "data": {"n_features": args.n_features, "d": args.d, "mean_active": args.mean_active,
                 "power_law_exponent": data.power_law_exponent},
        "train": {"d_sae": args.d_sae, "steps": args.steps, "batch": args.batch, "lr": args.lr,
                  "seed": args.seed, "seconds_all_architectures": seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024},
        "threshold_cosine": 0.9,
        "target_recovery": 0.9,
        "architectures": {n: {"recovery": r.recovery, "mean_max_cosine": r.mean_max_cosine,
                              "l0": r.l0, "fvu": r.fvu, "passes": r.recovery >= 0.9}
                          for n, r in results.items()},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    main()
