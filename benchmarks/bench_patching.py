"""Activation-patching sweeps: jinterp's compiled sweeps vs TransformerLens, same run.

Prints one JSON object. Random weights, CPU, batch 8 x 16 tokens, metric: the logit difference
of two tokens at the last position (``jinterp.metrics.logit_diff``; TransformerLens gets the
same function of its logits). Cases:

- ``gpt2_resid_pre``: GPT-2-small shape (12 layers, d_model 768, vocab 50257),
  ``get_act_patch_resid_pre``: 12 x 16 = 192 patched forwards;
- ``gpt2_4L_head_out_by_pos``: the same widths with 4 layers,
  ``get_act_patch_attn_head_out_by_pos``: 4 x 16 x 12 = 768 patched forwards;
- ``llama_resid_pre`` / ``llama_k_all_pos``: a Llama-shaped grouped-query model (12 layers,
  d_model 768, 12 query / 4 kv heads, gated MLP 2048, RoPE, RMSNorm, vocab 32000); k patching
  patches kv heads (``[layer, n_kv_heads]``).

jinterp: the first call (compile + run, persistent compilation cache off; ``compile_s_estimate``
is the first call minus the median), the median of ``--repeats`` further calls, the process's
peak RSS, and a Python loop
of single ``run_with_hooks`` patches (``At(layer, Patch(...))``: one program) with a host sync
each, as a user would write it, timed
over ``--loop-patches`` patches spread over the layers and scaled to the whole sweep.
TransformerLens (``--tl-python``: a Python with transformer_lens) runs in its own process on
weights of the same shapes: each sweep once (they take minutes), gradients off, with its
peak RSS. The machine is shared: the load average is recorded before and after each side.

Usage: python benchmarks/bench_patching.py [--repeats 2] [--loop-patches 8]
       [--tl-python /tmp/tlvenv/bin/python] [--chunk-size 48] [--no-llama]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ["JINTERP_COMPILATION_CACHE"] = "0"  # compile times are measured, not cached
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import jinterp  # noqa: E402
from benchmarks.common import machine, process_peak_rss_mb, time_calls  # noqa: E402
from jinterp import metrics, models, patching  # noqa: E402

ANSWER, WRONG = 262, 318
BATCH, POS = 8, 16
LLAMA = dict(n_layers=12, d_model=768, n_heads=12, n_kv_heads=4, d_head=64, d_mlp=2048,
             d_vocab=32000)


def _models() -> dict:
    gpt2 = models.GPT2Config.preset("gpt2")
    return {
        "gpt2": models.GPT2(gpt2),
        "gpt2_4L": models.GPT2(models.GPT2Config(**{**gpt2.__dict__, "n_layers": 4})),
        "llama": models.Llama(models.LlamaConfig(**LLAMA)),
    }


def _loop(model, params, corrupted, cache, site, metric, n_patches: int) -> dict:
    """Single-patch ``run_with_hooks`` calls with a host sync each, over the sweep's nodes."""
    n_pos = corrupted.shape[1]
    n_nodes = site.n_nodes(model, n_pos)
    total = model.n_layers * n_nodes
    picks = np.linspace(0, total - 1, n_patches).astype(int)
    sel = {"pos": "pos", "n_heads": "head", "n_kv_heads": "head"}

    def one(flat):
        layer, node = divmod(int(flat), n_nodes)
        coords = np.unravel_index(node, site.node_shape(model, n_pos))
        kw = {sel[a]: int(c) for a, c in zip(site.node_axes, coords)}
        hooks = {site.point: jinterp.At(layer, jinterp.Patch(cache[site.hook_name(layer)], **kw))}
        return float(metric(jinterp.run_with_hooks(model, params, corrupted, hooks)))

    one(0)  # the layer is data under At: one program for every patch, compiled here
    start = time.perf_counter()
    for flat in tqdm(picks, desc=f"jinterp loop {site.name}", leave=False):
        one(flat)
    per = (time.perf_counter() - start) / n_patches
    return {"patches_timed": n_patches, "per_patch_s": per, "sweep_estimate_s": per * total}


def _jinterp_case(args, model, site) -> dict:
    params = model.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    clean = jnp.asarray(rng.integers(0, model.d_vocab, (BATCH, POS)))
    corrupted = jnp.asarray(rng.integers(0, model.d_vocab, (BATCH, POS)))
    _, cache = jinterp.run_with_cache(model, params, clean,
                                      names=lambda n: n.endswith(site.point))
    metric = metrics.logit_diff(ANSWER, WRONG)

    def sweep():
        return patching.act_patch(model, params, corrupted, cache, metric, site,
                                  chunk_size=args.chunk_size)

    start = time.perf_counter()
    shape = jax.block_until_ready(sweep()).shape
    first = time.perf_counter() - start
    timing = time_calls(sweep, repeats=args.repeats, warmup=0)
    entry = {"patches": model.n_layers * site.n_nodes(model, POS), "first_call_s": first,
             "compile_s_estimate": first - timing["median_s"], **timing,
             "result_shape": list(shape), "peak_rss_mb_so_far": process_peak_rss_mb()}
    if args.loop_patches and site.name != "attn_head_k_all_pos":
        entry["python_loop"] = _loop(model, params, corrupted, cache, site, metric,
                                     args.loop_patches)
        entry["speedup_vs_loop"] = entry["python_loop"]["sweep_estimate_s"] / entry["median_s"]
    return entry


