"""Probes at every layer of a 12-layer model in one program vs a loop of scikit-learn fits.

The data: a random 12-layer GPT-2-shaped model (d_model 256 by default), ``--n`` prompts of
8 random tokens; the label is the sign of a random linear read-out of the last token's
embedding (linearly decodable at layer 0, blurred by the random blocks after it); the probed
activation is ``hook_resid_post`` at the last position, every layer.
Both sides get the same activations, the same train/test split, the same z-scoring (training
mean and standard deviation) and the same objective: L2-regularised logistic regression with
scikit-learn's default ``C = 1`` (``l2 = 1 / (C * n_train)`` on jinterp's mean loss).

* jinterp: ``jinterp.probes.fit_probes`` -- all 12 layers in one jitted program (optax
  L-BFGS, ``--steps`` iterations, vmapped over layers); compile time reported apart.
* scikit-learn: a Python loop over layers of ``LogisticRegression(C=1, solver="lbfgs",
  max_iter=1000).fit`` in its own child process (so its time and peak memory are its own).

Reports per-layer test accuracy of both (they must agree within 1 point), medians of
``--repeats`` warm calls, and the speed ratio. Needs scikit-learn (the bench extra).

Usage: ``python benchmarks/bench_probes.py [--fast] [--repeats 3]``; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def sklearn_child(directory: str, repeats: int) -> None:
    """Fits one LogisticRegression per layer, ``repeats`` times; prints a JSON line."""
    from sklearn.linear_model import LogisticRegression

    acts = np.load(os.path.join(directory, "acts.npy"))  # layer n d
    y = np.load(os.path.join(directory, "labels.npy"))
    train, test = (np.load(os.path.join(directory, f"{k}.npy")) for k in ("train", "test"))
    times, acc = [], []
    for _ in range(repeats):
        start, acc = time.perf_counter(), []
        for x in acts:
            mean, std = x[train].mean(0), np.maximum(x[train].std(0), 1e-6)
            z = (x - mean) / std
            clf = LogisticRegression(C=1.0, solver="lbfgs", max_iter=1000).fit(z[train], y[train])
            acc.append(float(clf.score(z[test], y[test])))
        times.append(time.perf_counter() - start)
    import sklearn

    print(json.dumps({"median_s": statistics.median(times), "min_s": min(times),
                      "test_accuracy": acc, "version": sklearn.__version__,
                      "peak_rss_mb": _vm_hwm_mb()}))


def _vm_hwm_mb() -> float | None:
    """This process's own peak RSS (VmHWM restarts at exec, unlike ru_maxrss after a fork)."""
    try:
        with open("/proc/self/status") as f:
            line = next(l for l in f if l.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fast", action="store_true", help="small data (a smoke run)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=4000, help="prompts")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--steps", type=int, default=100, help="L-BFGS iterations (jinterp)")
    parser.add_argument("--sklearn-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sklearn_child:
        sklearn_child(args.sklearn_child, args.repeats)
        return

    import jax

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import machine, process_peak_rss_mb

    import jinterp
    from jinterp import models, probes

    n = 600 if args.fast else args.n
    d_model = 64 if args.fast else args.d_model
    cfg = models.GPT2Config(n_layers=12, d_model=d_model, n_heads=4, d_head=d_model // 4,
                            d_mlp=4 * d_model, d_vocab=1000, n_ctx=16)
    model = models.GPT2(cfg)
    params = model.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    toks = rng.integers(0, cfg.d_vocab, (n, 8))
    readout = np.asarray(params["embed"]["W_E"]) @ rng.normal(size=d_model)  # d_vocab
    labels = (readout[toks[:, -1]] > np.median(readout)).astype(np.int32)
    names = [f"blocks.{l}.hook_resid_post" for l in range(12)]
    chunks = [jinterp.run_with_cache(model, params, toks[i:i + 500], names=names)[1]
              .stack("hook_resid_post")[:, :, -1] for i in range(0, n, 500)]
    acts = np.asarray(jax.numpy.concatenate(chunks, axis=1))  # layer n d_model

    train, test = probes.split(n, 0.25, seed=0)
    config = probes.ProbeConfig(l2=1.0 / len(train), steps=args.steps)
    fit = lambda: probes.fit_probes(acts[:, :, None], labels, config, control=False).test_score
    start = time.perf_counter()
    jax.block_until_ready(fit())
    first_call = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        score = jax.block_until_ready(fit())
        times.append(time.perf_counter() - start)
    ours = [float(a) for a in np.asarray(score)[:, 0]]

    with tempfile.TemporaryDirectory() as tmp:
        for key, value in (("acts", acts), ("labels", labels), ("train", train), ("test", test)):
            np.save(os.path.join(tmp, f"{key}.npy"), value)
        out = subprocess.run([sys.executable, __file__, "--sklearn-child", tmp, "--repeats",
                              str(args.repeats)], capture_output=True, text=True)
    if out.returncode:
        reference = {"error": out.stderr[-1000:]}
        ratio, gap = None, None
    else:
        reference = json.loads(out.stdout.strip().splitlines()[-1])
        ratio = reference["median_s"] / statistics.median(times)
        gap = max(abs(a - b) for a, b in zip(ours, reference["test_accuracy"]))
    print(json.dumps({
        "benchmark": "probes at every layer (12 layers, one program) vs sklearn loop",
        "n_prompts": n, "n_train": len(train), "n_test": len(test), "d_model": d_model,
        "jinterp": {"median_s": statistics.median(times), "min_s": min(times),
                    "first_call_s (compile + run)": first_call,
                    "compile_s (approx)": first_call - statistics.median(times),
                    "test_accuracy": ours, "lbfgs_steps": args.steps,
                    "peak_rss_mb": process_peak_rss_mb()},
        "sklearn": reference,
        "max_accuracy_gap": gap, "speedup_vs_sklearn (warm)": ratio,
        "speedup_vs_sklearn (first call, compile included)":
            None if ratio is None else reference["median_s"] / first_call,
        "machine": machine(),
    }, indent=1))


if __name__ == "__main__":
    main()
