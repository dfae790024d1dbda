"""SAE training throughput: jinterp vs SAELens on CPU, plus a vmapped sweep vs sequential runs.

What is timed (tokens per second = batch / median step time after warm-up):

* jinterp: ``make_train_step(cfg, TrainConfig(grad_clip_norm=1.0))`` -- loss, gradient,
  decoder-gradient projection, global-norm clipping, Adam, decoder renormalisation and
  dead-latent counters in one jitted call. Compile time is reported separately.
* SAELens: the real training path ``SAETrainer.step(batch)`` (which calls
  ``SAETrainer._train_step`` -> ``TrainingSAE.training_forward_pass`` (SAE forward, MSE,
  ``calculate_aux_loss``: L1 or AuxK) -> ``backward`` -> ``clip_grad_norm_(1.0)`` ->
  ``torch.optim.Adam.step`` -> lr / coefficient schedulers, plus its dead-latent counters),
  on ``StandardTrainingSAE`` (ReLU-L1) and ``TopKTrainingSAE``.
* Sweep: 8 ReLU SAEs with 8 L1 coefficients as one vmapped jinterp program vs the same 8
  trained one after another (8 compiled steps, times summed).

Both libraries see the same fixed random batch, use float32 and the same number of CPU
threads (torch.set_num_threads = the cores JAX uses). Each measurement runs in its own child
process so that its peak RSS (``ru_maxrss``) is its own. Run with an interpreter that has both
jinterp and sae-lens (e.g. a separate venv: ``pip install torch==2.13.0 sae-lens`` then
``pip install -e .``); without sae-lens the reference is reported missing.

Usage: ``python benchmarks/bench_sae.py [--fast] [--repeats 5]``; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _timed(fn, warmup: int, repeats: int) -> tuple[float, list[float]]:
    """(median seconds, all timings) of ``fn()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


# ----------------------------------------------------------------------------- jinterp
def _time_compiled(step, state, x, args) -> tuple[float, list[float], float]:
    """(median step seconds, timings, compile seconds) of a jitted ``step(state, x)``,
    threading the (donated) state through the repeats."""
    import jax

    t0 = time.perf_counter()
    compiled = step.lower(state, x).compile()
    compile_s = time.perf_counter() - t0
    holder = {"state": state}

    def one():
        holder["state"], metrics = compiled(holder["state"], x)
        jax.block_until_ready(metrics["loss"])

    med, times = _timed(one, args.warmup, args.repeats)
    return med, times, compile_s


def _jinterp_cfg(arch: str, args, l1: float = 5.0):
    from jinterp.sae.config import SAEConfig

    if arch == "topk":
        return SAEConfig("topk", d_in=args.d_in, d_sae=args.d_sae, k=args.k)
    return SAEConfig("relu", d_in=args.d_in, d_sae=args.d_sae, l1_coefficient=l1)


def run_jinterp(arch: str, args) -> dict:
    import jax
    import numpy as np

    from jinterp.sae.schedule import TrainConfig
    from jinterp.sae.train_step import make_train_step, train_state

    cfg, tcfg = _jinterp_cfg(arch, args), TrainConfig(grad_clip_norm=1.0)
    x = jax.numpy.asarray(np.random.default_rng(0).normal(size=(args.batch, args.d_in)), "float32")
    med, times, compile_s = _time_compiled(make_train_step(cfg, tcfg),
                                           train_state(cfg, 0, lr=1e-4, tcfg=tcfg), x, args)
    return {"step_s": med, "tokens_per_s": args.batch / med, "compile_s": compile_s,
            "times_s": times, "peak_rss_mb": _peak_rss_mb(), "n_devices": jax.device_count()}


def run_jinterp_sweep(args) -> dict:
    """8 ReLU L1 coefficients: one vmapped program vs 8 one-by-one programs."""
    import jax
    import numpy as np

    from jinterp.sae.schedule import TrainConfig
    from jinterp.sae.sweep import make_sweep_step, plan_sweep, sweep_state
    from jinterp.sae.train_step import make_train_step, train_state

    coeffs = [0.5 * 2 ** i for i in range(args.sweep)]
    cfgs = [_jinterp_cfg("relu", args, c) for c in coeffs]
    tcfg = TrainConfig(grad_clip_norm=1.0)
    x = jax.numpy.asarray(np.random.default_rng(0).normal(size=(args.batch, args.d_in)), "float32")
    plan = plan_sweep(cfgs)
    sweep_med, _, compile_s = _time_compiled(
        make_sweep_step(plan, tcfg), sweep_state(plan, list(range(len(cfgs))), lr=1e-4, tcfg=tcfg),
        x, args)
    seq_total, seq_compile = 0.0, 0.0
    for i, cfg in enumerate(cfgs):
        med, _, compiled_s = _time_compiled(make_train_step(cfg, tcfg),
                                            train_state(cfg, i, lr=1e-4, tcfg=tcfg), x, args)
        seq_total, seq_compile = seq_total + med, seq_compile + compiled_s
    n_tokens = len(cfgs) * args.batch
    return {"n_saes": len(cfgs), "sweep_step_s": sweep_med,
            "sweep_tokens_per_s": n_tokens / sweep_med,
            "sweep_compile_s": compile_s, "sequential_step_s": seq_total,
            "sequential_tokens_per_s": n_tokens / seq_total, "sequential_compile_s": seq_compile,
            "speedup": seq_total / sweep_med, "peak_rss_mb": _peak_rss_mb()}


