"""The reading study end to end: train two models, run every reading method, summarise.

Steps (:data:`STEPS`, one progress-bar tick each): train the 2-layer induction model and the
4-layer LayerNorm model (:mod:`.train`, resumable); direct logit attribution
(:mod:`.attribution`), the logit lens on both models and the tuned lens on the deeper one
(:mod:`.lenses`), probes (:mod:`.probing`), difference-in-means ablation and steering
(:mod:`.directions`), composition scores (:mod:`.circuits`) and weight processing
(:mod:`.processing`). Each returns JSON-ready numbers; the figures (:mod:`.plots`) are drawn
from the summary alone.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable

import jax
import numpy as np

from jinterp.experiments.induction.data import DataConfig, sample_batch
from jinterp.experiments.induction.train import METRICS, TrainConfig, run_training
from jinterp.experiments.reading import (
    attribution,
    circuits,
    directions,
    lenses,
    probing,
    processing,
)
from jinterp.experiments.reading.data import repeated_probe
from jinterp.experiments.reading.train import NormTrainConfig
from jinterp.lens import TunedLensConfig
from jinterp.probes import ProbeConfig

STEPS = ("train induction model", "train LayerNorm model", "direct logit attribution",
         "logit lens", "tuned lens", "probes", "steering", "composition", "weight processing")


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Everything a run depends on; ``full()`` is the study, ``fast()`` a smoke run for tests.

    Attributes:
        induction: the 2-layer attention-only model (:mod:`jinterp.experiments.induction`).
        norm: the deeper model with LayerNorm and MLPs, same task.
        train_norm: train it (``fast()``: no, the smoke run reads it at its initialisation;
            none of its checks needs training, and its training program is the costliest
            compile of the run).
        probe_half_len / probe_batch: the ``r r`` probe (DLA, logit lens, composition scores).
        lens: tuned-lens training; ``n_lens_train`` / ``n_lens_eval`` sequences.
        probe: the linear probe; ``n_probe_examples`` sequences, read at ``probe_positions``.
        steering: contrast sets and sweeps.
        window: steps over which the final training losses are averaged.
    """

    induction: TrainConfig
    norm: NormTrainConfig
    train_norm: bool = True
    probe_half_len: int = 24
    probe_batch: int = 64
    lens: TunedLensConfig = TunedLensConfig(steps=200, batch_size=32, lr=1e-2)
    n_lens_train: int = 512
    n_lens_eval: int = 128
    probe: ProbeConfig = ProbeConfig()
    n_probe_examples: int = 2048
    probe_positions: tuple[int, ...] = (4, 14, 24, 34, 44, 54)
    steering: directions.SteeringConfig = directions.SteeringConfig()
    window: int = 100

    def __post_init__(self):
        n_ctx = self.induction.data.n_ctx
        if dataclasses.replace(self.norm.data, batch_size=self.induction.data.batch_size) != \
                self.induction.data:
            raise ValueError("Both models train on one task: norm.data must equal "
                             "induction.data (the batch size may differ).")
        if not 2 <= 2 * self.probe_half_len <= n_ctx:
            raise ValueError(f"The r r probe needs 2 <= 2 * probe_half_len <= n_ctx={n_ctx}; got "
                             f"probe_half_len={self.probe_half_len}.")
        st, n_prompt = self.steering, self.steering.half_len + self.steering.answer_at + 1
        if n_prompt > n_ctx or max(st.answers) >= self.induction.data.d_vocab:
            raise ValueError(f"Steering prompts of {n_prompt} tokens must fit n_ctx={n_ctx} and "
                             f"the answers {st.answers} the vocabulary.")
        if not self.probe_positions or max(self.probe_positions) >= n_ctx:
            raise ValueError(f"probe_positions must be non-empty and < n_ctx={n_ctx}.")
        if self.induction.n_layers != 2:
            raise ValueError("The composition figure reads layer 0 -> layer 1 of a 2-layer "
                             f"induction model; got n_layers={self.induction.n_layers}.")
        if not 0 < self.window <= min(self.induction.n_steps, self.norm.n_steps):
            raise ValueError("window must be in [1, the shorter training run].")

    @classmethod
    def full(cls, seed: int = 0) -> "StudyConfig":
        data = DataConfig(d_vocab=128, n_ctx=64, subseq_len=16, n_repeats=3, batch_size=32)
        induction = TrainConfig(n_steps=1500, steps_per_call=100, seed=seed, data=data)
        # Batch 16 and d_mlp = 2 d_model keep its training near 3 CPU-minutes; init 0.1 (as the
        # induction model's) escapes the ln(d_vocab) plateau within ~1.4k steps (0.02 did not
        # in 1.6k) and reaches ~0.4 nats on repeated tokens by 1.6k.
        norm = NormTrainConfig(n_layers=4, d_model=64, n_heads=4, d_head=16, d_mlp=128,
                               init_range=0.1, n_steps=1600, steps_per_call=100, seed=seed,
                               data=dataclasses.replace(data, batch_size=16))
        return cls(induction=induction, norm=norm,
                   steering=directions.SteeringConfig(seed=seed))

    @classmethod
    def fast(cls, seed: int = 0) -> "StudyConfig":
        data = DataConfig(d_vocab=16, n_ctx=24, subseq_len=6, n_repeats=3, batch_size=16)
        induction = TrainConfig(d_model=32, n_heads=2, d_head=16, n_steps=400, steps_per_call=100,
                                lr=1e-2, warmup_steps=10, seed=seed, data=data)
        norm = NormTrainConfig(n_layers=3, d_model=32, n_heads=2, d_head=16, d_mlp=64,
                               init_range=0.02, n_steps=50, steps_per_call=50, warmup_steps=10,
                               seed=seed, data=data)
        return cls(induction=induction, norm=norm, train_norm=False, probe_half_len=8,
                   probe_batch=16, lens=TunedLensConfig(steps=20, batch_size=8, lr=1e-2),
                   n_lens_train=32, n_lens_eval=16, probe=ProbeConfig(steps=100, method="adam"),
                   n_probe_examples=128,
                   probe_positions=(4, 12, 20),
                   steering=directions.SteeringConfig(half_len=8, answer_at=3, n_prompts=16,
                                                    n_random=4, scales=(0.0, 0.5, 1.0, 2.0),
                                                    seed=seed),
                   window=20)


