"""Grokking training step time: jinterp (JAX) against a faithful PyTorch implementation, on CPU.

Setup (both sides): p = 113, the authors' 3,830-pair training split, full batch, the paper's
model (1 layer, d_model 128, 4 heads x 32, d_mlp 512, ReLU, no LayerNorm, learned positions,
untied), AdamW (lr 1e-3, wd 1.0, betas 0.9/0.98) with the 10-step warm-up, 113-way loss at the
last position.

Measured, each side in its own subprocess (so peak RSS is per side):
- ``jax_scan``: jinterp's training chunk (``jinterp.experiments.grokking.training.make_chunk_fn``),
  ``steps_per_call`` steps per compiled call; per-step time = call time / steps.
- ``jax_single``: the same step jitted alone, one step per call (host dispatch each step).
- ``jax_port_single``: one step using the library's full ``models.GPT2`` forward (all three
  positions), to show what the last-position forward buys.
- ``torch``: the authors' PyTorch model (all positions, as their ``transformers.py`` computes it)
  with ``torch.optim.AdamW`` + ``LambdaLR``, eager, ``torch.set_num_threads`` = cores (and again
  with 1 thread, because on a shared, oversubscribed machine OpenMP threads can stall).
- ``torch_last_position``: the same torch model running jinterp's last-position/table algorithm
  (``forward_last``), to separate the algorithmic saving from the framework.

Medians over repeats after warm-up; compile time (first call minus a steady call) separately.
Prints one JSON object.  Usage: ``python benchmarks/bench_grokking.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn, repeats: int) -> tuple[float, float]:
    """(first-call seconds, median steady seconds)."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    fn()  # one more warm-up call
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return first, _median(times)


def bench_jax(repeats: int, steps_per_call: int) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    from jinterp import models
    from jinterp.experiments.grokking.config import GrokConfig
    from jinterp.experiments.grokking.data import make_data
    from jinterp.experiments.grokking.model import cross_entropy
    from jinterp.experiments.grokking.training import (
        device_data,
        init_state,
        make_chunk_fn,
        make_optimizer,
    )

    cfg = GrokConfig(steps=steps_per_call, steps_per_call=steps_per_call)
    batch = device_data(cfg, make_data(cfg.p, cfg.frac_train, cfg.data_seed))
    state = init_state(cfg)
    chunk = make_chunk_fn(cfg)
    holder = {"s": state}

    def run_chunk():
        holder["s"], m = chunk(holder["s"], batch)
        jax.block_until_ready(m)

    first, steady = _timed(run_chunk, repeats)
    out = {"jax_scan": {"steps_per_call": steps_per_call, "step_s": steady / steps_per_call,
                        "compile_s": first - steady}}

    opt = make_optimizer(cfg)
    model = models.GPT2(cfg.model_config())
    one = jax.tree.map(lambda x: x[0], state)
    from jinterp.experiments.grokking.model import loss_and_accuracy

    def make_step(loss_fn):
        @jax.jit
        def step(s):
            loss, grads = jax.value_and_grad(loss_fn)(s["params"])
            updates, opt_state = opt.update(grads, s["opt_state"], s["params"])
            return {"params": optax.apply_updates(s["params"], updates), "opt_state": opt_state,
                    "step": s["step"] + 1}, loss
        return step

    def make_runner(step):
        """A no-argument call that takes one step from where the previous call left off."""
        holder = {"s": one}

        def run_step():
            holder["s"], loss = step(holder["s"])
            jax.block_until_ready(loss)

        return run_step

    tokens, labels = batch["train_tokens"], batch["train_labels"]
    fast_loss = lambda p: loss_and_accuracy(p, tokens, labels, cfg.p)[0]
    port_loss = lambda p: jnp.mean(cross_entropy(model(p, tokens)[:, -1, :cfg.p], labels))
    cases = (("jax_single", fast_loss, repeats * 5), ("jax_port_single", port_loss, repeats))
    for name, loss_fn, reps in cases:
        first, steady = _timed(make_runner(make_step(loss_fn)), reps)
        out[name] = {"step_s": steady, "compile_s": first - steady}
    out["peak_rss_mb"] = _peak_rss_mb()
    out["jax_version"] = jax.__version__
    return out


