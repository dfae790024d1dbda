"""Activation and attribution patching: jinterp vs TransformerLens, same run, own processes.

Prints one JSON object. Random weights, CPU, batch 8 x 16 tokens, metric: the logit difference
of two tokens at the last position, mean over the batch (``jinterp.metrics.logit_diff``;
TransformerLens gets the same function of its logits). Cases:

- ``gpt2_resid_pre``: GPT-2-small shape (12 layers, d_model 768, vocab 50257),
  ``get_act_patch_resid_pre``: 12 x 16 = 192 patched forwards;
- ``gpt2_4L_head_out_by_pos``: the same widths with 4 layers,
  ``get_act_patch_attn_head_out_by_pos``: 4 x 16 x 12 = 768 patched forwards;
- ``gpt2_atp_resid_pre``: attribution patching (AtP) of every ``resid_pre`` node,
  ``get_attr_patch_resid_pre(method="atp")`` vs TransformerLens's hook-based AtP as its
  attribution-patching notebook writes it (a forward with hooks caching the activations and
  backward hooks caching their gradients, then ``(clean - corrupted) * grad`` summed over
  d_model and the batch); the clean cache is given to both;
- ``llama_*``: the same on a Llama-shaped grouped-query model (12 layers, d_model 768, 12 query
  / 4 kv heads, gated MLP 2048, RoPE, RMSNorm, vocab 32000); ``llama_k_all_pos`` patches kv
  heads (``[layer, n_kv_heads]``; TransformerLens's k patching fails on such models).

jinterp: the first call (compile + run, persistent compilation cache off; ``compile_s_estimate``
is the first call minus the median), the median of ``--repeats`` further calls (wall and this
process's CPU seconds), the process's peak RSS, and a Python loop of single
``run_with_hooks`` patches (``At(layer, Patch(...))``: one program) with a host sync each, as a
user would write it, timed over ``--loop-patches`` patches spread over the layers and scaled to
the whole sweep. ``--grid`` adds the resid_pre sweep against that loop at more (batch, pos)
sizes. TransformerLens (``--tl-python``: a Python with transformer_lens) runs in its own process
on weights of the same shapes: each case once after one warm-up forward (the sweeps take
minutes), with wall and CPU seconds and its peak RSS. The machine is shared: the load average
is recorded before and after each case.

Usage: python benchmarks/bench_patching.py [--repeats 2] [--loop-patches 8] [--grid]
       [--tl-python /path/bin/python] [--chunk-size 48] [--suffix-buckets 4] [--no-llama]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
from benchmarks.common import machine, process_peak_rss_mb  # noqa: E402
from jinterp import metrics, models, patching  # noqa: E402

ANSWER, WRONG = 262, 318
BATCH, POS = 8, 16
LLAMA = dict(n_layers=12, d_model=768, n_heads=12, n_kv_heads=4, d_head=64, d_mlp=2048,
             d_vocab=32000)
GRID = ((1, 4), (1, 16), (8, 4))  # (batch, pos) beside the main (8, 16)


def _models() -> dict:
    gpt2 = models.GPT2Config.preset("gpt2")
    return {
        "gpt2": models.GPT2(gpt2),
        "gpt2_4L": models.GPT2(models.GPT2Config(**{**gpt2.__dict__, "n_layers": 4})),
        "llama": models.Llama(models.LlamaConfig(**LLAMA)),
    }


def _cases(no_llama: bool) -> list[tuple[str, str, str]]:
    """``(label, model, what)``: a site name, or ``atp`` for AtP of every resid_pre node."""
    cases = [("gpt2_resid_pre", "gpt2", "resid_pre"),
             ("gpt2_4L_head_out_by_pos", "gpt2_4L", "attn_head_out_by_pos"),
             ("gpt2_atp_resid_pre", "gpt2", "atp")]
    if not no_llama:
        cases += [("llama_resid_pre", "llama", "resid_pre"),
                  ("llama_k_all_pos", "llama", "attn_head_k_all_pos"),
                  ("llama_atp_resid_pre", "llama", "atp")]
    return cases


def _timed(fn, repeats: int) -> dict:
    """First call (compile + run) and the median of ``repeats`` more, wall and CPU seconds."""
    start, cpu = time.perf_counter(), time.process_time()
    shape = jax.block_until_ready(fn()).shape
    first, first_cpu = time.perf_counter() - start, time.process_time() - cpu
    walls, cpus = [], []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn())
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    median = statistics.median(walls)
    return {"first_call_s": first, "compile_s_estimate": first - median, "median_s": median,
            "min_s": min(walls), "median_cpu_s": statistics.median(cpus),
            "first_call_cpu_s": first_cpu, "repeats": repeats, "result_shape": list(shape)}


def _inputs(model, batch: int, pos: int, point: str):
    params = model.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    clean = jnp.asarray(rng.integers(0, model.d_vocab, (batch, pos)))
    corrupted = jnp.asarray(rng.integers(0, model.d_vocab, (batch, pos)))
    _, cache = jinterp.run_with_cache(model, params, clean, names=lambda n: n.endswith(point))
    return params, corrupted, cache


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


def _sweep_entry(args, model, site, batch: int = BATCH, pos: int = POS, loop: bool = True):
    params, corrupted, cache = _inputs(model, batch, pos, site.point)
    metric = metrics.logit_diff(ANSWER, WRONG)

    def sweep():
        return patching.act_patch(model, params, corrupted, cache, metric, site,
                                  chunk_size=args.chunk_size, suffix_buckets=args.suffix_buckets)

    entry = {"patches": model.n_layers * site.n_nodes(model, pos), "batch": batch, "pos": pos,
             "load_before": os.getloadavg()[0], **_timed(sweep, args.repeats)}
    if loop and args.loop_patches and site.name != "attn_head_k_all_pos":
        entry["python_loop"] = _loop(model, params, corrupted, cache, site, metric,
                                     args.loop_patches)
        entry["speedup_vs_loop"] = entry["python_loop"]["sweep_estimate_s"] / entry["median_s"]
    entry["load_after"] = os.getloadavg()[0]
    entry["peak_rss_mb_so_far"] = process_peak_rss_mb()
    return entry


def _atp_entry(args, model) -> dict:
    params, corrupted, cache = _inputs(model, BATCH, POS, "hook_resid_pre")
    metric = metrics.logit_diff(ANSWER, WRONG)

    def atp():
        return patching.get_attr_patch_resid_pre(model, params, corrupted, cache, metric,
                                                 method="atp")

    entry = {"load_before": os.getloadavg()[0], **_timed(atp, max(args.repeats, 3))}
    entry["load_after"] = os.getloadavg()[0]
    entry["peak_rss_mb_so_far"] = process_peak_rss_mb()
    return entry


def bench_jinterp(args) -> dict:
    out = {"load_before": os.getloadavg()[0]}
    built = _models()
    for label, model_name, what in tqdm(_cases(args.no_llama), desc="jinterp"):
        model = built[model_name]
        out[label] = (_atp_entry(args, model) if what == "atp" else
                      _sweep_entry(args, model, patching.get_site(what)))
        print(f"{label}: {out[label]['median_s']:.2f} s (first call "
              f"{out[label]['first_call_s']:.1f} s)", file=sys.stderr)
    if args.grid:
        site = patching.get_site("resid_pre")
        out["grid_resid_pre"] = [_sweep_entry(args, built["gpt2"], site, b, p)
                                 for b, p in GRID]
    out["peak_rss_mb"] = process_peak_rss_mb()
    out["load_after"] = os.getloadavg()[0]
    return out


_TL_SCRIPT = r"""
import json, os, resource, sys, time
import torch
import transformer_lens.patching as P
from transformer_lens import HookedTransformer, HookedTransformerConfig
ANSWER, WRONG, BATCH, POS = 262, 318, 8, 16
cases = json.loads(sys.argv[1])
gpt2 = dict(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257,
            n_ctx=1024, act_fn="gelu_new", normalization_type="LN")
