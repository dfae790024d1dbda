"""From a training directory to the study's numbers: phases, key frequencies, progress measures.

:func:`analyse_run` reads ``history/`` (see :mod:`jinterp.experiments.grokking.training`),
analyses every seed and returns a JSON-ready summary whose top-level fields describe the default
(first) seed, next to the paper's numbers for the mainline seed (REFERENCES §1.2-1.3).
"""

from __future__ import annotations

import operator
from typing import Any

import jax
import numpy as np

from jinterp import models

from . import fourier
from .config import GrokConfig
from .data import make_data
from .measures import analyse_neurons, neuron_logit_map, progress_measures

#: Published values for the mainline seed (Nanda et al. 2023, §4-5 and the authors' Colab).
PAPER = {
    "key_frequencies": [14, 35, 41, 42, 52],
    "single_frequency_neuron_fraction": 433 / 512,
    "memorization_end_step": 1400,
    "circuit_formation_end_step": 9400,
    "cleanup_end_step": 14000,
    "final_loss_all_pairs": 2.4122e-7,
}

#: A loss "has dropped" once it is below this many nats (chance is ln p = 4.73 for p = 113).
DROP_THRESHOLD = 1.0


def first_step(steps: np.ndarray, condition: np.ndarray) -> int | None:
    """The first step where ``condition`` holds, or None."""
    hits = np.flatnonzero(condition)
    return int(steps[hits[0]]) if hits.size else None


def seed_params(tree, index: int):
    """One seed of a pytree whose leaves are ``[n_snap, seed, ...]``, as a list per snapshot."""
    one = jax.tree.map(lambda x: x[:, index], tree)
    n = jax.tree.leaves(one)[0].shape[0]
    return [jax.tree.map(operator.itemgetter(i), one) for i in range(n)]


def fallback_frequencies(params, p: int, n: int = 3) -> list[int]:
    """The ``n`` strongest frequencies of ``W_L`` (used only when no neuron cluster exists, e.g. a
    short ``--fast`` run that has not generalised, so the progress measures still run)."""
    W_L = neuron_logit_map(params, p)  # d_mlp p
    norms = fourier.frequency_norms(fourier.neuron_logit_fourier_norms(W_L, p))
    return sorted(int(k) + 1 for k in np.argsort(norms)[::-1][:n])


def analyse_seed(cfg: GrokConfig, history: dict[str, Any], index: int) -> tuple[dict, dict]:
    """``(summary fields, curves)`` of seed number ``index`` of the run."""
    data = make_data(cfg.p, cfg.frac_train, cfg.data_seed)
    model = models.GPT2(cfg.model_config())
    snaps = seed_params(history["snapshots"], index)
    final = snaps[-1]
    neurons = analyse_neurons(model, final, data)
    snap_steps = history["snapshot_steps"]
    evals = {k: history[k][index] for k in history if k.startswith("eval_") and k != "eval_steps"}
    curves = {"snapshot_steps": snap_steps, "eval_steps": history["eval_steps"],
              "train_loss_per_step": history["train_loss"][index], **evals}
    measure_freqs = neurons.key_freqs or fallback_frequencies(final, cfg.p)
    measures = progress_measures(model, snaps, data, measure_freqs)
    curves |= {f"measure_{k}": v for k, v in measures.items()}
    train_acc = history["train_acc"][index]
    eval_steps = history["eval_steps"]
    restricted_below = measures["restricted_loss"] < DROP_THRESHOLD
    test_loss_at_snaps = history["eval_test_loss"][index][np.searchsorted(eval_steps, snap_steps)]
    out = {
        "seed": cfg.seeds[index],
        "steps": int(eval_steps[-1]),
        "train_accuracy": float(history["eval_train_acc"][index, -1]),
        "test_accuracy": float(history["eval_test_acc"][index, -1]),
        "train_loss": float(history["eval_train_loss"][index, -1]),
        "test_loss": float(history["eval_test_loss"][index, -1]),
        "memorization_step": first_step(np.arange(train_acc.size), train_acc >= 1.0),
        "grok_step": first_step(eval_steps, history["eval_test_acc"][index] > 0.95),
        "key_frequencies": neurons.key_freqs,
        "measure_frequencies": measure_freqs,
        "neuron_cluster_sizes": neurons.cluster_sizes(),
        "single_frequency_neuron_fraction": neurons.single_frequency_fraction,
        "neuron_diagnostics": neurons.diagnostics(),
        "restricted_loss_drop_step": first_step(snap_steps, restricted_below),
        "test_loss_drop_step": first_step(snap_steps, test_loss_at_snaps < DROP_THRESHOLD),
    }
    out |= {f"final_{k}": float(v[-1]) for k, v in measures.items()}
    out["checks"] = checks(out)
    return out, curves | {"neuron_fractions": neurons.fractions, "neuron_cluster": neurons.cluster,
                          "neuron_firing_rate": neurons.firing_rate}


def checks(r: dict) -> dict[str, bool]:
    """The issue's acceptance criteria for one seed, each as a boolean."""
    mem, grok = r["memorization_step"], r["grok_step"]
    restricted, test = r["restricted_loss_drop_step"], r["test_loss_drop_step"]
    return {
        "memorises_first": mem is not None and (grok is None or mem < grok),
        "test_accuracy_ge_99pct": r["test_accuracy"] >= 0.99,
        "test_loss_lt_1e-5": r["test_loss"] < 1e-5,
        "groks_after_memorising": mem is not None and grok is not None and grok > mem,
        "3_to_6_key_frequencies": 3 <= len(r["key_frequencies"]) <= 6,
        "ge_80pct_single_frequency_neurons": r["single_frequency_neuron_fraction"] >= 0.8,
        "restricted_loss_drops_before_test_loss": (restricted is not None and test is not None
                                                   and restricted < test),
    }


def across_seeds(per_seed: list[dict]) -> dict[str, Any]:
    """How the seeds of one run spread: the single-frequency fraction and each check's pass count.

    Why: the fraction moves by several points from seed to seed (and with floating-point order),
    so one seed's pass or miss of the 80% line says little; the spread says how the setup behaves.
    """
    fractions = np.array([r["single_frequency_neuron_fraction"] for r in per_seed])
    return {
        "n_seeds": len(per_seed),
        "single_frequency_neuron_fraction": {"median": float(np.median(fractions)),
                                             "min": float(fractions.min()),
                                             "max": float(fractions.max())},
        "checks_passed": {name: sum(bool(r["checks"][name]) for r in per_seed)
                          for name in per_seed[0]["checks"]},
    }


def analyse_run(cfg: GrokConfig, history: dict[str, Any]) -> tuple[dict, list[dict]]:
    """Summary (default seed at top level, every seed under ``"seeds"``, their spread under
    ``"across_seeds"``) and per-seed curves."""
    per_seed, curves = [], []
    for index in range(len(cfg.seeds)):
        result, curve = analyse_seed(cfg, history, index)
        per_seed.append(result)
        curves.append(curve)
    summary = {k: v for k, v in per_seed[0].items()}
    summary["seeds"] = per_seed
    summary["across_seeds"] = across_seeds(per_seed)
    summary["paper_mainline_seed"] = PAPER
    summary["drop_threshold_nats"] = DROP_THRESHOLD
    return summary, curves
