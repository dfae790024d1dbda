"""The study's figures, drawn with :mod:`jinterp.viz` (PNG, Agg) plus the HTML pattern viewer.

Positions of the ``r r`` prompts are labelled by their place in ``r`` (``r0 .. r{n-1}`` twice):
the sweeps average over prompts with different random tokens, so the place, not the token, is
what a position means.
"""

from __future__ import annotations

import os

import numpy as np

from jinterp import viz
from jinterp.experiments.circuits import localise
from jinterp.experiments.induction.phase import smooth
from jinterp.experiments.induction.train import METRICS
from jinterp.patching import Node
from jinterp.viz._common import plt, save

MIN_PATH_EFFECT = 0.02  # path-graph edges below this effect are left out


def position_names(half_len: int) -> list[str]:
    """``["r0", ..., "r{n-1}", "r0", ...]``: the place of each position in the repeated ``r``."""
    return [f"r{i}" for i in range(half_len)] * 2


def loss_curve(history: np.ndarray, phase_step: int | None, ln_vocab: float, out: str) -> str:
    """Training losses on predictable and random targets, the phase change marked."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    steps = np.arange(1, len(history) + 1)
    window = max(1, min(100, len(history) // 10))
    for column, style in (("loss_predictable", "-"), ("loss_random", "--")):
        ax.plot(steps, smooth(history[:, METRICS.index(column)], window), style, label=column)
    ax.axhline(ln_vocab, color="grey", lw=0.8, label="ln(d_vocab)")
    if phase_step is not None:
        ax.axvline(phase_step, color="red", lw=1, label=f"phase change, step {phase_step}")
    ax.set_xlabel("step")
    ax.set_ylabel(f"cross-entropy ({window}-step mean)")
    ax.set_title("2-layer attention-only model on repeated subsequences", fontsize=10)
    ax.legend(fontsize=7)
    return str(save(fig, out))


def atp_scatter(exact: np.ndarray, estimate: np.ndarray, names: tuple[str, ...],
                correlations: dict[str, float], out: str) -> str:
    """AtP* against exact noising costs ``[row, layer, head]``: a colour per site, a point per
    head."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for i, name in enumerate(names):
        rho = correlations[name]
        label = f"{name} (rho {'n/a' if rho is None else f'{rho:.2f}'})"
        ax.scatter(exact[i].ravel(), estimate[i].ravel(), s=18, label=label)
    lo = float(min(exact.min(), estimate.min()))
    hi = float(max(exact.max(), estimate.max()))
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
    ax.set_xlabel("exact noising cost (1 - metric)")
    ax.set_ylabel("AtP* estimate of the cost")
    ax.set_title("AtP* vs exact, every head", fontsize=10)
    ax.legend(fontsize=7)
    return str(save(fig, out))


def path_graph(effects: dict[str, np.ndarray], induction_heads: list[int], n_heads: int,
               out: str) -> str:
    """Path patching as a graph: each layer-0 head -> each induction head's key, weighted by
    the effect of that one path (edges under :data:`MIN_PATH_EFFECT` left out)."""
    edges = [(Node.head(0, s), Node.k(1, h), float(effects[f"into_k_of_h{h}"][0, s]))
             for h in induction_heads for s in range(n_heads)
             if effects[f"into_k_of_h{h}"][0, s] >= MIN_PATH_EFFECT]
    return str(viz.plot_circuit(edges, out, n_layers=2, n_heads=n_heads,
                                title="path patching: layer-0 head -> induction head key",
                                weight_name="effect (1 - metric)"))


