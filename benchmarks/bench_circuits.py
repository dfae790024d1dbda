"""Circuit discovery on the trained 2-layer attention-only induction model: ACDC and edge masks.

Trains the induction study's model (``StudyConfig.full()``: 2500 AdamW steps, seed 0; reuses
``--ckpt`` if it holds the run), then on ``r r`` prompts (``repeated_tokens``, half length 24)
against corrupted prompts of fresh random tokens (no repetition) finds a circuit with

- :func:`jinterp.patching.acdc` at each ``--thresholds`` value, and
- :func:`jinterp.patching.learn_edge_mask` (hard concrete, ``--sparsity``, ``--steps``),

both on ``KL(clean || circuit)`` at the positions an induction head predicts (the second copy
but its last token). Prints one JSON object: the previous-token and induction heads by their
attention scores, and per method the kept edges, faithfulness (``1 - KL(circuit) /
KL(corrupted)``, recomputed with :func:`jinterp.patching.faithfulness`), whether the
previous-token head -> induction head K-composition edges and the induction head -> final
edges are kept, and the wall time (compile included).

Usage: python benchmarks/bench_circuits.py [--ckpt DIR] [--thresholds 0.02 0.05 0.1]
       [--sparsity 5] [--steps 300] [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jinterp.experiments.induction import StudyConfig, repeated_tokens, run_training
from jinterp.experiments.induction.scores import attention_scores
from jinterp.patching import Node, acdc, faithfulness, kl_to_clean, learn_edge_mask


def _summary(circuit, f, seconds, prev, ind, extra) -> dict:
    edges = set(circuit.edges())
    k_edges = [f"a0.{p} -> a1.{h}<k" for p in prev for h in ind
               if (Node.head(0, p), Node.k(1, h)) in edges]
    final = [f"a1.{h} -> final" for h in ind if (Node.head(1, h), Node.final()) in edges]
    return {"n_edges": circuit.n_edges, "n_total": circuit.n_total,
            "faithfulness": round(float(f), 4), "seconds": round(seconds, 1),
            "prev_to_induction_k": k_edges, "induction_to_final": final,
            "edges": [f"{u} -> {d}" for u, d in circuit.edges()], **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", default=None, help="orbax checkpoint dir of the training run")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.02, 0.05, 0.1])
    parser.add_argument("--sparsity", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    cfg = StudyConfig.full()
    start = time.perf_counter()
    state = run_training(cfg.train, ckpt_dir=args.ckpt and os.path.abspath(args.ckpt))
    train_s = time.perf_counter() - start
    model, params = cfg.train.model(), state["params"]
    half = cfg.probe_half_len
    clean = repeated_tokens(jax.random.key(1), model.d_vocab, half, args.batch)
    corrupt = jax.random.randint(jax.random.key(2), clean.shape, 0, model.d_vocab)
    scores = attention_scores(model, params, clean, half)
    prev = [int(h) for h in np.flatnonzero(np.asarray(scores["previous_token"][0]) > 0.4)]
    ind = [int(h) for h in np.flatnonzero(np.asarray(scores["induction"][1]) > 0.4)]
    metric = kl_to_clean(model(params, clean), np.arange(half, 2 * half - 1))
    out = {"model": "2-layer attn-only, d_model 48, 4 heads (StudyConfig.full, seed 0)",
           "train_s": round(train_s, 1), "prompts": f"{args.batch} x r r, half {half}",
           "kl_corrupted": round(float(metric(model(params, corrupt))), 4),
           "previous_token_heads": {f"a0.{h}": round(float(scores["previous_token"][0, h]), 3)
                                    for h in prev},
           "induction_heads": {f"a1.{h}": round(float(scores["induction"][1, h]), 3)
                               for h in ind},
           "acdc": {}, "backend": jax.default_backend()}
    for threshold in args.thresholds:
        t = time.perf_counter()
        circuit, log = acdc(model, params, clean, corrupt, metric, threshold)
        seconds = time.perf_counter() - t
        f = faithfulness(model, params, circuit, clean, corrupt, metric)
        out["acdc"][str(threshold)] = _summary(circuit, f, seconds, prev, ind,
                                               {"n_forward": log.n_forward})
    t = time.perf_counter()
    circuit, log = learn_edge_mask(model, params, clean, corrupt, metric, sparsity=args.sparsity,
                                   steps=args.steps, lr=args.lr, key=jax.random.key(0))
    seconds = time.perf_counter() - t
    f = faithfulness(model, params, circuit, clean, corrupt, metric)
    out["edge_mask"] = _summary(circuit, f, seconds, prev, ind, {
        "sparsity": args.sparsity, "steps": args.steps,
        "final_loss": round(float(jnp.mean(log.loss[-20:])), 4)})
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
