"""Time to first result: what a notebook user waits for on a new call, at 12 and 26 layers.

Prints one JSON object. A GPT-2-family model with d_model 128 (4 heads of 32, d_mlp 512,
vocab 50257), batch 4 x 64 tokens. Every measurement runs in a fresh Python process, as a
user's first cell would: ``first_call_s`` is the wall time of the first call (trace + compile
+ run), ``compile_s`` the lower + compile of the same program. Cases: the plain forward
``model(params, tokens)`` and ``run_with_cache`` of every default name (target: compile at
most 2x the plain forward's, at both depths). Then the persistent compilation cache:
the cache-everything call in two fresh processes sharing one (new) cache directory; the
second should skip XLA compilation.

Usage: python benchmarks/bench_compile.py [--depths 12 26]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import jax, numpy as np
import jinterp
from jinterp import models, run
n_layers, case = int(sys.argv[1]), sys.argv[2]
model = models.GPT2(models.GPT2Config(n_layers=n_layers, d_model=128, n_heads=4, d_head=32,
                                      d_mlp=512, d_vocab=50257, n_ctx=1024))
params = model.init(jax.random.key(0))
tokens = jax.numpy.asarray(np.random.default_rng(0).integers(0, 50257, (4, 64)))
jax.block_until_ready(params)
names = False if case == "plain" else None
start = time.perf_counter()
if case == "plain":
    jax.block_until_ready(model(params, tokens))
else:
    jax.block_until_ready(jinterp.run_with_cache(model, params, tokens))
first = time.perf_counter() - start
out = {"first_call_s": first, "import_and_init_s": start - t0}
if sys.argv[3] == "compile":
    jax.clear_caches()
    start = time.perf_counter()
    run.lower(model, params, tokens, names).compile()
    out["compile_s"] = time.perf_counter() - start
print(json.dumps(out))
"""


def _child(n_layers: int, case: str, compile_too: bool, cache_dir: str | None) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if cache_dir is None:
        env["JINTERP_COMPILATION_CACHE"] = "0"
    else:
        env["JINTERP_COMPILATION_CACHE"] = "1"
        env["JINTERP_CACHE_DIR"] = cache_dir
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(n_layers), case,
                           "compile" if compile_too else "-"], capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[12, 26])
    args = parser.parse_args()
    result = {"benchmark": "time_to_first_result", "model": "GPT-2 family, d_model 128",
              "tokens": [4, 64], "cpu_count": os.cpu_count(), "depths": {}}
    for depth in args.depths:
        plain = _child(depth, "plain", True, None)
        cache = _child(depth, "cache", True, None)
        with tempfile.TemporaryDirectory() as directory:
            cold = _child(depth, "cache", False, directory)
            warm = _child(depth, "cache", False, directory)
        result["depths"][depth] = {
            "plain": plain, "cache_everything": cache,
            "cache_everything_compile_over_plain": cache["compile_s"] / plain["compile_s"],
            "cache_everything_first_call_over_plain": (cache["first_call_s"]
                                                        / plain["first_call_s"]),
            "persistent_cache": {"cold_first_call_s": cold["first_call_s"],
                                 "warm_first_call_s": warm["first_call_s"]},
        }
        print(f"{depth} layers: {result['depths'][depth]}", file=sys.stderr)
    result["target_compile_ratio"] = 2.0
    result["load_avg_1m_at_end"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
