"""A multi-host global token array works: two processes with jax.distributed on 127.0.0.1.

Each process holds four fake CPU devices and half the batch; the tokens are one global array
that no process can read whole (so any host copy would fail). The forward and a capture match
a single-process run, and out-of-range ids still raise (in the process whose device runs the
check). Bounded in time: the workers are killed after 150 s.
"""

import os
import socket
import subprocess
import sys

WORKER = r"""
import os, sys
pid, port = int(sys.argv[1]), sys.argv[2]
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=4")
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                           process_id=pid, initialization_timeout=60)
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import jinterp
from jinterp import models
model = models.GPT2(models.GPT2Config(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64,
                                      d_vocab=50, n_ctx=16))
params = model.init(jax.random.key(0))
tokens = np.random.default_rng(0).integers(0, 50, (8, 10)).astype(np.int32)
mesh = Mesh(np.array(jax.devices()), ("data",))
local = tokens[pid * 4:(pid + 1) * 4]
spread = NamedSharding(mesh, P("data"))
global_tokens = jax.make_array_from_process_local_data(spread, local)
assert not global_tokens.is_fully_addressable
params_g = jax.device_put(params, NamedSharding(mesh, P()))
name = "blocks.1.attn.hook_z"
logits, cache = jinterp.run_with_cache(model, params_g, global_tokens, names=name)
got = multihost_utils.process_allgather(logits, tiled=True)
got_z = multihost_utils.process_allgather(cache[name], tiled=True)
ref, ref_cache = jinterp.run_with_cache(model, params, tokens, names=name)
print("DIFF", float(np.abs(np.asarray(got) - np.asarray(ref)).max()),
      float(np.abs(np.asarray(got_z) - np.asarray(ref_cache[name])).max()))
bad = jax.make_array_from_process_local_data(spread, np.full_like(local, 60))
try:
    jax.block_until_ready(model(params_g, bad))
    print("RAISED False")
except Exception as err:
    print("RAISED", "Token ids must lie in [0, 50)" in str(err))
jax.distributed.shutdown()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_global_token_array_across_two_processes():
    port = str(_free_port())
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JINTERP_COMPILATION_CACHE": "0"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(i), port], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=150)
            assert proc.returncode == 0, err[-3000:]
            outs.append(out)
    finally:
        for proc in procs:
            proc.kill()
    for out in outs:
        words = out.split()
        diffs = [float(words[words.index("DIFF") + i]) for i in (1, 2)]
        assert max(diffs) < 1e-5, out
    assert any("RAISED True" in out for out in outs), outs
