"""Micro-benchmark: sparse vs dense TopK decode, and a full TopK loss step, forward + backward.

Prints one JSON object. Default size: d_in 768, d_sae 12288, batch 4096, k 32 (GPT-2-small
scale). Measured:

* ``decode``: ``sum_j v[b, j] W_dec[i[b, j]]`` fwd + grad w.r.t. (values, W_dec) — jinterp's
  `sparse_decode` (gather / segment-sum VJP) vs scatter-to-dense + matmul (the obvious JAX
  version) vs PyTorch dense ``acts @ W_dec`` (SAELens' default TopK decode path).
* ``topk_step``: value_and_grad of a whole TopK SAE loss (encoder matmul + top-k + decode +
  MSE) — `jinterp.sae.loss` (sparse VJPs) vs the dense autodiff version — and the cost of the
  encoder matmul alone, the floor the fast path aims for; plus the same step with the AuxK
  term active (half the latents dead, k_aux = 512: the helpers switch to their dense path).
* ``switch_loss_step``: a Switch SAE (8 experts) step, exact path vs capacity dispatch (1.25).

Timings: median of ``--repeats`` after one warm-up call; compile time reported separately.
Run: ``.venv/bin/python benchmarks/bench_topk_decode.py [--batch 4096 ...]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import jax
import jax.numpy as jnp

from jinterp import sae
from jinterp.sae import topk


def timed(fn, *args, repeats: int):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"median_s": med, "compile_plus_first_s": first, "compile_s_est": max(first - med, 0.0)}


def bench_decode(batch, d, d_sae, k, repeats):
    key = jax.random.key(0)
    vals = jax.random.normal(key, (batch, k))
    idx = jax.random.randint(jax.random.key(1), (batch, k), 0, d_sae)
    w = jax.random.normal(jax.random.key(2), (d_sae, d)) / d**0.5
    cot = jax.random.normal(jax.random.key(3), (batch, d))

    def make(fn):
        objective = lambda v, w: jnp.sum(fn(v, idx, w) * cot)
        return jax.jit(jax.value_and_grad(objective, argnums=(0, 1)))

    out = {"sparse": timed(make(topk.sparse_decode), vals, w, repeats=repeats),
           "dense": timed(make(topk.dense_decode), vals, w, repeats=repeats)}
    out["torch_dense"] = bench_torch_decode(batch, d, d_sae, k, repeats)
    out["speedup_sparse_vs_dense"] = out["dense"]["median_s"] / out["sparse"]["median_s"]
    if out["torch_dense"] is not None:
        out["speedup_sparse_vs_torch_dense"] = (out["torch_dense"]["median_s"]
                                                 / out["sparse"]["median_s"])
    return out


def bench_torch_decode(batch, d, d_sae, k, repeats):
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    w = torch.randn(d_sae, d, requires_grad=True)
    acts = torch.zeros(batch, d_sae)
    acts.scatter_(1, torch.randint(0, d_sae, (batch, k)), torch.randn(batch, k))
    acts.requires_grad_(True)
    cot = torch.randn(batch, d)

    def step():
        w.grad = acts.grad = None
        (acts @ w * cot).sum().backward()

    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "threads": torch.get_num_threads()}


def bench_step(batch, d, d_sae, k, repeats):
    cfg = sae.SAEConfig("topk", d_in=d, d_sae=d_sae, k=k)
    params = sae.init(cfg, jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (batch, d))

    def dense_loss(p):
        pre = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
        v, i = jax.lax.top_k(pre, k)
        x_hat = topk.dense_decode(jax.nn.relu(v), i, p["W_dec"]) + p["b_dec"]
        return jnp.mean(jnp.sum((x - x_hat) ** 2, -1))

    fast = jax.jit(jax.value_and_grad(lambda p: sae.loss(cfg, p, x)[0]))
    dense = jax.jit(jax.value_and_grad(dense_loss))
    enc_only = jax.jit(lambda p: jax.lax.top_k(x @ p["W_enc"] + p["b_enc"], k))
    ctx = sae.LossContext(dead_mask=jnp.arange(d_sae) % 2 == 0)  # half the latents "dead"
    with_aux = jax.jit(jax.value_and_grad(lambda p: sae.loss(cfg, p, x, ctx=ctx)[0]))
    out = {"sparse": timed(fast, params, repeats=repeats),
           "dense": timed(dense, params, repeats=repeats),
           "sparse_with_auxk_512": timed(with_aux, params, repeats=repeats),
           "encoder_matmul_plus_topk_only": timed(enc_only, params, repeats=repeats)}
    out["speedup_sparse_vs_dense"] = out["dense"]["median_s"] / out["sparse"]["median_s"]
    out["sparse_over_encoder_only"] = (out["sparse"]["median_s"]
                                       / out["encoder_matmul_plus_topk_only"]["median_s"])
    return out


def bench_switch(batch, d, d_sae, k, repeats, n_experts=8, capacity=1.25):
    """Switch SAE loss step: exact (all experts' pre-activations) vs capacity dispatch."""
    x = jax.random.normal(jax.random.key(1), (batch, d))
    out = {"n_experts": n_experts, "capacity_factor": capacity}
    for name, cf in (("exact", None), ("dispatch", capacity)):
        cfg = sae.SAEConfig("switch", d_in=d, d_sae=d_sae, k=k, n_experts=n_experts,
                            switch_capacity_factor=cf)
        params = sae.init(cfg, jax.random.key(0))
        step = jax.jit(jax.value_and_grad(lambda p, cfg=cfg: sae.loss(cfg, p, x)[0]))
        out[name] = timed(step, params, repeats=repeats)
    out["speedup_dispatch_vs_exact"] = out["exact"]["median_s"] / out["dispatch"]["median_s"]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--d-in", type=int, default=768)
    ap.add_argument("--d-sae", type=int, default=12288)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sections", default="decode,step,switch",
                    help="comma-separated subset of decode,step,switch")
    args = ap.parse_args()
    sections = {"decode_fwd_bwd": ("decode", bench_decode), "topk_loss_step": ("step", bench_step),
                "switch_loss_step": ("switch", bench_switch)}
    result = {
        "benchmark": "topk_decode",
        "device": str(jax.devices()[0]),
        "shape": {"batch": args.batch, "d_in": args.d_in, "d_sae": args.d_sae, "k": args.k},
    }
    for key, (flag, fn) in sections.items():
        if flag in args.sections.split(","):
            result[key] = fn(args.batch, args.d_in, args.d_sae, args.k, args.repeats)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