def bench_jinterp(args) -> dict:
    out = {"load_before": os.getloadavg()[0]}
    cases = [("gpt2_resid_pre", "gpt2", "resid_pre"),
             ("gpt2_4L_head_out_by_pos", "gpt2_4L", "attn_head_out_by_pos")]
    if not args.no_llama:
        cases += [("llama_resid_pre", "llama", "resid_pre"),
                  ("llama_k_all_pos", "llama", "attn_head_k_all_pos")]
    built = _models()
    for label, model_name, site_name in tqdm(cases, desc="jinterp"):
        out[label] = _jinterp_case(args, built[model_name], patching.get_site(site_name))
        print(f"{label}: {out[label]['median_s']:.2f} s (first call "
              f"{out[label]['first_call_s']:.1f} s)", file=sys.stderr)
    out["peak_rss_mb"] = process_peak_rss_mb()
    out["load_after"] = os.getloadavg()[0]
    return out


_TL_SCRIPT = r"""
import json, os, resource, sys, time
import torch
import transformer_lens.patching as P
from transformer_lens import HookedTransformer, HookedTransformerConfig
torch.set_grad_enabled(False)
ANSWER, WRONG, BATCH, POS = 262, 318, 8, 16
cases = json.loads(sys.argv[1])
gpt2 = dict(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257,
            n_ctx=1024, act_fn="gelu_new", normalization_type="LN")
llama = dict(n_layers=12, d_model=768, n_heads=12, n_key_value_heads=4, d_head=64, d_mlp=2048,
             d_vocab=32000, n_ctx=1024, act_fn="silu", normalization_type="RMS",
             positional_embedding_type="rotary", gated_mlp=True, final_rms=True)
configs = {"gpt2": gpt2, "gpt2_4L": {**gpt2, "n_layers": 4}, "llama": llama}
metric = lambda logits: (logits[:, -1, ANSWER] - logits[:, -1, WRONG]).mean()
out = {"load_before": os.getloadavg()[0], "torch": torch.__version__,
       "threads": torch.get_num_threads()}
for label, model_name, fn in cases:
    model = HookedTransformer(HookedTransformerConfig(**configs[model_name], seed=0))
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, model.cfg.d_vocab, (BATCH, POS), generator=g)
    corrupted = torch.randint(0, model.cfg.d_vocab, (BATCH, POS), generator=g)
    _, cache = model.run_with_cache(clean)
    start = time.perf_counter()
    try:
        result = getattr(P, fn)(model, corrupted, cache, metric)
        out[label] = {"seconds": time.perf_counter() - start, "result_shape": list(result.shape)}
    except Exception as err:  # TransformerLens's k/v patching on GQA models (its issue #980)
        out[label] = {"error": f"{type(err).__name__}: {str(err)[:300]}",
                      "seconds_until_error": time.perf_counter() - start}
    print(label, out[label], file=sys.stderr)
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out["load_after"] = os.getloadavg()[0]
print(json.dumps(out))
"""


def bench_tl(python: str, no_llama: bool) -> dict:
    cases = [("gpt2_resid_pre", "gpt2", "get_act_patch_resid_pre"),
             ("gpt2_4L_head_out_by_pos", "gpt2_4L", "get_act_patch_attn_head_out_by_pos")]
    if not no_llama:
        cases += [("llama_resid_pre", "llama", "get_act_patch_resid_pre"),
                  ("llama_k_all_pos", "llama", "get_act_patch_attn_head_k_all_pos")]
    proc = subprocess.run([python, "-c", _TL_SCRIPT, json.dumps(cases)], capture_output=True,
                          text=True, timeout=7200)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--loop-patches", type=int, default=8)
    parser.add_argument("--chunk-size", type=int, default=48)
    parser.add_argument("--tl-python", default=None)
    parser.add_argument("--no-llama", action="store_true")
    args = parser.parse_args()
    result = {"machine": machine(), "batch": BATCH, "pos": POS, "chunk_size": args.chunk_size,
              "jinterp": bench_jinterp(args)}
    if args.tl_python:
        result["transformer_lens"] = tl = bench_tl(args.tl_python, args.no_llama)
        result["speedup_vs_tl"] = {
            k: tl[k]["seconds"] / v["median_s"] for k, v in result["jinterp"].items()
            if isinstance(v, dict) and isinstance(tl.get(k), dict) and "seconds" in tl[k]}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
