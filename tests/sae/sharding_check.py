"""Sharded SAE training vs one device, run in a subprocess with 8 fake CPU devices.

Invoked by ``tests/sae/test_sharding.py`` (the device count must be fixed before jax is
imported, which the pytest process has already done). Prints one JSON object of maximum
absolute differences and sharding facts; the test asserts on it.
"""

from __future__ import annotations

import json
import os
import re
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jinterp.sae import sharding as sh  # noqa: E402
from jinterp.sae.config import SAEConfig  # noqa: E402
from jinterp.sae.schedule import TrainConfig  # noqa: E402
from jinterp.sae.sweep import make_sweep_step, plan_sweep, sweep_state  # noqa: E402
from jinterp.sae.train_step import make_train_step, train_state  # noqa: E402

# 4 steps, the fewest that still check it all: Adam's moments and both warm-ups move, and TopK
# latents unfired for 3 steps (dead window 64 tokens = 2 batches) count as dead at step 4,
# so the AuxK path is still reached on the mesh.
N_STEPS = 4
TCFG = TrainConfig(total_steps=N_STEPS, lr_warmup_steps=1, penalty_warmup_steps=2)
CONFIGS = {
    "relu": SAEConfig("relu", d_in=16, d_sae=64, l1_coefficient=0.3),
    "topk": SAEConfig("topk", d_in=16, d_sae=64, k=4, aux_k=8, dead_after_tokens=64),
    "batchtopk": SAEConfig("batchtopk", d_in=16, d_sae=64, k=4, aux_k=8),
}
MESHES = [(4, 2), (2, 4)]
REPORT: dict = {}


def _run(cfg, xs, mesh):
    state = train_state(cfg, 0, lr=1e-2, tcfg=TCFG)
    step = make_train_step(cfg, TCFG, mesh=mesh)
    if mesh is not None:
        state = sh.shard_state(state, mesh)
    losses = []
    for x in xs:
        state, metrics = step(state, x if mesh is None else sh.shard_batch(x, mesh))
        losses.append(float(metrics["loss"]))
    if mesh is not None and cfg.architecture.value == "topk" and mesh.shape[sh.MODEL] == 4:
        _check_step_uses_sharded_top_k(REPORT, state, sh.shard_batch(xs[0], mesh), mesh)
    return state, np.asarray(losses)


def _max_diff(a, b):  # on the host: eager jnp ops would compile once per leaf sharding
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _check_training(report, cases):
    # host (numpy) batches: slicing a jax array compiles a slice program per step
    xs = (np.random.default_rng(1).normal(size=(N_STEPS, 32, 16)) + 0.2).astype(np.float32)
    for name, cfg in CONFIGS.items():
        meshes = [(d, m) for d, m in MESHES if f"{name}_{d}x{m}" in cases]
        if not meshes:
            continue
        ref_state, ref_losses = _run(cfg, xs, None)
        for data, model in meshes:
            mesh = sh.make_mesh(data, model)
            state, losses = _run(cfg, xs, mesh)
            report[f"{name}_{data}x{model}"] = {
                "loss_diff": float(np.max(np.abs(losses - ref_losses))),
                "param_diff": _max_diff(state.params, ref_state.params),
                "W_enc_spec": str(state.params["W_enc"].sharding.spec),
                "W_dec_spec": str(state.params["W_dec"].sharding.spec),
                "adam_mu_W_dec_spec": str(state.opt_state.mu["W_dec"].sharding.spec),
                "loss_changed": float(abs(losses[-1] - losses[0])),
            }


def _check_sweep(report):
    """The vmapped sweep on a 4 x 2 mesh equals the sweep on one device."""
    plan = plan_sweep([CONFIGS["relu"], CONFIGS["topk"],
                       SAEConfig("relu", d_in=16, d_sae=64, l1_coefficient=1.0)])
    xs = np.random.default_rng(2).normal(size=(3, 32, 16)).astype(np.float32)
    mesh = sh.make_mesh(4, 2)
    results = []
    for m in (None, mesh):
        states = sweep_state(plan, [0, 1, 2], lr=1e-2, tcfg=TCFG)
        states = states if m is None else sh.shard_state(states, m)
        step = make_sweep_step(plan, TCFG, mesh=m)
        for x in xs:
            states, metrics = step(states, x if m is None else sh.shard_batch(x, m))
        results.append((states, metrics))
    report["sweep_4x2"] = {"param_diff": _max_diff(results[0][0], results[1][0]),
                           "loss_diff": _max_diff(results[0][1]["loss"], results[1][1]["loss"])}


