"""Sharded SAE training equals one device (8 fake CPU devices, meshes 4 x 2 and 2 x 4)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh, PartitionSpec

from jinterp import sharding as table
from jinterp.sae import sharding as sh
from jinterp.sae.config import SAEConfig
from jinterp.sae.train_step import train_state

TOL = 1e-5


CASES = [f"{name}_{mesh}" for name in ("relu", "topk", "batchtopk") for mesh in ("4x2", "2x4")]
# `make test` trains each architecture on one mesh (both meshes covered; TopK on 2 x 4, where the
# compiled-step check runs); the other three cases are `full`, in a second subprocess.
DEFAULT = ("relu_4x2", "topk_2x4", "batchtopk_4x2")


@pytest.fixture(scope="module")
def report():
    return _run_check_once(DEFAULT, False)


@functools.lru_cache(maxsize=2)
def _run_check_once(cases: tuple[str, ...], training_only: bool):
    """Runs ``sharding_check.py`` in a fresh interpreter (the fake device count must be set
    before jax is imported) and returns its JSON report. Cached per worker process: pytest
    re-creates a module fixture when a worker interleaves other modules' tests."""
    script = os.path.join(os.path.dirname(__file__), "sharding_check.py")
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    args = [",".join(cases)] + (["training-only"] if training_only else [])
    out = subprocess.run([sys.executable, script, *args], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", [c if c in DEFAULT else pytest.param(c, marks=pytest.mark.full)
                                  for c in CASES])
def test_mesh_training_equals_single_device(report, case):
    r = report[case] if case in DEFAULT else _run_check_once(
        tuple(c for c in CASES if c not in DEFAULT), True)[case]
    assert report["n_devices"] == 8
    assert r["loss_diff"] < TOL and r["param_diff"] < TOL, r
    assert r["loss_changed"] > 1e-3  # the steps really trained
    assert r["W_enc_spec"] == "P(None, 'model')"  # the dictionary is split over model
    assert r["W_dec_spec"] == "P('model',)"
    assert r["adam_mu_W_dec_spec"] == "P('model',)"  # and so are Adam's moments


def test_sweep_on_mesh_equals_single_device(report):
    assert report["sweep_4x2"]["param_diff"] < TOL and report["sweep_4x2"]["loss_diff"] < TOL


@pytest.mark.parametrize("mesh", ["4x2", "2x4"])
def test_sharded_top_k_is_exact_and_gathers_only_candidates(report, mesh):
    r = report[f"top_k_{mesh}"]
    assert r["values_equal"] and r["indices_equal"] and r["context_mesh_indices_equal"], r
    assert r["grad_diff"] == 0.0, r
    assert r["n_all_gathers"] > 0 and not r["full_gathers"], r


def test_topk_training_step_uses_the_sharded_top_k(report):
    """Evidence that the architectures call it: the compiled TopK step (AuxK included) has no
    collective producing a [batch, d_sae] matrix, while the same step built with lax.top_k
    all-gathers the pre-activations (so the check can fail)."""
    assert report["step_full_gathers"] == [], report["step_full_gathers"]
    assert report["step_full_gathers_with_lax_top_k"], "the negative control found no gather"


def test_sae_specs_come_from_the_core_table_and_divisibility_error():
    mesh = sh.make_mesh(1, 1)
    assert sh.make_mesh is table.make_mesh  # one mesh constructor, re-exported
    assert sh.batch_sharding(mesh).spec == PartitionSpec("data", None)
    assert sh.batch_sharding(mesh, 3).spec == PartitionSpec(None, "data", None)
    cfg = SAEConfig("relu", d_in=4, d_sae=6)
    state = train_state(cfg, 0, lr=1e-3)
    specs = sh.state_shardings(state, mesh)
    assert specs.params["W_enc"].spec == PartitionSpec(None, "model")
    assert specs.params["W_dec"].spec == PartitionSpec("model", None)
    assert specs.opt_state.mu["W_dec"].spec == PartitionSpec("model", None)
    assert specs.steps_since_fired.spec == PartitionSpec("model")
    assert specs.step.spec == PartitionSpec()

    with pytest.raises(ValueError, match=r"W_enc.*'d_sae' of size 6 is split over mesh axis "
                                         r"'model' of size 4.*Use a mesh"):
        sh.state_shardings({"W_enc": jnp.zeros((4, 6))}, AbstractMesh((1, 4), ("data", "model")))
    with pytest.raises(ValueError, match="needs 16 devices"):
        sh.make_mesh(4, 4, devices=jax.devices()[:1])
    x = jnp.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(sh.top_k(x, 2)[1], jax.lax.top_k(x, 2)[1])  # no mesh: lax