# ----------------------------------------------------------------------------- SAELens
def run_saelens(arch: str, args) -> dict:
    import numpy as np
    import torch
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if arch == "topk":
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=args.d_in, d_sae=args.d_sae, k=args.k))
    else:
        sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=args.d_in, d_sae=args.d_sae,
                                                            l1_coefficient=5.0))
    trainer_cfg = SAETrainerConfig(total_training_samples=args.batch * 10 ** 6,
                                   train_batch_size_samples=args.batch, lr=1e-4, lr_end=1e-4)
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=iter(()))
    x = np.random.default_rng(0).normal(size=(args.batch, args.d_in)).astype("float32")
    x = torch.from_numpy(x)

    def one():
        trainer.step(x)
        trainer.n_training_steps += 1  # what fit() does after each step

    t0 = time.perf_counter()
    one()
    first_s = time.perf_counter() - t0
    med, times = _timed(one, args.warmup, args.repeats)
    return {"step_s": med, "tokens_per_s": args.batch / med, "first_step_s": first_s,
            "times_s": times, "peak_rss_mb": _peak_rss_mb(),
            "torch_threads": torch.get_num_threads(),
            "sae_lens_version": __import__("sae_lens").__version__,
            "code_path": "SAETrainer.step -> _train_step -> training_forward_pass, backward, "
                         "clip_grad_norm_, Adam.step"}


# ----------------------------------------------------------------------------- driver
def _child(args, what: str) -> dict:
    """Runs one measurement in a fresh interpreter (own peak RSS, no cross-library effects)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--only", what] + args.passthrough
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d-in", type=int, default=768)
    p.add_argument("--d-sae", type=int, default=12288)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--sweep", type=int, default=8, help="SAEs in the sweep comparison (0: skip)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--fast", action="store_true", help="tiny sizes: a smoke test of the script")
    p.add_argument("--only", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.fast:
        args.d_in, args.d_sae, args.batch, args.k, args.warmup, args.repeats = 64, 512, 256, 8, 1, 3
    args.passthrough = [f"--d-in={args.d_in}", f"--d-sae={args.d_sae}", f"--batch={args.batch}",
                        f"--k={args.k}", f"--sweep={args.sweep}", f"--warmup={args.warmup}",
                        f"--repeats={args.repeats}", f"--threads={args.threads}"]
    return args


def main():
    args = _parse()
    runners = {"jinterp_topk": lambda: run_jinterp("topk", args),
               "jinterp_relu": lambda: run_jinterp("relu", args),
               "saelens_topk": lambda: run_saelens("topk", args),
               "saelens_relu": lambda: run_saelens("relu", args),
               "jinterp_sweep": lambda: run_jinterp_sweep(args)}
    if args.only:
        print(json.dumps(runners[args.only]()))
        return
    try:
        import sae_lens  # noqa: F401
        have_ref = True
    except ImportError:
        have_ref = False
    result = {"config": {"d_in": args.d_in, "d_sae": args.d_sae, "batch_tokens": args.batch,
                         "k": args.k, "dtype": "float32", "optimizer": "Adam + clip 1.0",
                         "threads": args.threads, "warmup": args.warmup, "repeats": args.repeats,
                         "platform": "cpu"}}
    for arch in ("topk", "relu"):
        mine = _child(args, f"jinterp_{arch}")
        entry = {"jinterp": mine}
        if have_ref:
            ref = _child(args, f"saelens_{arch}")
            entry["saelens"] = ref
            if "tokens_per_s" in ref and "tokens_per_s" in mine:
                entry["speedup_vs_saelens"] = mine["tokens_per_s"] / ref["tokens_per_s"]
        else:
            entry["saelens"] = "missing: sae_lens is not importable in this interpreter"
        result[arch] = entry
    if args.sweep:
        result["sweep_relu"] = _child(args, "jinterp_sweep")
    print(json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    main()