class _Steps:
    """Starts named steps (calling ``tick``) and records each one's wall time in seconds."""

    def __init__(self, tick: Callable[[str], None] | None):
        self.tick = tick or (lambda name: None)
        self.times: dict[str, float] = {}
        self.name: str | None = None
        self.start = 0.0

    def __call__(self, name: str) -> None:
        if name not in STEPS:
            raise ValueError(f"Unknown step {name!r}; steps are {STEPS}.")
        self.close()
        self.tick(name)
        self.name, self.start = name, time.perf_counter()

    def close(self) -> None:
        if self.name is not None:
            self.times[self.name] = round(time.perf_counter() - self.start, 1)
            self.name = None


def _tail_mean(state: dict, column: str, window: int) -> float:
    return round(float(np.asarray(state["history"])[-window:, METRICS.index(column)].mean()), 4)


def run_study(cfg: StudyConfig, out_dir: str,
              tick: Callable[[str], None] | None = None,
              train_progress: Callable[[str, int, dict], None] | None = None) -> dict:
    """Runs every step; returns the JSON summary.

    Args:
        out_dir: checkpoints go under ``out_dir/checkpoints`` (a rerun resumes the training).
        tick: called with each step's name when it starts (a progress bar).
        train_progress: called as ``(model label, steps done, state)`` during training.
    """
    steps = _Steps(tick)
    states = {}
    for label, name, tcfg in (("induction", STEPS[0], cfg.induction),
                              ("norm", STEPS[1], cfg.norm)):
        steps(name)
        if label == "norm" and not cfg.train_norm:
            key = jax.random.split(jax.random.key(tcfg.seed, impl=tcfg.prng_impl))[0]
            states[label] = {"params": jax.jit(tcfg.model().init)(key)}  # as init_state does
            continue
        report = None if train_progress is None else (
            lambda done, state, label=label: train_progress(label, done, state))
        states[label] = run_training(tcfg, os.path.join(out_dir, "checkpoints", label),
                                     progress=report)
    m2, p2 = cfg.induction.model(), states["induction"]["params"]
    m4, p4 = cfg.norm.model(), states["norm"]["params"]
    data = cfg.induction.data
    k_probe, k_lens, k_probes = jax.random.split(jax.random.key(cfg.induction.seed + 1,
                                                                impl="rbg"), 3)
    probe, repeated = repeated_probe(k_probe, data.d_vocab, cfg.probe_half_len, cfg.probe_batch)
    summary: dict = {"ln_vocab": math.log(data.d_vocab), "training": {
        label: {"final_loss": _tail_mean(s, "loss", cfg.window),
                "final_loss_repeated": _tail_mean(s, "loss_predictable", cfg.window),
                "final_loss_random": _tail_mean(s, "loss_random", cfg.window)}
        for label, s in states.items() if "history" in s}}

    steps("direct logit attribution")
    attrs, labels, target = attribution.logit_attributions(m2, p2, probe)
    summary["dla"] = attribution.attribution_summary(attrs, labels, target, repeated)
    steps("logit lens")
    summary["logit_lens"] = {"induction": lenses.logit_lens_curves(m2, p2, probe, repeated),
                             "norm": lenses.logit_lens_curves(m4, p4, probe, repeated)}
    steps("tuned lens")
    lens_tokens, _ = sample_batch(k_lens, data, cfg.n_lens_train + cfg.n_lens_eval)
    lens_tokens = np.asarray(lens_tokens)
    summary["tuned_lens"] = lenses.tuned_lens_curves(
        m4, p4, lens_tokens[: cfg.n_lens_train], lens_tokens[cfg.n_lens_train:], cfg.lens)
    steps("probes")
    probe_tokens, _ = sample_batch(k_probes, data, cfg.n_probe_examples)
    summary["probes"] = probing.probe_study(m2, p2, np.asarray(probe_tokens),
                                            list(cfg.probe_positions), cfg.probe,
                                            seed=cfg.induction.seed)
    steps("steering")
    summary["steering"] = directions.steering_study(m2, p2, cfg.steering, data.d_vocab, probe,
                                                  cfg.probe_half_len)
    steps("composition")
    summary["composition"] = circuits.composition_study(m2, p2, probe, cfg.probe_half_len,
                                                        seed=cfg.induction.seed)
    steps("weight processing")
    summary["weight_processing"] = processing.processing_study(m4, p4, probe[:16])
    steps.close()
    summary["runtime_s"] = steps.times
    return summary
