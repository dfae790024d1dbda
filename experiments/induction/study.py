"""The induction-heads study end to end: train 2-layer and 1-layer models, analyse, summarise.

Pipeline: train the 2-layer attention-only model and the identically trained 1-layer control
(:mod:`.train`, resumable); locate the phase change on the predictable-token loss
(:mod:`.phase`); score every head at every snapshot on the ``r r`` probe (one vmapped call over
snapshots), and read the scores *before* (the snapshot where the drop starts) and *after*
(final parameters); weight-based OV copying and K-composition scores (:mod:`.scores`); the
vmapped patching / ablation sweeps (:mod:`.patching`). Returns the JSON summary and the
arrays the figures need.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable

import jax
import numpy as np

from jinterp.experiments.induction import patching, scores
from jinterp.experiments.induction.data import DataConfig, repeated_tokens
from jinterp.experiments.induction.phase import PhaseChange, find_phase_change
from jinterp.experiments.induction.train import METRICS, TrainConfig, run_training


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Everything a run depends on; ``full()`` is the default reproduction, ``fast()`` for tests.

    Attributes:
        train: the 2-layer run; the control is the same with ``n_layers=1``.
        probe_half_len / probe_batch: the ``r r`` probe for scores and patching. Keep
            ``2 * probe_half_len < n_ctx`` and the distance ``probe_half_len`` within the training
            distances between copies: the last position's query never gets a gradient in
            training (it has no target), and a model has no reason to handle longer gaps.
        threshold: a head is reported as an induction / previous-token head above this score.
        window: smoothing window (steps) for the phase-change rule and final losses.
    """

    train: TrainConfig = TrainConfig()
    probe_half_len: int = 24
    probe_batch: int = 64
    threshold: float = 0.4
    window: int = 100

    def __post_init__(self):
        if not 2 <= 2 * self.probe_half_len < self.train.data.n_ctx:
            raise ValueError("The r r probe needs 2 * probe_half_len < "
                             f"n_ctx={self.train.data.n_ctx}; got "
                             f"probe_half_len={self.probe_half_len}.")
        if self.train.n_layers != 2:
            raise ValueError("The study trains a 2-layer model (and a 1-layer control); got "
                             f"n_layers={self.train.n_layers}.")
        if not 0 < self.window <= self.train.n_steps:
            raise ValueError(
                f"window must be in [1, n_steps={self.train.n_steps}]; got {self.window}.")

    @classmethod
    def full(cls, seed: int = 0, n_steps: int = 2500) -> "StudyConfig":
        data = DataConfig(d_vocab=128, n_ctx=64, subseq_len=16, n_repeats=3, batch_size=32)
        return cls(train=TrainConfig(n_steps=n_steps, steps_per_call=100, seed=seed, data=data))

    @classmethod
    def fast(cls, seed: int = 0, n_steps: int = 120) -> "StudyConfig":
        data = DataConfig(d_vocab=32, n_ctx=24, subseq_len=6, n_repeats=3, batch_size=8)
        train_cfg = TrainConfig(d_model=16, n_heads=2, d_head=8, n_steps=n_steps, steps_per_call=40,
                                warmup_steps=10, seed=seed, data=data)
        return cls(train=train_cfg, probe_half_len=8, probe_batch=8, window=20)

    def one_layer(self) -> TrainConfig:
        return dataclasses.replace(self.train, n_layers=1)


def _tail_mean(history: np.ndarray, column: str, window: int) -> float:
    return float(history[-window:, METRICS.index(column)].mean())


