"""Compile time and forward time of a Llama-shaped model at 2, 8 and 32 layers; vs HF PyTorch.

Prints one JSON object. The model is Llama-shaped (d_model 512, 8 query heads, 2 kv heads,
d_head 64, d_mlp 1376, vocab 32000, Llama 3 RoPE base), with HF's random init converted by
``models.from_hf``, so both sides run the same weights (the max logit difference is reported).
Because the blocks are one ``lax.scan`` over stacked params, compile time should stay nearly
flat in depth while forward time grows linearly; ``compile_32_over_2`` is the flatness figure
(target < 2). Compile time is lower + compile of the jitted program ``model(...)`` /
``run_with_cache`` run; forward time is the median after warm-up. The reference is
HuggingFace's PyTorch ``LlamaForCausalLM`` forward (eager attention, inference mode, all threads).

Usage: python benchmarks/bench_llama_depth.py [--depths 2 8 32] [--batch 4] [--pos 128]
       [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ["JINTERP_COMPILATION_CACHE"] = "0"  # compile times are measured, not cached
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np

from benchmarks.common import machine, process_peak_rss_mb, time_calls, xla_memory
from jinterp import models, run

SHAPE = dict(vocab_size=32000, hidden_size=512, intermediate_size=1376, num_attention_heads=8,
             num_key_value_heads=2, rope_theta=500_000.0, max_position_embeddings=2048,
             rms_norm_eps=1e-5)


def _compile(model, params, tokens, names, unroll=None) -> tuple[float, object]:
    """Lower + compile the program ``model(...)`` / ``run_with_cache`` runs for ``names``."""
    start = time.perf_counter()
    compiled = run.lower(model, params, tokens, names, unroll=unroll).compile()
    return time.perf_counter() - start, compiled


def bench_depth(n_layers: int, tokens: np.ndarray, repeats: int, with_torch: bool) -> dict:
    import torch
    import transformers

    torch.manual_seed(0)
    hf_config = transformers.LlamaConfig(**SHAPE, num_hidden_layers=n_layers)
    hf_config._attn_implementation = "eager"
    hf = transformers.LlamaForCausalLM(hf_config).eval()
    model, params = models.from_hf(hf)
    jtokens = jax.numpy.asarray(tokens)
    jax.clear_caches()  # compile from scratch at every depth
    plain_s, plain = _compile(model, params, jtokens, False)
    cache_s, _ = _compile(model, params, jtokens, None)
    cache_unrolled_s, _ = _compile(model, params, jtokens, None, unroll=True)
    entry = {"n_layers": n_layers, "n_params": int(sum(x.size for x in jax.tree.leaves(params))),
             "compile_plain_s": plain_s, "compile_cache_everything_s": cache_s,
             "compile_cache_everything_unrolled_s": cache_unrolled_s,
             "forward": time_calls(lambda: model(params, jtokens), repeats=repeats),
             "memory": xla_memory(plain)}
    if with_torch:
        ids = torch.tensor(tokens)
        with torch.inference_mode():
            expected = hf(ids).logits.numpy()
            entry["reference_hf_torch_forward"] = time_calls(lambda: hf(ids).logits,
                                                             repeats=repeats)
        ours = np.asarray(model(params, jtokens))
        entry["max_abs_logit_diff_vs_hf"] = float(np.abs(ours - expected).max())
        entry["jinterp_over_torch_forward"] = (entry["forward"]["median_s"]
                                               / entry["reference_hf_torch_forward"]["median_s"])
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--pos", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, SHAPE["vocab_size"], (args.batch, args.pos)).astype(np.int32)
    result = {"benchmark": "llama_depth_compile_forward", "shape": SHAPE, "batch": args.batch,
              "pos": args.pos, "machine": machine(), "torch": torch.__version__, "depths": {}}
    for depth in args.depths:
        result["depths"][str(depth)] = bench_depth(depth, tokens, args.repeats, not args.no_torch)
    d = result["depths"]
    lo, hi = str(min(args.depths)), str(max(args.depths))
    result["ratios"] = {
        f"compile_plain_{hi}_over_{lo}": d[hi]["compile_plain_s"] / d[lo]["compile_plain_s"],
        f"compile_cache_everything_{hi}_over_{lo}": (d[hi]["compile_cache_everything_s"]
                                                    / d[lo]["compile_cache_everything_s"]),
        f"compile_cache_everything_unrolled_{hi}_over_{lo}": (
            d[hi]["compile_cache_everything_unrolled_s"]
            / d[lo]["compile_cache_everything_unrolled_s"]),
        f"forward_{hi}_over_{lo}": d[hi]["forward"]["median_s"] / d[lo]["forward"]["median_s"],
    }
    result["targets"] = {f"compile_plain_{hi}_over_{lo}_max": 2.0}
    result["process_peak_rss_mb"] = process_peak_rss_mb()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
