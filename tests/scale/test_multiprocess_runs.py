"""Real multi-process runs (jax.distributed on 127.0.0.1, gloo CPU collectives) equal 1 device.

One worker script per topology does three checks, so each topology costs one launch:

* SAE training on a tiny GPT-2's activations (``train_on_model(mesh=...)``: data-parallel
  forwards with per-process token loading, the buffer split over ``data``, latents over
  ``model``, a checkpoint written by every process, files from process 0);
* an activation-patching sweep whose node axis is split over every device of every process;
* a forward with FSDP x tensor-parallel parameters (``shard_params(fsdp=True)``) of a global
  token array that no process holds whole; out-of-range ids in one still raise.

Each worker compares with its own 1-device run (numpy inputs on ``jax.local_devices()[0]``)
and prints the largest differences. The 2 x 4 launch runs in the default suite; 4 x 2 and the
single-process 8-device reference are ``full``.
"""

import os
import sys
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import procs  # noqa: E402

WORKER = r"""
out_dir, n_data, n_model = sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
ckpt_every = int(sys.argv[7]) or None  # 0: no checkpoint (the default suite's budget)
from jinterp import distributed
distributed.initialize(f"127.0.0.1:{PORT}", NPROC, PID, timeout_s=60)
import os, warnings
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
import jinterp
from jinterp import models, sae, sharding
from jinterp.metrics import logit_diff
from jinterp.patching import get_act_patch_resid_pre
warnings.simplefilter("ignore")
assert jax.process_count() == NPROC and jax.device_count() == n_data * n_model

model = models.GPT2(models.GPT2Config(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64,
                                      d_vocab=48, n_ctx=16))
# random weights straight from numpy (model.init dispatches op by op: seconds per process)
rng = np.random.default_rng(0)
params = jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype),
                      model.param_shapes())
mesh = sharding.make_mesh(n_data, n_model)
local = jax.local_devices()[0]

def maxdiff(a, b):
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

# 1. SAE training on the model's activations
cfg = sae.SAEConfig("topk", d_in=32, d_sae=64, k=4)
def train(mesh, out=None):
    src = sae.SyntheticTokenSource(48, 8, 8, bos_id=0, low=1)
    return sae.train_on_model(model, params, cfg, "blocks.1.hook_resid_post", src, 4, lr=1e-2,
                              batch_size=16, buffer_batches=3, exclude_ids=(0,), log_every=2,
                              checkpoint_every=None if out is None else ckpt_every,
                              out_dir=out,
                              progress=False, mesh=mesh)
got = train(mesh, os.path.join(out_dir, f"run_{NPROC}"))
got_p = got.params[0]
if PID == 0:
    np.savez(os.path.join(out_dir, f"sae_{NPROC}.npz"), **got_p)
    files = sorted(os.listdir(os.path.join(out_dir, f"run_{NPROC}")))
    print("FILES", " ".join(files))
print("LOSS", got.history[-1]["loss"])

# 2. a patching sweep over every device of every process
clean = np.random.default_rng(1).integers(1, 48, (2, 6)).astype(np.int32)
corrupt = np.random.default_rng(2).integers(1, 48, (2, 6)).astype(np.int32)
metric = logit_diff(np.array([3, 4]), np.array([5, 6]))
_, cache = jinterp.run_with_cache(model, params, clean)
cache_np = {k: np.asarray(v) for k, v in cache.items()}
swept = distributed.to_host(get_act_patch_resid_pre(model, params, corrupt, cache_np, metric,
                                                    suffix_buckets=None))

# 3. a forward with FSDP x tensor-parallel parameters, tokens split over data
name = "blocks.1.hook_resid_post"
tokens = np.random.default_rng(3).integers(0, 48, (8, 10)).astype(np.int32)
p_sharded = sharding.shard_params(model, params, mesh, fsdp=True)
rows = distributed.local_rows(8, mesh)
g_tokens = distributed.global_batch(tokens[rows], mesh)
logits, fcache = jinterp.run_with_cache(model, p_sharded, g_tokens, names=name)
host = distributed.to_host((logits, fcache[name]))
# out-of-range ids in a global token array still raise (where a device runs the check; a
# data-parallel forward, so that no process waits in a collective for one that raised)
from jax.sharding import Mesh
flat = Mesh(np.asarray(jax.devices()), ("data",))
p_flat = sae.sharding.place_host(params, NamedSharding(flat, P()))
bad = distributed.global_batch(np.full_like(tokens, 60)[distributed.local_rows(8, flat)], flat)
try:
    jax.block_until_ready(model(p_flat, bad))
    print("RAISED False")
except Exception as err:
    print("RAISED", "Token ids must lie in [0, 48)" in str(err))

# the 1-device references last (no collectives), split between the processes: process 0
# trains the SAE, the last process runs the sweep and the forward
if PID == 0:
    with jax.default_device(local):
        ref = train(None)
    print("SAE1", maxdiff(got_p, ref.params[0]), max(float(np.abs(v).max())
                                                    for v in ref.params[0].values()))
if PID == NPROC - 1:
    with jax.default_device(local):
        ref_sweep = get_act_patch_resid_pre(model, params, corrupt, cache_np, metric,
                                            devices=[local], suffix_buckets=None)
        ref_logits, ref_cache = jinterp.run_with_cache(model, params, tokens, names=name)
    print("SWEEP", maxdiff(swept, ref_sweep), float(np.abs(np.asarray(ref_sweep)).max()))
    print("FORWARD", maxdiff(host[0], ref_logits), maxdiff(host[1], ref_cache[name]))
distributed.shutdown()
print("DONE")
"""


