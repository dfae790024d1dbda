"""Many SAEs in one program: a vmapped sweep equals training the SAEs one by one."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jinterp.sae.config import SAEConfig
from jinterp.sae.schedule import TrainConfig
from jinterp.sae.sweep import (
    instance_state,
    make_sweep_loop,
    make_sweep_step,
    plan_sweep,
    sweep_state,
)
from jinterp.sae.train_step import make_train_loop, train_state

D_IN, D_SAE = 8, 32
TCFG = TrainConfig(total_steps=4, lr_warmup_steps=1, lr_decay_steps=2, penalty_warmup_steps=2)

# 3 L1 coefficients (one vmapped group) + two k values (two more groups) in one program.
CONFIGS = [SAEConfig("relu", d_in=D_IN, d_sae=D_SAE, l1_coefficient=c) for c in (0.1, 1.0, 3.0)]
CONFIGS += [SAEConfig("topk", d_in=D_IN, d_sae=D_SAE, k=k, aux_k=4, dead_after_tokens=16)
            for k in (2, 4)]
SEEDS = [0, 1, 2, 3, 4]
LRS = [1e-2, 5e-3, 2e-2, 1e-2, 3e-3]


def _batches(n=4, batch=16):
    x = np.random.default_rng(9).normal(size=(n, batch, D_IN)) * 2 + 0.3  # numpy: no PRNG compile
    return jnp.asarray(x, jnp.float32)


def test_plan_groups_by_static_fields_only():
    plan = plan_sweep(CONFIGS)
    assert [members for _, members in plan.groups] == [(0, 1, 2), (3,), (4,)]
    assert plan.multipliers == (0.1, 1.0, 3.0, 1.0, 1.0)
    assert plan.groups[0][0].l1_coefficient == 1.0
    assert plan.locate(4) == (2, 0)
    with pytest.raises(ValueError, match="d_in"):
        plan_sweep([CONFIGS[0], SAEConfig("relu", d_in=4, d_sae=D_SAE)])


# Each one-by-one reference compiles its own loop: `make test` checks instance 2 (the last of
# the vmapped L1 group, with its own seed, lr and multiplier) and 4 (a group of its own);
# `full` checks all five.
@pytest.mark.parametrize("instances", [(2, 4), pytest.param(tuple(range(len(CONFIGS))),
                                                            marks=pytest.mark.full)])
def test_vmapped_sweep_equals_one_by_one_runs(instances):
    xs = _batches()
    plan = plan_sweep(CONFIGS)
    states, metrics = make_sweep_loop(plan, TCFG)(sweep_state(plan, SEEDS, lr=LRS, tcfg=TCFG), xs)
    assert metrics["loss"].shape == (4, len(CONFIGS))
    for i in instances:
        cfg = CONFIGS[i]
        alone = train_state(cfg, SEEDS[i], lr=LRS[i], tcfg=TCFG)
        alone, alone_metrics = make_train_loop(cfg, TCFG)(alone, xs)
        np.testing.assert_allclose(metrics["loss"][:, i], alone_metrics["loss"], rtol=1e-5,
                                   atol=1e-6, err_msg=f"instance {i}")
        mine = instance_state(plan, states, i)
        for path, a, b in zip(jax.tree_util.tree_leaves_with_path(mine), jax.tree.leaves(mine),
                              jax.tree.leaves(alone)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6,
                                       err_msg=f"instance {i} {jax.tree_util.keystr(path[0])}")
    # each instance's L1 coefficient is its penalty multiplier (warm-up finished at step 3)
    np.testing.assert_allclose(metrics["penalty_scale"][-1, :3], [0.1, 1.0, 3.0], rtol=1e-6)
    penalty = metrics["loss"][-1, :3] - metrics["mse"][-1, :3]
    np.testing.assert_allclose(penalty, np.array([0.1, 1.0, 3.0]) * metrics["l1"][-1, :3],
                               rtol=1e-4)


def test_sweep_step_equals_scanned_sweep():
    xs = _batches(2)
    plan = plan_sweep(CONFIGS[:2])
    stepped = sweep_state(plan, [0, 1], lr=1e-2, tcfg=TCFG)
    step = make_sweep_step(plan, TCFG)
    for x in xs:
        stepped, m = step(stepped, x)
    scanned, ms = make_sweep_loop(plan, TCFG)(sweep_state(plan, [0, 1], lr=1e-2, tcfg=TCFG), xs)
    np.testing.assert_allclose(ms["loss"][-1], m["loss"], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(stepped), jax.tree.leaves(scanned)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="lr has 3 entries"):
        sweep_state(plan, [0, 1], lr=[1e-3] * 3)
    assert jnp.all(stepped[0].step == 2)
