"""The Tracr paper's compressed-residual study, with dictionaries and probes scored on top.

Per program (default ``frac_prevs`` and ``sort_unique``, the two the paper compresses):

1. accuracy against the residual width ``d`` of a learned compression (:mod:`.compressed`);
2. on the original final residual and on every compressed one: a TopK SAE scored by how well
   its decoder recovers the labelled directions that vary (``e_i``, or ``w[:, i]`` after
   compression; :func:`.dictionary.sae_recovery`), and a linear probe per RASP variable
   (:func:`.dictionary.probe_recovery`; the variables' values are read off the original
   residual, so a compressed model is probed for the same truth).

:func:`run_compressed` writes ``compressed.png`` and ``compressed.json`` into ``out_dir`` and
returns the same JSON-able summary.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from jinterp.experiments.tracr.compressed import compressed_port, train_compression
from jinterp.experiments.tracr.dictionary import (
    direction_recovery,
    probe_recovery,
    residual_rows,
    sae_recovery,
    variable_values,
    varying,
)
from jinterp.experiments.tracr.programs import compiled

NAMES = ("frac_prevs", "sort_unique")
STEPS, SAE_STEPS = 3000, 3000
FAST_STEPS, FAST_SAE_STEPS = 100, 200


def default_dims(d_model: int, fast: bool = False) -> list[int]:
    """Widths from 2 to ``d_model`` (the full width is the control: accuracy should stay 1)."""
    if fast:
        return [d_model]
    return sorted({d for d in (2, 3, 4, 5, 6, 8, 10, 12, 16) if d < d_model} | {d_model})


def _dictionary_scores(resid, directions, values, *, d_sae, k, steps, seed) -> dict:
    s = sae_recovery(resid, directions, d_sae=d_sae, k=k, steps=steps, seed=seed)
    p = probe_recovery(resid, values, seed=seed)
    # a random decoder of the same size: the chance level, which rises as d shrinks
    rand = direction_recovery(np.random.default_rng(seed).normal(size=(d_sae, resid.shape[1])),
                              directions)
    return {"sae": {key: s[key] for key in ("recovered", "mean_max_cos", "max_cos", "fvu")}
            | {"random_mean_max_cos": rand["mean_max_cos"]}, "probe": p}


def _original(name: str, *, sae_steps: int, seed: int):
    """The original model's dictionary / probe scores and the scorer the widths reuse."""
    c = compiled(name)
    inputs, labels = c.spec.domain(), c.io.residual_labels
    resid = residual_rows(c.model, c.params, c.io, inputs)
    idx = varying(resid, labels)
    values = variable_values(resid, labels)
    # every row holds the constant `one` plus one value per variable: TopK needs that many
    k = int(np.max(np.sum(np.abs(resid) > 1e-4, axis=1)))
    d_sae = len(idx) + 1  # a complete dictionary of the varying directions, and the constant

    def score(r, dirs):
        return _dictionary_scores(r, dirs, values, d_sae=d_sae, k=k, steps=sae_steps, seed=seed)

    out = {"d_model": c.model.d_model, "directions": [labels[i] for i in idx],
           "n_rows": len(resid), "sae_k": k, "d_sae": d_sae,
           "original": score(resid, np.eye(len(labels))[idx])}
    return out, score


def original_scores(name: str, *, sae_steps: int = SAE_STEPS, seed: int = 0) -> dict:
    """An SAE and probes on one program's uncompressed final residual, scored (JSON-able)."""
    return _original(name, sae_steps=sae_steps, seed=seed)[0]


