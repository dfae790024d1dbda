"""Many SAEs in one compiled program: a sweep over coefficients, k, learning rates, seeds.

Training a grid of SAEs on the same activations is the common case (an L1 sweep to trace
the sparsity/reconstruction frontier, several seeds to measure feature stability). Doing it
one run at a time reads and normalises the data once per SAE and pays a host dispatch per
SAE per step; here all of them see the same batch in one ``jit`` call.

How instances are combined:

* Per-instance *arrays* -- learning rate, seed (initial params), and the L1 / L0 sparsity
  coefficient -- ride along a leading instance axis of the :class:`TrainState` and the step
  is ``vmap``-ped over it. The coefficient works as data because every penalised loss is
  ``mse + penalty_scale * coefficient * penalty``: instances share a config whose
  coefficient is 1 and carry theirs as ``HParams.penalty_multiplier``
  (``(warm-up * c) * 1 * penalty`` is bit-identical to the single run's
  ``(warm-up * 1) * c * penalty``).
* Everything that changes *shapes or control flow* -- ``k`` of a top-k SAE, ``d_sae``, the
  architecture -- must be static. Instances are grouped by that static part; each group is
  one ``vmap`` and all groups are traced into the same jitted function, so a sweep over k
  is still one compiled program and one dispatch per step (a k-sweep via a traced k and a
  mask would compute ``k_max`` latents for every instance; grouping keeps each at its cost).

The state of a sweep is a tuple with one stacked :class:`TrainState` per group.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jinterp.sae.config import Architecture, SAEConfig
from jinterp.sae.schedule import DEFAULT_TRAIN, TrainConfig
from jinterp.sae.train_step import Batch, TrainState, _fresh_state, train_step

# The config field each penalised architecture multiplies by LossContext.penalty_scale.
SPARSITY_FIELD: dict[Architecture, str] = {
    Architecture.RELU: "l1_coefficient",
    Architecture.GATED: "l1_coefficient",
    Architecture.JUMPRELU: "l0_coefficient",
}


def _split_static(cfg: SAEConfig) -> tuple[SAEConfig, float]:
    """(config with its sparsity coefficient set to 1, that coefficient) -- or (cfg, 1.0)."""
    field = SPARSITY_FIELD.get(cfg.architecture)
    if field is None:
        return cfg, 1.0
    return dataclasses.replace(cfg, **{field: 1.0}), float(getattr(cfg, field))


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """How the instances of a sweep are grouped into vmapped programs.

    Attributes:
        configs: the instances' configs, in the user's order.
        groups: one ``(shared static config, instance indices)`` pair per vmapped group.
        multipliers: each instance's sparsity coefficient (its penalty multiplier).
    """

    configs: tuple[SAEConfig, ...]
    groups: tuple[tuple[SAEConfig, tuple[int, ...]], ...]
    multipliers: tuple[float, ...]

    @property
    def n_instances(self) -> int:
        return len(self.configs)

    def locate(self, i: int) -> tuple[int, int]:
        """(group index, position inside the group) of instance ``i``."""
        for g, (_, members) in enumerate(self.groups):
            if i in members:
                return g, members.index(i)
        raise IndexError(f"instance {i} out of range for a sweep of {self.n_instances}")


def plan_sweep(configs: Sequence[SAEConfig]) -> SweepPlan:
    """Groups SAE configs into as few vmapped programs as their static fields allow."""
    configs = tuple(configs)
    if not configs:
        raise ValueError("a sweep needs at least one SAEConfig")
    d_ins = {c.d_in for c in configs}
    if len(d_ins) != 1:
        raise ValueError(f"all SAEs of a sweep read the same batches, so d_in must agree; got "
                         f"{sorted(d_ins)}")
    groups: dict[SAEConfig, list[int]] = {}
    multipliers = []
    for i, cfg in enumerate(configs):
        static, coefficient = _split_static(cfg)
        groups.setdefault(static, []).append(i)
        multipliers.append(coefficient)
    return SweepPlan(configs=configs, groups=tuple((c, tuple(m)) for c, m in groups.items()),
                     multipliers=tuple(multipliers))


def _per_instance(value, n: int, name: str) -> list:
    values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value] * n
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries for a sweep of {n} instances")
    return values


def sweep_state(plan: SweepPlan, seeds: Sequence[int] | int, *, lr: Sequence[float] | float,
                tcfg: TrainConfig = DEFAULT_TRAIN, norm_scale: float = 1.0
                ) -> tuple[TrainState, ...]:
    """Fresh states for every instance, stacked per group.

    Instance ``i`` starts as ``train_state(configs[i], seeds[i], lr=lr[i])`` would (the same
    init, vmapped over the group), so a sweep reproduces the one-by-one runs.

    Args:
        plan: from :func:`plan_sweep`.
        seeds: one integer seed per instance (or one for all: then all start identical).
        lr: one learning rate per instance, or one for all.
        tcfg: training options (must be the one passed to :func:`make_sweep_step`).
        norm_scale: input scale shared by all instances (they read the same data).
    """
    n = plan.n_instances
    seeds, lrs = _per_instance(seeds, n, "seeds"), _per_instance(lr, n, "lr")
    for value in lrs:
        if not value > 0:
            raise ValueError(f"learning rates must be positive, got {lrs}")
    scale = jnp.float32(norm_scale)
    states = []
    for cfg, members in plan.groups:
        keys = jnp.stack([jax.random.PRNGKey(int(seeds[i])) for i in members])
        lr_arr = jnp.asarray([lrs[i] for i in members], jnp.float32)
        mult = jnp.asarray([plan.multipliers[i] for i in members], jnp.float32)
        fresh = functools.partial(_fresh_state, cfg, tcfg, norm_scale=scale,
                                  target_norm_scale=scale, params=None)
        states.append(jax.vmap(fresh)(keys, lr_arr, mult))
    return tuple(states)


def sweep_step(plan: SweepPlan, tcfg: TrainConfig, states: tuple[TrainState, ...], batch: Batch,
               mesh: jax.sharding.Mesh | None = None):
    """One step of every instance on the same batch (un-jitted, pure).

    Returns the new states and a metrics dict of ``[n_instances]`` float32 arrays in the
    user's instance order (NaN for instances whose architecture lacks that metric).
    """
    new_states, group_metrics = [], []
    for (cfg, members), state in zip(plan.groups, states):
        step = functools.partial(train_step, cfg, tcfg, mesh=mesh)
        if len(members) == 1:  # no vmap for a group of one: on CPU the vmapped TopK step
            # (batched gathers / scatters of the sparse VJPs) ran 5-10x slower than the step
            one, metrics = step(jax.tree.map(lambda x: x[0], state), batch)
            new_state = jax.tree.map(lambda x: x[None], one)
            metrics = jax.tree.map(lambda x: x[None], metrics)
        else:
            new_state, metrics = jax.vmap(step, in_axes=(0, None))(state, batch)
        new_states.append(new_state)
        group_metrics.append(metrics)
    return tuple(new_states), _merge_metrics(plan, group_metrics)


def _merge_metrics(plan: SweepPlan, group_metrics: list[dict]) -> dict[str, jax.Array]:
    """Per-instance metrics in the user's order; NaN where an architecture lacks a metric."""
    order = np.argsort(np.concatenate([np.asarray(m) for _, m in plan.groups]))
    keys = sorted(set.union(*(set(m) for m in group_metrics)))

    def column(metrics, members, key):
        if key in metrics:
            return metrics[key].astype(jnp.float32)
        return jnp.full((len(members),), jnp.nan, jnp.float32)

    return {k: jnp.concatenate([column(m, members, k) for m, (_, members)
                                in zip(group_metrics, plan.groups)])[order] for k in keys}


