"""Grokking's seeds split over two processes (jax.distributed on 127.0.0.1) train as one process.

Each process owns one fake CPU device and so one of the two seeds; the state is one global
array that neither process holds whole, the orbax checkpoint is written by both, and process 0
writes the history. The parameters after four steps equal a single-process run of both seeds
to float rounding (the same tolerance as vmapped seeds against a seed trained alone: the
programs differ in batch size, so XLA may fuse them differently). Bounded: 240 s.
"""

import os
import socket
import subprocess
import sys

import jax
import numpy as np

from jinterp.experiments.grokking.config import GrokConfig
from jinterp.experiments.grokking.training import load_history, train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = dict(steps=4, steps_per_call=2, snapshot_every=2, seeds=(0, 1))

WORKER = r"""
import os, sys
pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=1")
from jinterp import distributed
distributed.initialize(f"127.0.0.1:{port}", 2, pid, timeout_s=60)
import jax
from jinterp.experiments.grokking.config import GrokConfig
from jinterp.experiments.grokking.training import train
state = train(GrokConfig.fast(steps=4, steps_per_call=2, snapshot_every=2, seeds=(0, 1)), out,
              progress=False)
leaf = jax.tree.leaves(state["params"])[0]
print("GLOBAL", jax.device_count(), not leaf.is_fully_addressable,
      [s.index[0] for s in leaf.addressable_shards])
distributed.shutdown()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_seeds_split_over_two_processes_equal_one_process(tmp_path):
    out = str(tmp_path / "two")
    port = str(_free_port())
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JINTERP_COMPILATION_CACHE": "0",
           "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(i), port, out], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=240)
            assert proc.returncode == 0, stderr[-3000:]
            outs.append(stdout)
    finally:
        for proc in procs:
            proc.kill()
    for i, stdout in enumerate(outs):  # each process holds its own seed of a global array
        assert f"GLOBAL 2 True [slice({i}, {i + 1}, None)]" in stdout, stdout

    train(GrokConfig.fast(**CFG), str(tmp_path / "one"), progress=False)
    two, one = load_history(out), load_history(str(tmp_path / "one"))
    assert sorted(two) == sorted(one)
    for key in ("train_loss", "eval_test_loss"):
        np.testing.assert_allclose(two[key], one[key], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(two["snapshot_steps"], [0, 2, 4])
    for a, b in zip(jax.tree.leaves(two["snapshots"]), jax.tree.leaves(one["snapshots"])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert not np.allclose(a[-1, 0], a[-1, 1]) or not a[-1].any()  # the seeds differ