llama = dict(n_layers=12, d_model=768, n_heads=12, n_key_value_heads=4, d_head=64, d_mlp=2048,
             d_vocab=32000, n_ctx=1024, act_fn="silu", normalization_type="RMS",
             positional_embedding_type="rotary", gated_mlp=True, final_rms=True)
configs = {"gpt2": gpt2, "gpt2_4L": {**gpt2, "n_layers": 4}, "llama": llama}
metric = lambda logits: (logits[:, -1, ANSWER] - logits[:, -1, WRONG]).mean()


def atp(model, corrupted, clean_cache):
    # The attribution-patching notebook's get_cache_fwd_and_bwd, on the resid_pre hooks only.
    is_resid_pre = lambda name: name.endswith("hook_resid_pre")
    cache, grads = {}, {}
    def forward_hook(act, hook):
        cache[hook.name] = act.detach()
    def backward_hook(grad, hook):
        grads[hook.name] = grad.detach()
    model.reset_hooks()
    model.add_hook(is_resid_pre, forward_hook, "fwd")
    model.add_hook(is_resid_pre, backward_hook, "bwd")
    value = metric(model(corrupted))
    value.backward()
    model.reset_hooks()
    names = [f"blocks.{l}.hook_resid_pre" for l in range(model.cfg.n_layers)]
    delta = torch.stack([clean_cache[n] - cache[n] for n in names])
    grad = torch.stack([grads[n] for n in names])
    return value.item() + (delta * grad).sum(dim=(1, 3))  # [layer, pos]