def all_figures(a: dict, out_dir: str, tick=None) -> dict[str, str]:
    """Every figure the run has data for; ``{key: file name}`` (relative to ``out_dir``)."""
    names = position_names(a["half_len"])
    sweeps, paths = a["sweeps"], a["paths"]
    files = {}

    def put(key: str, path) -> None:
        files[key] = os.path.relpath(str(path), out_dir)
        if tick is not None:
            tick(key)

    p = lambda name: os.path.join(out_dir, name)
    if a["history"] is not None:
        put("loss_curve", loss_curve(a["history"], a["phase_step"], a["ln_vocab"],
                                     p("loss_curve.png")))
    put("patterns", viz.plot_attention_patterns(
        a["patterns"], p("attention_patterns.png"), tokens=a["prompt_tokens"],
        title="attention patterns, clean prompt 0 (r r)"))
    put("viewer", viz.write_attention_viewer(
        a["patterns"], a["prompt_tokens"], p("attention_patterns.html"),
        title="Attention patterns of the 2-layer induction model (clean prompt 0)",
        selected=(1, a["top_induction_head"])))
    put("resid_pre", viz.plot_sweep(
        sweeps["resid_pre"], "resid_pre", p("resid_pre.png"), tokens=names,
        title="denoising resid_pre: one clean position into r' r (metric, 1 = clean)"))
    if "attn_out" in sweeps:
        put("attn_out", viz.plot_sweep(sweeps["attn_out"], "attn_out", p("attn_out.png"),
                                       tokens=names, title="denoising attn_out (metric)"))
    if "attn_head_out_by_pos" in sweeps:
        put("head_out_by_pos", viz.plot_sweep(
            sweeps["attn_head_out_by_pos"], "attn_head_out_by_pos", p("head_out_by_pos.png"),
            tokens=names, title="denoising one head's output at one position (metric)"))
    if "attn_head_all_pos_every" in sweeps:
        put("heads_every", viz.plot_sweep(
            sweeps["attn_head_all_pos_every"], "attn_head_all_pos_every", p("heads_every.png"),
            title="noising, exact: one head's output, q, k, v or pattern corrupted (metric)"))
        put("heads_every_atp", viz.plot_head_every(
            sweeps["atp*_attn_head_all_pos_every"], p("heads_every_atp_star.png"),
            title="noising, AtP*: the same from one forward and backward pass"))
    rows = a["atp_rows"]
    exact = np.stack([localise.head_cost(sweeps, r) for r in rows])
    estimate = np.stack([localise.head_cost(sweeps, r, atp=True) for r in rows])
    put("noising_cost", viz.plot_head_stack(
        np.concatenate([exact, estimate]), [f"exact {r}" for r in rows]
        + [f"AtP* {r}" for r in rows], p("noising_cost.png"), ncols=len(rows),
        title="noising cost (1 - metric) of one head's site: exact (top), AtP* (bottom)"))
    put("atp_scatter", atp_scatter(exact, estimate, rows, a["atp_correlations"],
                                   p("atp_vs_exact.png")))
    if "atp_attn_head_pattern_dest_src_pos" in sweeps:
        put("pattern_dest_src", viz.plot_sweep(
            sweeps["atp_attn_head_pattern_dest_src_pos"], "attn_head_pattern_dest_src_pos",
            p("pattern_dest_src_atp.png"), tokens=names,
            title="noising, AtP: one attention weight (dest, src) corrupted (metric)"))
    put("paths", viz.plot_head_stack(
        np.stack([paths["into_k"], paths["into_q"], paths["into_v"]]),
        ["into induction K", "into induction Q", "into induction V"], p("path_patching.png"),
        title="path patching: effect (1 - metric) of each sender head's path"))
    if all(f"into_k_of_h{h}" in paths for h in a["induction_heads"]):
        put("path_graph", path_graph(paths, a["induction_heads"], a["n_heads"],
                                     p("path_graph.png")))
    for name, found in a["discovery"].items():
        weight_name = {"acdc": "metric change on removal", "edge_mask": "soft mask"}[name]
        put(f"circuit_{name}", viz.plot_circuit(
            found["weights"], p(f"circuit_{name}.png"), n_layers=2, n_heads=a["n_heads"],
            title=f"{name}: {found['n_edges']} of {found['n_total']} edges, faithfulness "
                  f"{found['faithfulness']:.2f}", weight_name=weight_name))
    return files


def n_figures(a: dict) -> int:
    """How many files :func:`all_figures` writes for these arrays (a progress bar's total)."""
    sweeps = a["sweeps"]
    optional = [a["history"] is not None, "attn_out" in sweeps, "attn_head_out_by_pos" in sweeps,
                "attn_head_all_pos_every" in sweeps, "attn_head_all_pos_every" in sweeps,
                "atp_attn_head_pattern_dest_src_pos" in sweeps,
                all(f"into_k_of_h{h}" in a["paths"] for h in a["induction_heads"])]
    return 6 + sum(optional) + len(a["discovery"])