def study_program(name: str, dims: Sequence[int] | None = None, *, steps: int = STEPS,
                  sae_steps: int = SAE_STEPS, seed: int = 0, fast: bool = False,
                  bar: tqdm | None = None) -> dict:
    """One program's accuracy-vs-``d`` rows and dictionary / probe scores (JSON-able)."""
    c = compiled(name)
    inputs = c.spec.domain()
    out, score = _original(name, sae_steps=sae_steps, seed=seed)
    idx = [c.io.residual_labels.index(label) for label in out["directions"]]
    out["compressed"] = []
    for d in dims or default_dims(c.model.d_model, fast):
        r = train_compression(c.model, c.params, c.io, inputs, int(d), steps=steps, seed=seed)
        model_c, params_c = compressed_port(c.model, c.params, r.w)
        resid_c = residual_rows(model_c, params_c, c.io, inputs)
        row = {"d": int(d), "accuracy": r.accuracy, "final_loss": float(r.losses[-1]),
               "seconds": r.seconds} | score(resid_c, r.w[:, idx].T)
        out["compressed"].append(row)
        if bar is not None:
            bar.set_postfix(program=name, d=int(d), acc=f"{r.accuracy:.3f}")
            bar.update(1)
    return out


def plot_compressed(results: dict, path: str) -> None:
    """Accuracy, SAE recovery and probe accuracy against ``d``, one line per program."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    panels = (("accuracy", "accuracy vs original", None),
              ("sae", "SAE mean max |cos| to labelled dirs", lambda s: s["sae"]["mean_max_cos"]),
              ("probe", "probe accuracy (categorical vars)",
               lambda s: s["probe"]["mean_accuracy"]))
    for ax, (key, title, get) in zip(axes, panels):
        for i, (name, res) in enumerate(results.items()):
            color = f"C{i}"
            rows = res["compressed"]
            ds = [r["d"] for r in rows]
            ys = [r[key] if get is None else get(r) for r in rows]
            ax.plot(ds, [np.nan if y is None else y for y in ys], "o-", color=color,
                    label=f"{name} (D={res['d_model']}, {len(res['directions'])} varying)")
            if get is not None and get(res["original"]) is not None:
                ax.axhline(get(res["original"]), color=color, ls="--", lw=1)
            if key == "sae":
                ax.plot(ds, [r["sae"]["random_mean_max_cos"] for r in rows], "x:", color=color,
                        lw=1, label="random decoder")
            ax.axvline(len(res["directions"]), color=color, ls=":", lw=1)
        ax.set(title=title, xlabel="compressed width d", ylim=(0, 1.05))
    axes[0].legend(fontsize=7, loc="lower right")
    fig.text(0.5, -0.02, "dashed: the original model; dotted vertical: number of varying "
             "labelled directions; x: a random decoder (chance)", ha="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def run_compressed(out_dir: str, names: Sequence[str] = NAMES,
                   dims: Sequence[int] | None = None, steps: int | None = None,
                   fast: bool = False, seed: int = 0) -> dict:
    """The study for ``names``; writes ``compressed.png`` / ``compressed.json`` to ``out_dir``.

    Args:
        out_dir: output folder (created).
        names: registry programs (:data:`.programs.PROGRAMS`).
        dims: compressed widths (default: :func:`default_dims` of each program).
        steps: compression training steps (default 3000; ``fast``: 100).
        fast: a smoke run (the full width only, few steps; numbers mean little).
        seed: seeds every training.

    Returns:
        ``{program: {d_model, directions, original, compressed: [rows]}, "seconds": ...}``.
    """
    os.makedirs(out_dir, exist_ok=True)
    steps = steps or (FAST_STEPS if fast else STEPS)
    sae_steps = FAST_SAE_STEPS if fast else SAE_STEPS
    start = time.perf_counter()
    plans = {n: list(dims or default_dims(compiled(n).model.d_model, fast)) for n in names}
    results = {}
    with tqdm(total=sum(map(len, plans.values())), desc="compressed") as bar:
        for name, ds in plans.items():
            results[name] = study_program(name, ds, steps=steps, sae_steps=sae_steps,
                                          seed=seed, fast=fast, bar=bar)
    plot_compressed(results, os.path.join(out_dir, "compressed.png"))
    summary = results | {"seconds": time.perf_counter() - start, "steps": steps}
    with open(os.path.join(out_dir, "compressed.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary
