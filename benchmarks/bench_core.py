"""Core v2 on a GPT-2-small-shaped model: what the layer loop costs and what it saves.

Prints one JSON object. Random weights (12 layers, d_model 768, vocab 50257), batch 8 x 128
tokens, CPU. Each case goes through the public API and is timed as the median of repeats
after a warm-up call; compile time (lower + compile of the same program, persistent cache
off) and XLA's memory account of the program (arguments + outputs + temporaries) are reported
apart. Cases and the issue's targets (time over the plain forward):

- ``plain_forward``: ``model(params, tokens)``;
- ``cache_everything``: ``run_with_cache`` of every default name (target <= 1.15x);
- ``cache_one_name``: one residual (its extra memory should be one activation);
- ``stop_at_layer_6``: six blocks, no unembedding (target <= 0.42x; six blocks are 34% of the
  forward's matmul work);
- ``start_at_layer_6``: from the cached ``blocks.6.hook_resid_pre`` (target <= 0.72x; six
  blocks plus the unembedding are 66%);
- ``grad_cache_everything``: value, cache and gradients of every default name (target <= 3.5x);
- ``at_sweep``: a 12-layer x 16-position activation-patching sweep (clean ``hook_resid_pre``
  into a corrupted run, a logit difference) as one program (``lax.map`` over the 192 patches,
  ``--sweep-chunk`` of them vmapped at a time), against a Python loop of the same 192
  ``run_with_hooks`` calls.

References, each in its own process: HuggingFace's PyTorch GPT-2 (plain, and with
``output_hidden_states`` + ``output_attentions``) unless ``--no-torch``, and TransformerLens
(plain, ``run_with_cache`` of everything and of one name, ``stop_at_layer=6``) when
``--tl-python`` names a Python that has transformer_lens.

Usage: python benchmarks/bench_core.py [--repeats 5] [--batch 8] [--pos 128]
       [--sweep-positions 16] [--sweep-chunk 4] [--no-torch] [--no-loop] [--tl-python PY]
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

import jinterp  # noqa: E402
from benchmarks.common import machine, process_peak_rss_mb, time_calls, xla_memory  # noqa: E402
from jinterp import At, Patch, grad, models, run  # noqa: E402

ONE_NAME = "blocks.6.hook_resid_post"
ANSWER, WRONG = 262, 318


def logit_diff(logits):
    return (logits[:, -1, ANSWER] - logits[:, -1, WRONG]).mean()


def _compiled(lower_fn) -> tuple[float, dict]:
    start = time.perf_counter()
    compiled = lower_fn().compile()
    return time.perf_counter() - start, xla_memory(compiled)


def _case(fn, lower_fn, repeats: int) -> dict:
    seconds, memory = _compiled(lower_fn)
    # Two warm-up calls: the first compiles, the second still grows the heap (page faults).
    return {"compile_s": seconds, **time_calls(fn, repeats=repeats, warmup=2), "memory": memory}


def bench_jinterp(args) -> dict:
    model = models.GPT2(models.GPT2Config.preset("gpt2"))
    params = model.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, model.d_vocab, (args.batch, args.pos)))
    corrupt = jnp.asarray(rng.integers(0, model.d_vocab, (args.batch, args.pos)))
    _, cache6 = jinterp.run_with_cache(model, params, tokens, names="blocks.6.hook_resid_pre")
    resid6 = cache6["blocks.6.hook_resid_pre"]
    lo = run.lower
    cases = {
        "plain_forward": (lambda: model(params, tokens), lambda: lo(model, params, tokens)),
        "cache_everything": (lambda: jinterp.run_with_cache(model, params, tokens),
                             lambda: lo(model, params, tokens, None)),
        "cache_one_name": (lambda: jinterp.run_with_cache(model, params, tokens, ONE_NAME),
                           lambda: lo(model, params, tokens, ONE_NAME)),
        "stop_at_layer_6": (lambda: model(params, tokens, stop_at_layer=6),
                            lambda: lo(model, params, tokens, stop_at_layer=6)),
        "start_at_layer_6": (lambda: model(params, resid6, start_at_layer=6),
                             lambda: lo(model, params, resid6, start_at_layer=6)),
        "grad_cache_everything": (
            lambda: jinterp.grad_cache(model, params, tokens, logit_diff),
            lambda: grad.lower(model, params, tokens, logit_diff)),
    }
    out = {}
    for name, (fn, lower_fn) in cases.items():
        out[name] = _case(fn, lower_fn, args.repeats)
        print(f"{name}: {out[name]['median_s']:.3f} s", file=sys.stderr)
    out["at_sweep"] = _sweep(model, params, tokens, corrupt, args)
    return out


def _sweep(model, params, clean, corrupt, args) -> dict:
    """12 layers x ``sweep_positions`` positions of clean resid_pre patched into ``corrupt``."""
    _, cache = jinterp.run_with_cache(model, params, clean, lambda n: n.endswith("resid_pre"))
    stacked = cache.stack("hook_resid_pre")  # layer batch pos d_model
    positions = jnp.asarray(np.linspace(0, args.pos - 1, args.sweep_positions).astype(np.int32))
    layers = jnp.arange(model.n_layers)

    def effect(params, stacked, layer, pos):
        hooks = {"hook_resid_pre": At(layer, Patch(stacked, pos=pos))}
        return logit_diff(jinterp.run_with_hooks(model, params, corrupt, hooks))

    grid_l, grid_p = (a.ravel() for a in jnp.meshgrid(layers, positions, indexing="ij"))

    def sweep(params, stacked):  # one program: lax.map over (layer, pos), vmapped in chunks
        cell = lambda lp: effect(params, stacked, lp[0], lp[1])
        out = jax.lax.map(cell, (grid_l, grid_p), batch_size=args.sweep_chunk)
        return out.reshape(layers.size, positions.size)

    jitted = jax.jit(sweep)
    compile_s, memory = _compiled(lambda: jitted.lower(params, stacked))
    timing = time_calls(lambda: jitted(params, stacked), repeats=1)
    result = np.asarray(jitted(params, stacked))
    entry = {"layers": model.n_layers, "positions": int(positions.size), "batch": args.batch,
             "vmap_chunk": args.sweep_chunk,
             "compile_s": compile_s, "memory": memory, "one_program": timing}
    if args.no_loop:
        return entry

    def one(l, p):
        name = f"blocks.{l}.hook_resid_pre"
        hooks = {name: Patch(cache[name], pos=int(p))}
        return logit_diff(jinterp.run_with_hooks(model, params, corrupt, hooks))

    start = time.perf_counter()
    for l in range(model.n_layers):  # each layer is its own plan: compile each once
        jax.block_until_ready(one(l, positions[0]))
    warm = time.perf_counter() - start
    start = time.perf_counter()
    loop = np.array([[float(one(l, p)) for p in positions] for l in range(model.n_layers)])
    entry["python_loop"] = {"seconds": time.perf_counter() - start, "warmup_compile_s": warm,
                            "calls": int(loop.size)}
    entry["max_abs_difference"] = float(np.abs(loop - result).max())
    entry["speedup"] = entry["python_loop"]["seconds"] / timing["median_s"]
    return entry


_TORCH_SCRIPT = r"""
import json, os, statistics, sys, time
import torch, transformers
batch, pos, repeats = map(int, sys.argv[1:4])
torch.set_num_threads(os.cpu_count() or 1)
hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(attn_implementation="eager")).eval()
ids = torch.randint(0, 50257, (batch, pos))
def timed(fn):
    with torch.inference_mode():
        fn(); times = []
        for _ in range(repeats):
            t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}
