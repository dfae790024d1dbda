"""The circuit study end to end: train, localise, path-patch, discover, check.

1. Train the induction study's 2-layer attention-only model (resumable orbax checkpoints under
   ``out/checkpoints``) and read the reference from its attention patterns: induction heads
   (layer 1, prefix-matching score above the threshold) and previous-token heads (layer 0).
2. Localise (:mod:`.localise`): compiled denoising sweeps and AtP* on ``r r`` / ``r' r``.
3. Path-patch (:mod:`.paths`) every head into the induction heads' keys, queries and values.
4. Discover the circuit (:mod:`.discover`): ACDC and a learned edge mask, with faithfulness.
5. Check the causal results against the reference (:func:`checks`).

The fast mode (``CircuitConfig.fast()``) replaces step 1 by the hand-built circuit of
:mod:`.planted` and runs only what the checks read, so its checks test the pipeline against a
known answer.

Each step reports to a progress bar: ``progress(label, total)`` returns a ``tick(name, n=1)``
callback that advances it by ``n`` (training ticks once per compiled call of
``steps_per_call`` steps). :func:`run_study` returns the JSON-ready summary and the arrays
the figures need.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import jax
import numpy as np

import jinterp
from jinterp.experiments.circuits import discover, localise, paths, planted, task
from jinterp.experiments.circuits.config import CircuitConfig
from jinterp.experiments.induction import scores
from jinterp.experiments.induction.phase import find_phase_change
from jinterp.experiments.induction.train import METRICS, run_training

Progress = Callable[[str, int], Callable[..., None]]
EVERY_NAMES = localise.EVERY_ROWS


def _quiet(label: str, total: int) -> Callable[..., None]:
    return lambda name, n=1: None


def reference_heads(model, params, clean, half_len: int, threshold: float) -> dict:
    """Induction / previous-token heads from the attention patterns of the clean prompts."""
    s = {k: np.asarray(v) for k, v in scores.attention_scores(model, params, clean,
                                                               half_len).items()}
    induction = [int(h) for h in np.argsort(-s["induction"][1]) if s["induction"][1, h] > threshold]
    previous = [int(h) for h in np.argsort(-s["previous_token"][0])
                if s["previous_token"][0, h] > threshold]
    return {"induction_score": s["induction"], "previous_token_score": s["previous_token"],
            "induction_heads": induction, "previous_token_heads": previous}


DIRECT_TOLERANCE = 1e-3  # sweeps vs one run_with_hooks each (float32 on the 0..1 metric)


def checks(ref: dict, sweeps: dict, path: dict, found: dict, direct: dict) -> dict:
    """The study's claims, each a boolean with the numbers behind it.

    - ``induction_heads_found_by_patching``: the layer-1 heads whose corrupted *key* costs at
      least half as much as the costliest one's (noising, ``1 - metric``) are exactly the heads
      with induction attention patterns;
    - ``previous_token_head_found``: the layer-0 head whose path into the induction heads'
      keys matters most is the head with the highest previous-token score, and corrupting its
      output costs the most of any layer-0 head;
    - ``k_path_dominates``: that head's path into K has a larger effect than into Q or V;
    - ``circuit_contains_k_edge``: ACDC's circuit keeps previous-token head -> an induction
      head's key;
    - ``sweeps_match_direct_patches``: the compiled sweeps' entries for those heads (and one
      residual position) equal a plain ``run_with_hooks`` patch of the same node.
    """
    k_cost = localise.head_cost(sweeps, "k")[1]
    by_k = [int(h) for h in np.flatnonzero(k_cost >= 0.5 * k_cost.max())] if k_cost.max() > 0 \
        else []
    prev_by_path = int(np.argmax(path["into_k"][0]))
    prev_by_out = int(np.argmax(localise.head_cost(sweeps, "out")[0]))
    prev_by_score = int(np.argmax(ref["previous_token_score"][0]))
    k, q, v = (float(path[f"into_{x}"][0, prev_by_path]) for x in ("k", "q", "v"))
    acdc = found["acdc"]
    return {
        "induction_heads_found_by_patching": bool(by_k)
        and sorted(by_k) == sorted(ref["induction_heads"]),
        "induction_heads_by_patching": sorted(by_k),
        "induction_heads_by_attention": sorted(ref["induction_heads"]),
        "previous_token_head_found": prev_by_path == prev_by_score == prev_by_out,
        "previous_token_head_by_path_patching": [0, prev_by_path],
        "previous_token_head_by_noising_output": [0, prev_by_out],
        "previous_token_head_by_attention": [0, prev_by_score],
        "path_effect_prev_to_induction_k": round(k, 4),
        "path_effect_prev_to_induction_q": round(q, 4),
        "path_effect_prev_to_induction_v": round(v, 4),
        "k_path_dominates": k > max(q, v),
        "circuit_contains_k_edge": any(acdc["k_edges"].values()),
        "faithfulness": round(acdc["faithfulness"], 4),
        "sweeps_match_direct_patches": direct["max_abs_diff"] < DIRECT_TOLERANCE,
        "sweeps_vs_direct_max_abs_diff": direct["max_abs_diff"],
    }


def model_and_params(cfg: CircuitConfig, out_dir: str, progress: Progress) -> tuple:
    """Step 1: ``(model, params, history or None, phase change or None)``."""
    tcfg = cfg.train
    if cfg.planted:
        tick = progress("1/5 planted model (no training)", 1)
        model, params = planted.planted_model(tcfg.data.d_vocab, tcfg.data.n_ctx, tcfg.n_heads,
                                              seed=tcfg.seed)
        tick("planted")
        return model, params, None, None
    tick = progress("1/5 train", tcfg.n_steps)
    state = run_training(tcfg, os.path.join(out_dir, "checkpoints"),
                         progress=lambda done, st: tick(
                             f"loss {float(st['history'][done - 1, 0]):.3f}",
                             tcfg.steps_per_call))
    history = np.asarray(state["history"])
    phase = find_phase_change(history[:, METRICS.index("loss_predictable")],
                              window=min(100, tcfg.n_steps))
    return tcfg.model(), state["params"], history, phase


def run_study(cfg: CircuitConfig, out_dir: str,
              progress: Progress = _quiet) -> tuple[dict, dict]:
    """Runs steps 1-5; returns ``(summary, arrays)`` (see module docstring)."""
    times, cpu, start, cpu_start = {}, {}, time.perf_counter(), time.process_time()
    tcfg, full = cfg.train, cfg.every_analysis
    model, params, history, phase = model_and_params(cfg, out_dir, progress)
    times["train"], cpu["train"] = time.perf_counter() - start, time.process_time() - cpu_start

    t, c = time.perf_counter(), time.process_time()
    key = jax.random.key(tcfg.seed + 7, impl=tcfg.prng_impl)
    clean, corrupted = task.make_prompts(key, tcfg.data.d_vocab, cfg.half_len, cfg.batch)
    ref = reference_heads(model, params, clean, cfg.half_len, cfg.score_threshold)
    metric = task.make_metric(model, params, clean, corrupted, cfg.half_len)
    sweeps = localise.run_sweeps(model, params, clean, corrupted, metric, full=full,
                                 chunk_size=cfg.chunk_size,
                                 tick=progress("2/5 localise", len(localise.sweep_names(full))))
    correlations = {row: localise.rank_correlation(localise.head_cost(sweeps, row),
                                                   localise.head_cost(sweeps, row, atp=True))
                    for row in (EVERY_NAMES if full else ("k",))}
    times["localise"], cpu["localise"] = time.perf_counter() - t, time.process_time() - c

    t, c = time.perf_counter(), time.process_time()
    k_cost = localise.head_cost(sweeps, "k")
    induction = ref["induction_heads"] or localise.top_heads(k_cost, 1, -math.inf)[:1]
    path = paths.path_effects(model, params, clean, corrupted, metric, induction, per_head=full,
                              chunk_size=cfg.chunk_size,
                              tick=progress("3/5 path patching", paths.n_steps(induction, full)))
    prev_head = int(np.argmax(path["into_k"][0]))
    times["path_patching"], cpu["path_patching"] = time.perf_counter() - t, time.process_time() - c
    resid = (1, int(np.argmax(sweeps["resid_pre"][1])))
    direct = localise.direct_patches(model, params, clean, corrupted, metric, sweeps,
                                     [("out", 0, prev_head), ("k", 1, induction[0])], resid)

    t, c = time.perf_counter(), time.process_time()
    found = discover.discover_circuits(
        model, params, clean, corrupted, metric, acdc_threshold=cfg.acdc_threshold,
        sparsity=cfg.mask_sparsity, steps=cfg.mask_steps, lr=cfg.mask_lr, seed=tcfg.seed,
        prev_head=prev_head, induction_heads=induction, edge_mask=full,
        chunk_size=cfg.chunk_size, tick=progress("4/5 circuit discovery", discover.n_steps(full)))
    times["discovery"], cpu["discovery"] = time.perf_counter() - t, time.process_time() - c

    _, clean_cache = jinterp.run_with_cache(model, params, clean[:1],
                                            names=lambda n: n.endswith("attn.hook_pattern"))
    arrays = {
        "history": history, "phase_step": None if phase is None else phase.step,
        "ln_vocab": math.log(tcfg.data.d_vocab), "half_len": cfg.half_len,
        "patterns": np.asarray(clean_cache.stack("attn.hook_pattern"))[:, 0],
        "prompt_tokens": [f"#{int(i)}" for i in np.asarray(clean[0])],
        "sweeps": sweeps, "paths": path, "discovery": found, "atp_rows": tuple(correlations),
        "atp_correlations": correlations, "induction_heads": induction,
        "top_induction_head": int(np.argmax(ref["induction_score"][1])), "n_heads": tcfg.n_heads,
    }
    summary = _summary(cfg, ref, sweeps, path, found, metric, phase, history, correlations,
                       direct)
    summary["runtime_s"] = {k: round(v, 1) for k, v in times.items()}
    summary["runtime_s"]["total_before_report"] = round(time.perf_counter() - start, 1)
    summary["cpu_s"] = {k: round(v, 1) for k, v in cpu.items()}  # this process, all threads
    return summary, arrays


def _rounded(x) -> list:
    return np.round(np.asarray(x, np.float64), 4).tolist()


def _summary(cfg, ref, sweeps, path, found, metric, phase, history, correlations,
             direct) -> dict:
    col = METRICS.index("loss_predictable")
    training = ({"planted": True} if history is None else {
        "steps": cfg.train.n_steps, "phase_change_step": None if phase is None else phase.step,
        "final_loss_predictable": round(float(history[-100:, col].mean()), 4)})
    rows = EVERY_NAMES if "attn_head_all_pos_every" in sweeps else ("out", "k")
    return {
        "checks": checks(ref, sweeps, path, found, direct),
        "direct_patches": direct,
        "training": training | {"ln_vocab": round(math.log(cfg.train.data.d_vocab), 4)},
        "metric": {"clean_second_copy_loss": round(float(metric.clean), 4),
                   "corrupted_second_copy_loss": round(float(metric.corrupted), 4)},
        "attention_scores": {"induction": _rounded(ref["induction_score"]),
                             "previous_token": _rounded(ref["previous_token_score"])},
        "denoising": {name: _rounded(sweeps[name]) for name in ("resid_pre", "attn_out")
                      if name in sweeps},
        "noising_cost": {row: _rounded(localise.head_cost(sweeps, row)) for row in rows},
        "atp_star": {
            "noising_cost": {row: _rounded(localise.head_cost(sweeps, row, atp=True))
                             for row in correlations},
            "rank_correlation_with_exact": {k: None if v is None else round(v, 4)
                                            for k, v in correlations.items()},
        },
        "path_patching": {k: _rounded(v) for k, v in path.items()},
        "discovery": {name: {k: v for k, v in d.items() if k not in ("circuit", "weights")}
                      for name, d in found.items()},
        "config": {"half_len": cfg.half_len, "batch": cfg.batch, "planted": cfg.planted,
                   "every_analysis": cfg.every_analysis, "acdc_threshold": cfg.acdc_threshold,
                   "mask_sparsity": cfg.mask_sparsity, "mask_steps": cfg.mask_steps,
                   "seed": cfg.train.seed},
    }