def make_sweep_step(plan: SweepPlan, tcfg: TrainConfig = DEFAULT_TRAIN, *,
                    mesh: jax.sharding.Mesh | None = None, donate: bool = True
                    ) -> Callable[[tuple[TrainState, ...], Batch],
                                  tuple[tuple[TrainState, ...], dict]]:
    """A jitted ``step(states, batch) -> (states, metrics[n_instances])`` for the sweep."""
    return jax.jit(functools.partial(sweep_step, plan, tcfg, mesh=mesh),
                   donate_argnums=(0,) if donate else ())


def make_sweep_loop(plan: SweepPlan, tcfg: TrainConfig = DEFAULT_TRAIN, *,
                    mesh: jax.sharding.Mesh | None = None, donate: bool = True):
    """A jitted ``loop(states, batches[n_steps, batch, d_in])`` scanning :func:`sweep_step`;
    metrics come back as ``[n_steps, n_instances]``."""

    def loop(states, batches):
        return jax.lax.scan(lambda s, b: sweep_step(plan, tcfg, s, b, mesh=mesh), states, batches)

    return jax.jit(loop, donate_argnums=(0,) if donate else ())


def instance_state(plan: SweepPlan, states: tuple[TrainState, ...], i: int) -> TrainState:
    """The training state of instance ``i`` alone (e.g. to save or to keep training it).

    Its ``hparams.penalty_multiplier`` holds the instance's sparsity coefficient and its
    params belong to ``plan.configs[i]``; the coefficient is restored to the config, and the
    multiplier reset to 1, so the state continues exactly under ``make_train_step(configs[i])``.
    """
    g, j = plan.locate(i)
    state = jax.tree.map(lambda leaf: leaf[j], states[g])
    hparams = state.hparams.replace(penalty_multiplier=jnp.ones((), jnp.float32))
    return state.replace(hparams=hparams)