out = {"torch": torch.__version__, "threads": torch.get_num_threads()}
out["plain_forward"] = timed(lambda: hf(ids).logits)
out["hidden_states_and_attentions"] = timed(
    lambda: hf(ids, output_hidden_states=True, output_attentions=True).logits)
print(json.dumps(out))
"""

_TL_SCRIPT = r"""
import json, os, statistics, sys, time
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
import transformer_lens
batch, pos, repeats, one_name = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(os.cpu_count() or 1)
cfg = HookedTransformerConfig(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072,
                              d_vocab=50257, n_ctx=1024, act_fn="gelu_new",
                              normalization_type="LN", device="cpu")
model = HookedTransformer(cfg).eval()
tokens = torch.randint(0, 50257, (batch, pos))
def timed(fn):
    with torch.inference_mode():
        fn(); times = []
        for _ in range(repeats):
            t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}
out = {"torch": torch.__version__,
       "transformer_lens": getattr(transformer_lens, "__version__", "?")}
out["plain_forward"] = timed(lambda: model(tokens))
out["cache_everything"] = timed(lambda: model.run_with_cache(tokens))
out["cache_one_name"] = timed(lambda: model.run_with_cache(tokens, names_filter=one_name))
out["stop_at_layer_6"] = timed(lambda: model(tokens, stop_at_layer=6))
print(json.dumps(out))
"""


def _subprocess_json(python: str, script: str, *argv) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    proc = subprocess.run([python, "-c", script, *map(str, argv)], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--pos", type=int, default=128)
    parser.add_argument("--sweep-positions", type=int, default=16)
    parser.add_argument("--sweep-chunk", type=int, default=4,
                        help="patches vmapped at once inside the sweep's lax.map")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    parser.add_argument("--no-loop", action="store_true", help="skip the sweep's Python loop")
    parser.add_argument("--tl-python", default=os.environ.get("JINTERP_TL_PYTHON"),
                        help="a Python interpreter with transformer_lens, for the TL reference")
    args = parser.parse_args()

    j = bench_jinterp(args)
    plain = j["plain_forward"]["median_s"]
    ratio = lambda case: j[case]["median_s"] / plain
    result = {"benchmark": "core_v2_gpt2_small", "batch": args.batch, "pos": args.pos,
              "machine": machine(), "jinterp": j}
    result["ratios"] = {
        "cache_everything_over_plain": ratio("cache_everything"),
        "cache_one_name_over_plain": ratio("cache_one_name"),
        "stop_at_layer_6_over_plain": ratio("stop_at_layer_6"),
        "start_at_layer_6_over_plain": ratio("start_at_layer_6"),
        "grad_cache_everything_over_plain": ratio("grad_cache_everything"),
        "cache_everything_compile_over_plain": (j["cache_everything"]["compile_s"]
                                                / j["plain_forward"]["compile_s"]),
        "cache_one_name_extra_peak_mb": (j["cache_one_name"]["memory"]["peak_mb"]
                                         - j["plain_forward"]["memory"]["peak_mb"]),
        "one_activation_mb": args.batch * args.pos * 768 * 4 / 2**20,
    }
    result["targets"] = {"cache_everything_over_plain": 1.15, "stop_at_layer_6_over_plain": 0.42,
                         "start_at_layer_6_over_plain": 0.72,
                         "grad_cache_everything_over_plain": 3.5}
    result["met"] = {k: result["ratios"][k] <= v for k, v in result["targets"].items()}
    if not args.no_torch:
        ref = _subprocess_json(sys.executable, _TORCH_SCRIPT, args.batch, args.pos, args.repeats)
        result["reference_hf_torch"] = ref
        if "plain_forward" in ref:
            result["ratios"]["jinterp_plain_over_torch_plain"] = (
                plain / ref["plain_forward"]["median_s"])
            result["ratios"]["jinterp_cache_everything_over_torch_all_outputs"] = (
                j["cache_everything"]["median_s"] / ref["hidden_states_and_attentions"]["median_s"])
    if args.tl_python:
        tl = _subprocess_json(args.tl_python, _TL_SCRIPT, args.batch, args.pos, args.repeats,
                              ONE_NAME)
        result["reference_transformer_lens"] = tl
        for case in ("plain_forward", "cache_everything", "cache_one_name", "stop_at_layer_6"):
            if case in tl:
                result["ratios"][f"jinterp_over_transformer_lens_{case}"] = (
                    j[case]["median_s"] / tl[case]["median_s"])
    result["machine"]["load_avg_1m_at_end"] = os.getloadavg()[0]
    result["process_peak_rss_mb"] = process_peak_rss_mb()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