def _launch(tmp_path, n_processes: int, per_process: int, n_data: int, n_model: int,
            timeout: float, checkpoint: bool) -> tuple[list[str], float]:
    start = time.perf_counter()
    outs = procs.launch(WORKER, n_processes, per_process, timeout,
                        args=(str(tmp_path), str(n_data), str(n_model), "4" if checkpoint else "0"))
    return outs, time.perf_counter() - start


def _check(outs: list[str], checkpoint: bool) -> None:
    for out in outs:
        assert "DONE" in out, out[-2000:]
    sweep, scale = procs.values(outs[-1], "SWEEP")
    assert scale > 0.05 and sweep < 1e-5 * max(1.0, scale), outs[-1][-2000:]
    assert max(procs.values(outs[-1], "FORWARD")) < 1e-5, outs[-1][-2000:]
    assert any("RAISED True" in out for out in outs), [out[-2000:] for out in outs]
    main = outs[0]
    diff, scale = procs.values(main, "SAE1")
    assert scale > 0.1 and diff < 1e-5, main[-2000:]
    files = main.split("FILES ", 1)[1].splitlines()[0].split()
    assert {"metrics.jsonl", "run.json", "sae", "summary.json"} <= set(files)
    assert ("checkpoints" in files) == checkpoint, files
    losses = [procs.values(out, "LOSS")[0] for out in outs]
    assert max(losses) - min(losses) < 1e-6, losses  # every process logged the same metrics


def test_two_processes_of_four_devices_match_one_device(tmp_path):
    outs, wall = _launch(tmp_path, 2, 4, 4, 2, timeout=120, checkpoint=False)
    print(f"2 x 4 launch: {wall:.1f} s")
    _check(outs, checkpoint=False)


@pytest.mark.full
def test_four_processes_and_one_process_of_eight_devices_agree(tmp_path):
    outs4, wall4 = _launch(tmp_path, 4, 2, 2, 4, timeout=240, checkpoint=True)
    outs1, wall1 = _launch(tmp_path, 1, 8, 2, 4, timeout=120, checkpoint=True)
    print(f"4 x 2 launch: {wall4:.1f} s; 1 x 8 launch: {wall1:.1f} s")
    _check(outs4, checkpoint=True)
    _check(outs1, checkpoint=True)
    with np.load(tmp_path / "sae_4.npz") as a, np.load(tmp_path / "sae_1.npz") as b:
        for k in a.files:
            np.testing.assert_allclose(a[k], b[k], atol=1e-5, err_msg=k)