def _check_top_k(report):
    """sharding.top_k equals lax.top_k (ties included) and never gathers all of d_sae."""
    x = jnp.asarray(np.round(np.random.default_rng(0).normal(size=(32, 64)), 1),
                    jnp.float32)  # many ties
    ref_v, ref_i = jax.lax.top_k(x, 5)
    ref_g = np.asarray(jax.jit(jax.grad(lambda u: jnp.sum(jax.lax.top_k(u, 5)[0] ** 2)))(x))
    for data, model in MESHES:
        mesh = sh.make_mesh(data, model)
        xs = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
            sh.DATA, sh.MODEL)))

        def fn(v, mesh=mesh):
            with sh.active_mesh(mesh):
                return sh.top_k(v, 5)

        def grad_fn(v, mesh=mesh):  # the AuxK path differentiates through the selected values
            with sh.active_mesh(mesh):
                return jax.grad(lambda u: jnp.sum(sh.top_k(u, 5)[0] ** 2))(v)

        compiled = jax.jit(fn).lower(xs).compile()  # one compile: run it and read its HLO
        values, indices = compiled(xs)
        hlo = compiled.as_text()
        with jax.set_mesh(mesh):  # the context mesh works as well as active_mesh
            ctx_i = jax.jit(lambda v: sh.top_k(v, 5)[1])(xs)
        report[f"top_k_{data}x{model}"] = {
            "values_equal": bool(np.array_equal(values, ref_v)),
            "indices_equal": bool(np.array_equal(indices, ref_i)),
            "context_mesh_indices_equal": bool(np.array_equal(ctx_i, ref_i)),
            "grad_diff": float(np.max(np.abs(np.asarray(jax.jit(grad_fn)(xs)) - ref_g))),
            "full_gathers": _full_gathers(hlo, 64),
            "n_all_gathers": hlo.count("all-gather("),
        }


def _full_gathers(hlo: str, d_sae: int) -> list[str]:
    """Collectives whose result is a ``[rows, d_sae]`` matrix (a gathered pre-activation)."""
    found = re.findall(r"= ([a-z0-9]+\[[0-9]+,([0-9]+)\])[^ ]* (all-gather|all-reduce)", hlo)
    return [f"{op} {shape}" for shape, last, op in found if int(last) == d_sae]


def _step_hlo(cfg, state, x, mesh) -> str:
    return make_train_step(cfg, TCFG, mesh=mesh).lower(state, x).compile().as_text()


def _check_step_uses_sharded_top_k(report, state, x, mesh):
    """The compiled TopK training step (AuxK included) never gathers ``[batch, d_sae]``; with
    the sharded top-k swapped for ``lax.top_k`` the same check finds such gathers."""
    cfg = CONFIGS["topk"]
    report["step_full_gathers"] = _full_gathers(_step_hlo(cfg, state, x, mesh), cfg.d_sae)
    sharded = sh.top_k
    sh.top_k = jax.lax.top_k  # the call sites look it up on the module
    make_train_step.cache_clear()
    try:
        report["step_full_gathers_with_lax_top_k"] = _full_gathers(
            _step_hlo(cfg, state, x, mesh), cfg.d_sae)
    finally:
        sh.top_k = sharded
        make_train_step.cache_clear()


def main():
    """``sharding_check.py CASES [training-only]``: CASES is ``relu_4x2,topk_2x4,...``; with
    ``training-only`` the sweep and top-k checks are skipped (the `full` cases' second run)."""
    report = REPORT
    report["n_devices"] = jax.device_count()
    _check_training(report, set(sys.argv[1].split(",")))
    if sys.argv[2:] != ["training-only"]:
        _check_sweep(report)
        _check_top_k(report)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
