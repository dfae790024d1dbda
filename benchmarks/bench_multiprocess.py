"""Multi-process overhead: the same sharded run on 1 x 8, 2 x 4 and 4 x 2 processes x devices.

Each configuration runs in its own fresh processes (``tests/scale/procs.launch``: fake CPU
devices, gloo collectives over 127.0.0.1) on one ``data=4 x model=2`` mesh, so the programs
are the same and only the process boundary moves:

* SAE training on a small GPT-2's activations (``train_on_model(mesh=...)``): tokens per
  second of SAE steps, steady state (median of repeated identical runs; the first run's extra
  time is reported as compile time), including the LM forwards that fill the buffer;
* one activation-patching sweep (``get_act_patch_resid_pre``, nodes over every device).

On this machine all processes share 2 CPU cores, so this measures what crossing process
boundaries costs (gloo collectives, per-process dispatch, contention), not a speed-up: on a
real cluster each process has its own chips. Prints one JSON object; ``--quick`` runs fewer
steps and repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "scale"))
sys.path.insert(0, os.path.dirname(HERE))
import procs  # noqa: E402

WORKER = r"""
steps, repeats = int(sys.argv[4]), int(sys.argv[5])
from jinterp import distributed
distributed.initialize(f"127.0.0.1:{PORT}", NPROC, PID, timeout_s=120)
import json, statistics, time, warnings
import jax, numpy as np
from benchmarks.common import process_peak_rss_mb
from jinterp import models, sae, sharding
from jinterp.metrics import logit_diff
from jinterp.patching import get_act_patch_resid_pre
warnings.simplefilter("ignore")
model = models.GPT2(models.GPT2Config(n_layers=2, d_model=64, n_heads=4, d_head=16,
                                      d_mlp=256, d_vocab=256, n_ctx=32))
rng = np.random.default_rng(0)
params = jax.tree.map(lambda s: (0.1 * rng.standard_normal(s.shape)).astype(s.dtype),
                      model.param_shapes())
mesh = sharding.make_mesh(4, 2)
cfg = sae.SAEConfig("topk", d_in=64, d_sae=512, k=16)
batch = 256

def train():
    src = sae.SyntheticTokenSource(256, 16, 16, seed=1)
    start = time.perf_counter()
    r = sae.train_on_model(model, params, cfg, "blocks.1.hook_resid_post", src, steps,
                           lr=1e-3, batch_size=batch, buffer_batches=4, log_every=steps,
                           progress=False, mesh=mesh)
    jax.block_until_ready(r.params)
    return time.perf_counter() - start

first = train()
times = [train() for _ in range(repeats)]
tokens = np.random.default_rng(2).integers(0, 256, (2, 16)).astype(np.int32)
clean = np.random.default_rng(3).integers(0, 256, (2, 16)).astype(np.int32)
import jinterp
_, cache = jinterp.run_with_cache(model, params, clean)
cache = {k: np.asarray(v) for k, v in cache.items()}
metric = logit_diff(np.array([1, 2]), np.array([3, 4]))

def sweep():
    start = time.perf_counter()
    distributed.to_host(get_act_patch_resid_pre(model, params, tokens, cache, metric))
    return time.perf_counter() - start

sweep_first = sweep()
sweep_times = [sweep() for _ in range(repeats)]
med = statistics.median(times)
out = {"process": PID, "peak_rss_mb": round(process_peak_rss_mb(), 1),
       "sae_tokens_per_s": round(steps * batch / med, 1), "sae_run_median_s": round(med, 3),
       "sae_compile_s": round(first - med, 3), "sweep_median_s": round(
           statistics.median(sweep_times), 4), "sweep_compile_s": round(
           sweep_first - statistics.median(sweep_times), 3)}
print("RESULT " + json.dumps(out), flush=True)
distributed.shutdown()
"""


def run(n_processes: int, per_process: int, steps: int, repeats: int) -> dict:
    outs = procs.launch(WORKER, n_processes, per_process, timeout=600,
                        args=(str(steps), str(repeats)))
    rows = [json.loads(line.split(" ", 1)[1]) for out in outs for line in out.splitlines()
            if line.startswith("RESULT ")]
    main = rows[0]
    return {"processes": n_processes, "devices_per_process": per_process,
            **{k: v for k, v in main.items() if k not in ("process", "peak_rss_mb")},
            "peak_rss_mb_per_process": [r["peak_rss_mb"] for r in rows]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    args = p.parse_args(argv)
    steps, repeats = (8, 1) if args.quick else (30, 3)
    result = {"benchmark": "multiprocess", "mesh": "data=4 x model=2", "sae_steps": steps,
              "sae_batch_tokens": 256, "repeats": repeats, "load_avg_1m": os.getloadavg()[0],
              "cpu_count": os.cpu_count(),
              "configs": [run(n, 8 // n, steps, repeats) for n in (1, 2, 4)]}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