def _before_index(phase: PhaseChange | None, cfg: TrainConfig) -> int:
    """Snapshot just before the drop starts (middle of training when there is no drop)."""
    if phase is None:
        return cfg.n_calls // 2
    return max(0, (phase.start - 1) // cfg.steps_per_call)


def score_trajectories(model, snapshots, probe, half_len: int) -> dict[str, np.ndarray]:
    """Induction / previous-token scores at every snapshot, ``[snapshot, layer, n_heads]``.

    One compiled call: the snapshots are a vmapped axis, not a Python loop.
    """
    run = jax.jit(jax.vmap(lambda p: scores.attention_scores(model, p, probe, half_len)))
    return {k: np.asarray(v) for k, v in run(snapshots).items()}


def analyse(cfg: StudyConfig, state2: dict, state1: dict) -> tuple[dict, dict]:
    """Summary (JSON-ready) and figure arrays from the two final training states."""
    tcfg = cfg.train
    model2, model1 = tcfg.model(), cfg.one_layer().model()
    hist2, hist1 = np.asarray(state2["history"]), np.asarray(state1["history"])
    col = METRICS.index("loss_predictable")
    phase2 = find_phase_change(hist2[:, col], window=cfg.window)
    phase1 = find_phase_change(hist1[:, col], window=cfg.window)

    key_probe, key_corrupt = jax.random.split(jax.random.key(tcfg.seed + 1, impl=tcfg.prng_impl))
    probe = repeated_tokens(key_probe, tcfg.data.d_vocab, cfg.probe_half_len, cfg.probe_batch)
    traj2 = score_trajectories(model2, state2["snapshots"], probe, cfg.probe_half_len)
    before = _before_index(phase2, tcfg)
    final1 = scores.attention_scores(model1, state1["params"], probe, cfg.probe_half_len)
    params2 = state2["params"]
    kcomp = np.asarray(scores.layer_k_composition(params2))
    corrupted = patching.corrupt_first_copy(key_corrupt, probe, cfg.probe_half_len,
                                            tcfg.data.d_vocab)
    patch = patching.patching_analysis(model2, params2, probe, corrupted, cfg.probe_half_len)
    patch = {k: np.asarray(v) for k, v in patch.items()}
    arrays = {"history2": hist2, "history1": hist1, "traj_induction": traj2["induction"],
              "traj_previous": traj2["previous_token"], "before": before, "kcomp": kcomp,
              "copying": np.asarray(scores.copying_scores(params2)), "patching": patch,
              "snapshot_steps": np.arange(tcfg.n_calls + 1) * tcfg.steps_per_call,
              "phase2": phase2, "ln_vocab": math.log(tcfg.data.d_vocab)}
    summary = _summarise(cfg, arrays, phase1, np.asarray(final1["induction"]))
    return summary, arrays


def _summarise(cfg: StudyConfig, a: dict, phase1: PhaseChange | None,
               induction1: np.ndarray) -> dict:
    ind_after, prev_after = a["traj_induction"][-1], a["traj_previous"][-1]
    ind_before, prev_before = a["traj_induction"][a["before"]], a["traj_previous"][a["before"]]
    induction = scores.heads_above(ind_after, cfg.threshold)
    previous = scores.heads_above(prev_after, cfg.threshold)
    top_ind = np.unravel_index(np.argmax(ind_after), ind_after.shape)
    composes_with = int(np.argmax(a["kcomp"][:, top_ind[1]])) if top_ind[0] == 1 else None
    patch = a["patching"]
    argmax_head = lambda m: [int(i) for i in np.unravel_index(np.argmax(m), m.shape)]
    phase2, w = a["phase2"], cfg.window
    rounded = lambda x: np.round(np.asarray(x, np.float64), 4).tolist()
    return {
        "phase_change_step": None if phase2 is None else phase2.step,
        "phase_change": (None if phase2 is None
                         else dataclasses.asdict(phase2) | {"width": phase2.width}),
        "one_layer_phase_change_step": None if phase1 is None else phase1.step,
        "induction_heads": [h for h, _ in induction],
        "induction_scores": [round(s, 4) for _, s in induction],
        "previous_token_heads": [h for h, _ in previous],
        "previous_token_scores": [round(s, 4) for _, s in previous],
        "top_induction_head": [int(i) for i in top_ind],
        "top_induction_head_composes_with": None if composes_with is None else [0, composes_with],
        "two_layer_final_loss": _tail_mean(a["history2"], "loss", w),
        "one_layer_final_loss": _tail_mean(a["history1"], "loss", w),
        "two_layer_final_loss_repeated": _tail_mean(a["history2"], "loss_predictable", w),
        "one_layer_final_loss_repeated": _tail_mean(a["history1"], "loss_predictable", w),
        "final_loss_random_tokens": _tail_mean(a["history2"], "loss_random", w),
        "ln_vocab": a["ln_vocab"],
        "one_layer_max_induction_score": float(np.max(induction1)),
        "scores_before_step": int(a["snapshot_steps"][a["before"]]),
        "scores_after_step": int(a["snapshot_steps"][-1]),
        "induction_score_before": rounded(ind_before), "induction_score_after": rounded(ind_after),
        "previous_token_score_before": rounded(prev_before),
        "previous_token_score_after": rounded(prev_after),
        "ov_copying_score": rounded(a["copying"]),
        "k_composition_l0_to_l1": rounded(a["kcomp"]),
        "k_composition_random_baseline": scores.random_composition_baseline(
            jax.random.key(0, impl=cfg.train.prng_impl), cfg.train.d_model, cfg.train.d_head),
        "patching": {
            "clean_loss": float(patch["clean_loss"]),
            "corrupted_loss": float(patch["corrupted_loss"]),
            "ablation_increase": rounded(patch["ablation_increase"]),
            "noising_increase": rounded(patch["noising_increase"]),
            "denoising_recovery": rounded(patch["denoising_recovery"]),
            "top_ablation_head": argmax_head(patch["ablation_increase"]),
            "top_denoising_head": argmax_head(patch["denoising_recovery"]),
            "top_noising_heads_per_layer": [[l, int(np.argmax(patch["noising_increase"][l]))]
                                            for l in range(patch["noising_increase"].shape[0])],
        },
    }


def run_study(cfg: StudyConfig, out_dir: str,
              make_progress: Callable[[str, int], Callable] | None = None) -> tuple[dict, dict]:
    """Trains both models (resuming from ``out_dir/checkpoints``), analyses them.

    Returns ``(summary, arrays)``: the JSON summary and what the figures need.

    ``make_progress(label, total_steps)`` returns a ``progress(done, state)`` callback (e.g. a
    tqdm bar; see :mod:`.cli`).
    """
    start = time.perf_counter()
    states = {}
    for label, tcfg in (("two_layer", cfg.train), ("one_layer", cfg.one_layer())):
        progress = None if make_progress is None else make_progress(label, tcfg.n_steps)
        ckpt_dir = os.path.join(out_dir, "checkpoints", label)
        states[label] = run_training(tcfg, ckpt_dir, progress=progress)
    train_s = time.perf_counter() - start
    summary, arrays = analyse(cfg, states["two_layer"], states["one_layer"])
    total_s = time.perf_counter() - start
    summary["runtime_s"] = {"train": round(train_s, 1), "total": round(total_s, 1)}
    return summary, arrays
