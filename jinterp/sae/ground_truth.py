"""Ground-truth check of SAE training: do trained SAEs recover a planted dictionary?

Activations are generated from known unit feature directions in superposition
(:mod:`jinterp.sae.synthetic`: sparse non-negative coefficients with power-law firing
frequencies). Several SAEs -- typically one per architecture -- are trained on the same
stream in one compiled sweep (:mod:`jinterp.sae.sweep`), and each is scored by the fraction
of true features whose best-matching decoder row has cosine >= 0.9.

Batches are generated on the device inside the compiled chunk function from
``fold_in(seed, chunk)``, so a run is deterministic and needs no data on disk.

:data:`PROBLEMS` holds three sizes with the recipes that solve them (:func:`configs`) and
:func:`solve` trains all seven architectures on one: ``"test"`` (64 features in 32
dimensions, 600 steps, the unit test), ``"small"`` (128 in 32, the unit test until 2026-11) and
``"full"`` (1024 in 256, 8 active; ``benchmarks/bench_sae_ground_truth.py``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from types import MappingProxyType

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


# ----------------------------------------------------------------------------- problems
ARCHITECTURES = ("relu", "topk", "batchtopk", "jumprelu", "gated", "matryoshka", "switch")


@dataclasses.dataclass(frozen=True)
class Problem:
    """A planted dictionary, an SAE width and the training budget that recovers it.

    Attributes:
        data: the planted dictionary's statistics.
        d_sae: latents of every SAE.
        batch_size: tokens per step.
        steps: training steps per architecture (name -> steps).
        lr: learning rate per architecture (name -> lr).
        gated_l1: Gated's L1 coefficient.
        jumprelu_threshold: JumpReLU's initial threshold, also its STE bandwidth.
    """

    data: synthetic.SyntheticConfig
    d_sae: int
    batch_size: int
    steps: Mapping[str, int]
    lr: Mapping[str, float]
    gated_l1: float = 3.0
    jumprelu_threshold: float = 0.05


def _each(value: int | float, **overrides: int | float) -> Mapping[str, int | float]:
    return MappingProxyType({name: overrides.get(name, value) for name in ARCHITECTURES})


PROBLEMS: Mapping[str, Problem] = MappingProxyType({
    # 2x overcomplete, 1 active of 32 dimensions (3%, the full size's interference level):
    # 600 steps recover >= 0.93 of the features for every architecture (seeds 0-2), while a
    # decoder or encoder that is not updated, or a 10x smaller learning rate, fails.
    "test": Problem(synthetic.SyntheticConfig(n_features=64, d=32, mean_active=1.0), d_sae=256,
                    batch_size=256, steps=_each(600), lr=_each(3e-2), gated_l1=5.0,
                    jumprelu_threshold=0.5),
    # 4x overcomplete, 2 active of 32 (6%); relu, topk and switch learn it in 1500 steps.
    "small": Problem(synthetic.SyntheticConfig(n_features=128, d=32, mean_active=2.0),
                     d_sae=512, batch_size=1024,
                     steps=_each(6000, relu=1500, topk=1500, switch=1500),
                     lr=_each(1e-2, jumprelu=3e-3)),
    "full": Problem(synthetic.SyntheticConfig(n_features=1024, d=256, mean_active=8.0),
                    d_sae=4096, batch_size=1024, steps=_each(4000), lr=_each(3e-3)),
})


def configs(problem: Problem) -> dict[str, SAEConfig]:
    """The seven architectures' recipes for ``problem`` (choices beyond the defaults):

    * batchtopk / matryoshka: AuxK weight 1 (SAELens's default; Gao's 1/32 revives the
      latents that batch-level selection starves too slowly).
    * matryoshka: two nested widths (d_sae / 2, d_sae); with five starting at d_sae / 16 the
      early latents learn blends of the flat (non-hierarchical) features.
    * gated and jumprelu: the dead-latent pre-activation loss (``pre_act_loss_coefficient``);
      an L1/L0-gated latent that never opens gets no other gradient.
    * switch: 4 experts of d_sae / 4 >= n_features latents: any token may carry any feature,
      so one expert must be able to hold them all (8 experts of 512 for 1024 features
      recovered only 0.75).
    """
    d, d_sae = problem.data.d, problem.d_sae
    k = max(1, round(problem.data.mean_active))
    dead = 20 * problem.batch_size  # tokens without firing before AuxK / pre-act loss act
    return {
        "relu": SAEConfig("relu", d_in=d, d_sae=d_sae, l1_coefficient=1.0),
        "topk": SAEConfig("topk", d_in=d, d_sae=d_sae, k=k, dead_after_tokens=dead),
        "batchtopk": SAEConfig("batchtopk", d_in=d, d_sae=d_sae, k=k, dead_after_tokens=dead,
                               aux_k_coefficient=1.0),
        "jumprelu": SAEConfig("jumprelu", d_in=d, d_sae=d_sae, l0_coefficient=1.0,
                              jumprelu_bandwidth=problem.jumprelu_threshold,
                              jumprelu_init_threshold=problem.jumprelu_threshold,
                              dead_after_tokens=dead, pre_act_loss_coefficient=0.1),
        "gated": SAEConfig("gated", d_in=d, d_sae=d_sae, l1_coefficient=problem.gated_l1,
                           dead_after_tokens=dead, pre_act_loss_coefficient=1.0),
        "matryoshka": SAEConfig("matryoshka", d_in=d, d_sae=d_sae, k=k, dead_after_tokens=dead,
                                aux_k_coefficient=1.0, matryoshka_prefixes=(d_sae // 2,)),
        "switch": SAEConfig("switch", d_in=d, d_sae=d_sae, k=k, n_experts=4),
    }


def solve(problem: Problem, *, seed: int = 0, only: tuple[str, ...] | None = None,
          steps: int | None = None, progress: bool = False
          ) -> tuple[dict[str, RecoveryResult], float]:
    """Trains the architectures of :func:`configs` on ``problem``: one compiled sweep per
    distinct step count. Returns (name -> result, training seconds of all sweeps).

    Args:
        problem: e.g. ``PROBLEMS["test"]``.
        seed: seeds the dictionary, the data and the inits.
        only: a subset of architectures (default all seven).
        steps: one step count for all (default: the problem's per-architecture steps).
        progress: tqdm bars.
    """
    cfgs = configs(problem)
    names = tuple(cfgs) if only is None else only
    unknown = sorted(set(names) - set(cfgs))
    if unknown:
        raise ValueError(f"unknown architectures {unknown}; choose from {sorted(cfgs)}")
    by_steps: dict[int, list[str]] = {}
    for name in names:
        by_steps.setdefault(problem.steps[name] if steps is None else steps, []).append(name)
    results, seconds = {}, 0.0
    for n_steps, group in by_steps.items():
        out, secs = recover_features({n: cfgs[n] for n in group}, problem.data, steps=n_steps,
                                     batch_size=problem.batch_size,
                                     lr={n: problem.lr[n] for n in group}, seed=seed,
                                     progress=progress)
        results.update(out)
        seconds += secs
    return {n: results[n] for n in names}, seconds
