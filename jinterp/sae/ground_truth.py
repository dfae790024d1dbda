"""Ground-truth check of SAE training: do trained SAEs recover a planted dictionary?

Activations are generated from known unit feature directions in superposition
(:mod:`jinterp.sae.synthetic`: sparse non-negative coefficients with power-law firing
frequencies). Several SAEs -- typically one per architecture -- are trained on the same
stream in one compiled sweep (:mod:`jinterp.sae.sweep`), and each is scored by the fraction
of true features whose best-matching decoder row has cosine >= 0.9.

Batches are generated on the device inside the compiled chunk function from
``fold_in(seed, chunk)``, so a run is deterministic and needs no data on disk.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

import jax
import numpy as np
from tqdm.auto import tqdm

from jinterp.sae import synthetic
from jinterp.sae.config import SAEConfig
from jinterp.sae.schedule import TrainConfig
from jinterp.sae.sweep import instance_state, make_sweep_loop, plan_sweep, sweep_state
from jinterp.sae.trainer import estimate_norm_scale


@dataclasses.dataclass(frozen=True)
class RecoveryResult:
    """Per-SAE outcome of :func:`recover_features`."""

    recovery: float  # fraction of true features with max cosine >= threshold
    mean_max_cosine: float
    l0: float
    fvu: float  # final-step MSE / E||x||^2 in normalised units (uncentred)
    params: dict


def recover_features(configs: Mapping[str, SAEConfig], data: synthetic.SyntheticConfig, *,
                     steps: int, batch_size: int, lr: float | Mapping[str, float],
                     seed: int = 0, steps_per_call: int = 50, threshold: float = 0.9,
                     tcfg: TrainConfig | None = None, progress: bool = False
                     ) -> tuple[dict[str, RecoveryResult], float]:
    """Trains every SAE of ``configs`` on planted-dictionary data and scores recovery.

    Args:
        configs: name -> SAE config (all with ``d_in == data.d``).
        data: the planted dictionary's statistics.
        steps: training steps (rounded down to a multiple of ``steps_per_call``).
        batch_size: tokens per step.
        lr: one learning rate, or one per name.
        seed: seeds the dictionary, the data stream and the SAE inits.
        steps_per_call: steps per compiled call.
        threshold: cosine needed for a true feature to count as recovered.
        tcfg: training options; default: Anthropic-style schedule over ``steps``.
        progress: show a tqdm bar over the compiled chunks.

    Returns:
        (name -> :class:`RecoveryResult`, training seconds).
    """
    names = list(configs)
    plan = plan_sweep([configs[n] for n in names])
    tcfg = tcfg or TrainConfig(total_steps=steps, lr_decay_steps=steps // 5,
                               penalty_warmup_steps=steps // 20)
    key_dict, key_norm, key_data = jax.random.split(jax.random.PRNGKey(seed), 3)
    dirs = synthetic.make_dictionary(data, key_dict)
    sample_x, _ = synthetic.sample(data, dirs, key_norm, 4 * batch_size)
    scale = estimate_norm_scale(np.asarray(sample_x))
    lrs = [lr[n] if isinstance(lr, Mapping) else lr for n in names]
    states = sweep_state(plan, [seed * 1000 + i for i in range(len(names))], lr=lrs, tcfg=tcfg,
                         norm_scale=scale)

    @jax.jit
    def chunk(i):  # [steps_per_call, batch, d] fresh batches
        keys = jax.random.split(jax.random.fold_in(key_data, i), steps_per_call)
        return jax.vmap(lambda k: synthetic.sample(data, dirs, k, batch_size)[0])(keys)

    loop = make_sweep_loop(plan, tcfg)
    t0 = time.perf_counter()
    for i in tqdm(range(steps // steps_per_call), disable=not progress, unit="chunk",
                  desc=f"{len(names)} SAEs x {steps_per_call} steps"):
        states, metrics = loop(states, chunk(i))
        if progress:  # otherwise async dispatch runs ahead and the bar ends minutes early
            jax.block_until_ready(metrics)
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - t0
    results = {}
    for j, name in enumerate(names):
        params = instance_state(plan, states, j).params
        cos = np.asarray(synthetic.max_cosine(dirs, params["W_dec"]))
        results[name] = RecoveryResult(
            recovery=float(np.mean(cos >= threshold)), mean_max_cosine=float(cos.mean()),
            l0=float(metrics["l0"][-1, j]), fvu=float(metrics["mse"][-1, j]) / data.d,
            params=params)
    return results, seconds