out = {"load_before": os.getloadavg()[0], "torch": torch.__version__,
       "threads": torch.get_num_threads()}
for label, model_name, fn in cases:
    model = HookedTransformer(HookedTransformerConfig(**configs[model_name], seed=0))
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, model.cfg.d_vocab, (BATCH, POS), generator=g)
    corrupted = torch.randint(0, model.cfg.d_vocab, (BATCH, POS), generator=g)
    with torch.no_grad():
        _, cache = model.run_with_cache(clean)
        model(corrupted)  # warm-up
    entry = {"load_before": os.getloadavg()[0]}
    start, cpu = time.perf_counter(), time.process_time()
    try:
        if fn == "atp":
            atp(model, corrupted, cache)  # warm-up of the backward
            start, cpu = time.perf_counter(), time.process_time()
            result = atp(model, corrupted, cache)
        else:
            with torch.no_grad():
                result = getattr(P, fn)(model, corrupted, cache, metric)
        entry.update(seconds=time.perf_counter() - start, cpu_s=time.process_time() - cpu,
                     result_shape=list(result.shape))
    except Exception as err:  # TransformerLens's k/v patching on GQA models (its issue #980)
        entry.update(error=f"{type(err).__name__}: {str(err)[:300]}",
                     seconds_until_error=time.perf_counter() - start)
    entry["load_after"] = os.getloadavg()[0]
    out[label] = entry
    print(label, entry, file=sys.stderr)
# VmHWM: its own peak (ru_maxrss survives exec: it would report the parent's)
status = open("/proc/self/status").read().split("VmHWM:")[1]
out["peak_rss_mb"] = int(status.split()[0]) / 1024
out["load_after"] = os.getloadavg()[0]
print(json.dumps(out))
"""

_TL_FUNCTIONS = {"resid_pre": "get_act_patch_resid_pre",
                 "attn_head_out_by_pos": "get_act_patch_attn_head_out_by_pos",
                 "attn_head_k_all_pos": "get_act_patch_attn_head_k_all_pos", "atp": "atp"}


def bench_tl(python: str, no_llama: bool) -> dict:
    cases = [(label, model, _TL_FUNCTIONS[what]) for label, model, what in _cases(no_llama)]
    proc = subprocess.run([python, "-c", _TL_SCRIPT, json.dumps(cases)], capture_output=True,
                          text=True, timeout=10800)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--loop-patches", type=int, default=8)
    parser.add_argument("--chunk-size", type=int, default=48)
    parser.add_argument("--suffix-buckets", type=int, default=4,
                        help="suffix lengths compiled per layer; 0: recompute every position")
    parser.add_argument("--grid", action="store_true",
                        help=f"also the resid_pre sweep vs the loop at (batch, pos) in {GRID}")
    parser.add_argument("--tl-python", default=None)
    parser.add_argument("--no-llama", action="store_true")
    args = parser.parse_args()
    args.suffix_buckets = args.suffix_buckets or None
    result = {"machine": machine(), "batch": BATCH, "pos": POS, "chunk_size": args.chunk_size,
              "suffix_buckets": args.suffix_buckets, "jinterp": bench_jinterp(args)}
    if args.tl_python:
        result["transformer_lens"] = tl = bench_tl(args.tl_python, args.no_llama)
        result["speedup_vs_tl"] = {
            k: tl[k]["seconds"] / v["median_s"] for k, v in result["jinterp"].items()
            if isinstance(v, dict) and isinstance(tl.get(k), dict) and "seconds" in tl[k]}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
