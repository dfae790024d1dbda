"""Proof that a plan's shardings compile: AOT-lower and compile a sharded forward, read XLA's
memory analysis, and set it next to the plan of the same config and mesh.

A pod-sized model cannot be compiled on a laptop at full depth, but depth does not change the
layout: the same widths with two layers (``n_layers=2``) exercise every parameter's sharding,
every activation constraint and every collective. The forward is ``model(params, tokens)`` under
``jax.jit`` with ``in_shardings`` from :func:`jinterp.sharding.param_shardings`, tokens split
over ``data`` and the mesh set (so the layer loop constrains activations), lowered from
``jax.ShapeDtypeStruct`` inputs: nothing is allocated, and the compiled program is never run.

The mesh needs real (or fake) devices: :func:`check` runs in this process when it has enough,
else :func:`check_in_subprocess` starts a fresh interpreter with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` on the CPU backend (the flag must be set
before JAX starts its backend).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

from jinterp import sharding
from jinterp.plan import memory

#: Marks the line of the subprocess's output that carries its JSON report.
REPORT_PREFIX = "JINTERP_COMPILE_CHECK "


def forward_estimate(plan: memory.MemoryPlan) -> dict[str, int]:
    """The plan's per-device numbers for one plain forward (chunk 1), to compare with XLA's."""
    rows = plan.section("patching chunk").rows
    block = sum(r.device_bytes // r.count for r in rows if r.name.startswith("block."))
    weights = sum(r.device_bytes for r in rows if r.name.startswith("layer slice "))
    logits = next(r for r in rows if r.name == "logits")
    s = dict(plan.settings)
    n_data = dict(plan.mesh).get(sharding.DATA, 1)
    tokens = (s["batch"] // n_data if s["batch"] % n_data == 0 else s["batch"]) * s["seq_len"] * 4
    logit_bytes = logits.device_bytes // logits.count * jnp.dtype(s["dtype"]).itemsize // 4
    return {"params": plan.section("params").device_bytes(), "tokens": tokens,
            "logits": logit_bytes, "one_block_activations": block, "layer_slice": weights}


def check(model: Any, mesh_shape: Mapping[str, int], *, batch: int, seq_len: int,
          fsdp: bool = False, rules: sharding.Rules | None = None,
          replicate_indivisible: bool = False) -> dict[str, Any]:
    """Compile ``model``'s sharded forward on the first ``prod(mesh_shape)`` devices.

    Returns:
        XLA's ``memory_analysis()`` (bytes per device: arguments, outputs, temporaries,
        generated code), the plan's numbers for the same config and mesh, and the compile time.
    """
    import time

    n = math.prod(mesh_shape.values())
    if jax.device_count() < n:
        raise RuntimeError(f"the check mesh {dict(mesh_shape)} needs {n} devices, this process "
                           f"has {jax.device_count()}; use check_in_subprocess")
    mesh = sharding.make_mesh(mesh_shape.get(sharding.DATA, 1), mesh_shape.get(sharding.MODEL, 1))
    table, _ = memory.effective_rules(model, mesh.abstract_mesh, rules, fsdp=fsdp,
                                      replicate_indivisible=replicate_indivisible)
    params = model.param_shapes()
    shardings = sharding.param_shardings(model, mesh, table)
    tokens = jax.ShapeDtypeStruct((batch, seq_len), jnp.int32)
    token_spec = memory.activation_spec(("batch", "pos"), tokens.shape, mesh)
    fn = jax.jit(lambda p, t: model(p, t),
                 in_shardings=(shardings, NamedSharding(mesh, jax.P(*token_spec))))
    start = time.perf_counter()
    with jax.set_mesh(mesh):
        compiled = fn.lower(params, tokens).compile()
    seconds = time.perf_counter() - start
    stats = compiled.memory_analysis()
    xla = {k: int(getattr(stats, k)) for k in (
        "argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
        "alias_size_in_bytes", "generated_code_size_in_bytes") if hasattr(stats, k)}
    plan = memory.plan(model, mesh_shape, fsdp=fsdp, rules=rules, batch=batch, seq_len=seq_len,
                       chunk=1, replicate_indivisible=replicate_indivisible)
    return {"mesh": dict(mesh_shape), "n_layers": model.n_layers, "batch": batch,
            "seq_len": seq_len, "fsdp": fsdp, "compile_seconds": round(seconds, 2),
            "xla": xla, "plan": forward_estimate(plan), "param_count": plan.param_count}


def check_in_subprocess(argv: list[str], n_devices: int, timeout: float = 900) -> dict[str, Any]:
    """Runs ``python -m jinterp.plan ARGV --compile-only`` on ``n_devices`` fake CPU devices and
    returns its report.

    Raises:
        RuntimeError: the subprocess failed (its stderr is in the message).
    """
    env = dict(os.environ)
    env["XLA_FLAGS"] = (f"{env.get('XLA_FLAGS', '')} "
                        f"--xla_force_host_platform_device_count={n_devices}").strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-m", "jinterp.plan", *argv, "--compile-only"],
                          capture_output=True, text=True, env=env, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith(REPORT_PREFIX):
            return json.loads(line[len(REPORT_PREFIX):])
    raise RuntimeError(f"compile check subprocess failed (exit {proc.returncode}):\n"
                       f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def format_check(report: Mapping[str, Any]) -> str:
    """XLA's numbers next to the plan's, one line each."""
    fb = memory.format_bytes
    xla, est = report["xla"], report["plan"]
    mesh = " x ".join(f"{a}={n}" for a, n in report["mesh"].items())
    args_plan = est["params"] + est["tokens"]
    lines = [f"compile check: {report['n_layers']} layers, mesh {mesh}, batch {report['batch']} "
             f"x {report['seq_len']} tokens, fsdp {'on' if report['fsdp'] else 'off'}: compiled "
             f"in {report['compile_seconds']} s ({report['param_count']:,} parameters)",
             f"  {'per device':<28} {'XLA memory_analysis':>20} {'plan':>14}",
             f"  {'arguments (params+tokens)':<28} {fb(xla['argument_size_in_bytes']):>20} "
             f"{fb(args_plan):>14}",
             f"  {'output (logits)':<28} {fb(xla['output_size_in_bytes']):>20} "
             f"{fb(est['logits']):>14}",
             f"  {'temporaries':<28} {fb(xla['temp_size_in_bytes']):>20} "
             f"{fb(est['one_block_activations'] + est['layer_slice']):>14}  "
             f"(plan: one block's activations + one layer's weight slice)"]
    return "\n".join(lines)