def bench_torch(repeats: int) -> dict:
    import numpy as np
    import torch
    from torch import nn

    from jinterp.experiments.grokking.data import make_data, tokens

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    p, D, H, Dh, M, V = 113, 128, 4, 32, 512, 114

    class Grokker(nn.Module):
        """The authors' model: einsum attention over all positions, ReLU MLP, untied unembed."""

        def __init__(self):
            super().__init__()
            r = lambda *s: nn.Parameter(torch.randn(*s) / np.sqrt(D))
            self.W_E, self.W_pos = r(D, V), r(3, D)
            self.W_Q, self.W_K, self.W_V = r(H, Dh, D), r(H, Dh, D), r(H, Dh, D)
            self.W_O = r(D, H * Dh)
            self.W_in, self.b_in = r(M, D), nn.Parameter(torch.zeros(M))
            self.W_out, self.b_out = r(D, M), nn.Parameter(torch.zeros(D))
            self.W_U = nn.Parameter(torch.randn(D, V) / np.sqrt(V))
            self.register_buffer("mask", torch.tril(torch.ones(3, 3)))

        def forward(self, x):
            x = self.W_E[:, x].permute(1, 2, 0) + self.W_pos  # batch pos d_model
            k = torch.einsum("ihd,bpd->biph", self.W_K, x)
            q = torch.einsum("ihd,bpd->biph", self.W_Q, x)
            v = torch.einsum("ihd,bpd->biph", self.W_V, x)
            scores = torch.einsum("biph,biqh->biqp", k, q)
            scores = torch.tril(scores) - 1e10 * (1 - self.mask)
            attn = torch.softmax(scores / np.sqrt(Dh), dim=-1)
            z = torch.einsum("biph,biqp->biqh", v, attn)  # batch n_heads pos d_head
            z = z.permute(0, 2, 1, 3).reshape(x.shape[0], 3, H * Dh)  # batch pos n_heads*d_head
            x = x + torch.einsum("df,bqf->bqd", self.W_O, z)
            hidden = torch.relu(torch.einsum("md,bpd->bpm", self.W_in, x) + self.b_in)
            x = x + torch.einsum("dm,bpm->bpd", self.W_out, hidden) + self.b_out
            return x @ self.W_U

        def forward_last(self, x):
            """jinterp's ``last_logits`` algorithm in torch: last position only, q/k/v tables."""
            table = self.W_E.T[None] + self.W_pos[:, None]  # pos d_vocab d_model
            q_t = torch.einsum("vd,hed->vhe", table[-1], self.W_Q) / np.sqrt(Dh)
            k_t = torch.einsum("pvd,hed->pvhe", table, self.W_K)
            v_t = torch.einsum("pvd,hed->pvhe", table, self.W_V)
            pos = torch.arange(3)
            scores = torch.einsum("bhe,bphe->bph", q_t[x[:, -1]], k_t[pos, x])
            z = torch.einsum("bph,bphe->bhe", torch.softmax(scores, dim=1), v_t[pos, x])
            resid = table[-1, x[:, -1]] + z.reshape(x.shape[0], H * Dh) @ self.W_O.T
            resid = resid + torch.relu(resid @ self.W_in.T + self.b_in) @ self.W_out.T + self.b_out
            return resid @ self.W_U

    data = make_data(p, 0.3, 0)
    a, b, y = data.split("train")
    toks = torch.tensor(tokens(a, b, p), dtype=torch.long)
    labels = torch.tensor(y, dtype=torch.long)
    model = Grokker()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(s / 10, 1))

    with torch.no_grad():  # the two torch forwards must agree before timing them
        gap = (model.forward_last(toks) - model(toks)[:, -1]).abs().max().item()
    if gap > 1e-4:
        raise AssertionError(f"torch forward_last differs from forward by {gap}")

    def step(last_only: bool = False):
        logits = model.forward_last(toks) if last_only else model(toks)[:, -1]
        # the authors' float64 loss
        loss = torch.nn.functional.cross_entropy(logits[:, :p].to(torch.float64), labels)
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()

    first, steady = _timed(step, repeats)
    _, steady_last = _timed(lambda: step(True), repeats)
    torch.set_num_threads(1)  # on a busy machine, 2 OpenMP threads can be far slower than 1
    _, steady_one = _timed(step, max(2, repeats // 2))
    _, steady_last_one = _timed(lambda: step(True), max(2, repeats // 2))
    return {"torch": {"step_s": steady, "first_call_s": first, "threads": os.cpu_count() or 1,
                      "step_s_1thread": steady_one, "last_step_s": steady_last,
                      "last_step_s_1thread": steady_last_one},
            "peak_rss_mb": _peak_rss_mb(), "torch_version": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps-per-call", type=int, default=100)
    parser.add_argument("--part", choices=["jax", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part == "jax":
        print(json.dumps(bench_jax(args.repeats, args.steps_per_call)))
        return
    if args.part == "torch":
        print(json.dumps(bench_torch(args.repeats * 4)))
        return
    results = {}
    for part in ("jax", "torch"):
        cmd = [sys.executable, __file__, "--part", part, "--repeats", str(args.repeats),
               "--steps-per-call", str(args.steps_per_call)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
        results[part] = json.loads(out.strip().splitlines()[-1])
    jx, th = results["jax"], results["torch"]
    torch_step = th["torch"]["step_s"]
    summary = {
        "benchmark": "grokking full-batch train step (p=113, 3830 pairs, CPU)",
        "cpu_count": os.cpu_count(),
        "load_avg_1m_at_end": os.getloadavg()[0],
        "jinterp_scan_step_ms": 1e3 * jx["jax_scan"]["step_s"],
        "jinterp_scan_compile_s": jx["jax_scan"]["compile_s"],
        "jinterp_single_step_ms": 1e3 * jx["jax_single"]["step_s"],
        "jinterp_single_compile_s": jx["jax_single"]["compile_s"],
        "jinterp_port_forward_single_step_ms": 1e3 * jx["jax_port_single"]["step_s"],
        "jinterp_peak_rss_mb": jx["peak_rss_mb"],
        "torch_step_ms": 1e3 * torch_step,
        "torch_first_call_s": th["torch"]["first_call_s"],
        "torch_threads": th["torch"]["threads"],
        "torch_step_ms_1thread": 1e3 * th["torch"]["step_s_1thread"],
        "ratio_jinterp_scan_over_torch_best_threads": jx["jax_scan"]["step_s"] / min(
            torch_step, th["torch"]["step_s_1thread"]),
        "torch_last_position_step_ms": 1e3 * th["torch"]["last_step_s"],
        "torch_last_position_step_ms_1thread": 1e3 * th["torch"]["last_step_s_1thread"],
        "ratio_jinterp_scan_over_torch_last_position_best_threads": jx["jax_scan"]["step_s"] / min(
            th["torch"]["last_step_s"], th["torch"]["last_step_s_1thread"]),
        "torch_peak_rss_mb": th["peak_rss_mb"],
        "ratio_jinterp_scan_over_torch": jx["jax_scan"]["step_s"] / torch_step,
        "ratio_jinterp_single_over_torch": jx["jax_single"]["step_s"] / torch_step,
        "ratio_jinterp_port_forward_over_torch": jx["jax_port_single"]["step_s"] / torch_step,
        "target_ratio": 0.5,
        "projected_40k_steps_min_jinterp_scan": 40_000 * jx["jax_scan"]["step_s"] / 60,
        "projected_40k_steps_min_torch": 40_000 * torch_step / 60,
        "versions": {"jax": jx["jax_version"], "torch": th["torch_version"]},
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
