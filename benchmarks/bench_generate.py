"""Generation throughput: ``jinterp.generate`` vs HuggingFace ``generate`` on the same weights.

Prints one JSON object. A random GPT-2-small-shaped model (12 layers, d_model 768, vocab
50257) is saved once with ``save_pretrained``; each side loads it in its own process (so
neither's memory or threads disturb the other) and generates greedily from random 32-token
prompts, 64 new tokens (every step runs: no EOS), at batch 1 and 8. Reported per case: the
median and min wall time of the whole call (prefill + decode) over ``--repeats`` after a
warm-up, new tokens per second from the median, jinterp's compile time (lower + compile of the
same program, persistent cache off) and XLA's memory account, and each process's peak RSS.
Cases: ``greedy`` and ``steered`` (a vector added to ``blocks.6.hook_resid_post`` at every
position; HF: a forward hook on block 6). Both sides' tokens are compared (``tokens_match``).

Usage: python benchmarks/bench_generate.py [--repeats 5] [--batches 1 8] [--prompt 32]
       [--new 64] [--threads N] [--plot docs/img/generation/speed.png]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ["JINTERP_COMPILATION_CACHE"] = "0"  # compile times are measured, not cached
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

LAYER = 6


def prompts(batch: int, n_pos: int) -> np.ndarray:
    return np.random.default_rng(batch).integers(0, 50257, (batch, n_pos))


def steering_vector() -> np.ndarray:
    return np.random.default_rng(0).normal(0, 2.0, 768).astype(np.float32)


def _timed(fn, repeats: int) -> tuple[dict, object]:
    import statistics

    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}, out


def side_jinterp(args) -> dict:
    import jax

    import jinterp
    from benchmarks.common import process_peak_rss_mb, xla_memory
    from jinterp import models
    from jinterp.generation import decode

    model, params = models.load_pretrained(args.path)
    hooks = {f"blocks.{LAYER}.hook_resid_post": jinterp.Steer(steering_vector())}
    out = {}
    for batch in args.batches:
        tokens = prompts(batch, args.prompt)
        for case, case_hooks in (("greedy", None), ("steered", hooks)):
            prog, call = decode.setup(model, params, tokens, args.new, case_hooks, 0.0, None, None,
                                      None, None, "all", None, None)
            start = time.perf_counter()
            compiled = decode._generate.lower(**call, prog=prog).compile()
            compile_s = time.perf_counter() - start
            timing, result = _timed(lambda h=case_hooks, t=tokens: jax.block_until_ready(
                jinterp.generate(model, params, t, args.new, h)), args.repeats)
            out[f"{case}_batch{batch}"] = {
                **timing, "tokens_per_s": batch * args.new / timing["median_s"],
                "compile_s": compile_s, "memory": xla_memory(compiled),
                "new_tokens": np.asarray(result)[:, args.prompt:].tolist()}
    out["process_peak_rss_mb"] = process_peak_rss_mb()
    out["backend"] = jax.default_backend()
    return out


def side_hf(args) -> dict:
    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    hf = transformers.GPT2LMHeadModel.from_pretrained(args.path).eval()
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    vector = torch.tensor(steering_vector())

    def add(module, inputs, output):
        return output + vector if torch.is_tensor(output) else (output[0] + vector, *output[1:])

    out = {}
    for batch in args.batches:
        tokens = torch.tensor(prompts(batch, args.prompt))
        mask = torch.ones_like(tokens)
        for case in ("greedy", "steered"):
            handle = (hf.transformer.h[LAYER].register_forward_hook(add) if case == "steered"
                      else None)

            def run(tokens=tokens, mask=mask):
                with torch.no_grad():
                    return hf.generate(tokens, attention_mask=mask, max_new_tokens=args.new,
                                       do_sample=False)
            timing, result = _timed(run, args.repeats)
            if handle is not None:
                handle.remove()
            out[f"{case}_batch{batch}"] = {
                **timing, "tokens_per_s": batch * args.new / timing["median_s"],
                "new_tokens": result[:, args.prompt:].numpy().tolist()}
    # VmHWM: this process's own peak (ru_maxrss survives exec: it would report the parent's)
    status = open("/proc/self/status").read().split("VmHWM:")[1]
    out["process_peak_rss_mb"] = int(status.split()[0]) / 1024
    out["torch_threads"] = torch.get_num_threads()
    out["torch"] = torch.__version__
    return out


def _run_side(side: str, args, path: str) -> dict:
    argv = [sys.executable, os.path.abspath(__file__), "--side", side, "--path", path,
            "--repeats", str(args.repeats), "--prompt", str(args.prompt), "--new", str(args.new),
            "--threads", str(args.threads), "--batches", *map(str, args.batches)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": proc.stderr[-3000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--plot", help="also write a bar chart of tokens/s to this PNG path")
    parser.add_argument("--side", choices=["jinterp", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(side_jinterp(args) if args.side == "jinterp" else side_hf(args)))
        return

    import torch
    import transformers

    from benchmarks.common import machine

    with tempfile.TemporaryDirectory() as path:
        torch.manual_seed(0)
        transformers.GPT2LMHeadModel(transformers.GPT2Config()).save_pretrained(path)
        ours, theirs = _run_side("jinterp", args, path), _run_side("hf", args, path)
    result = {"benchmark": "generate_gpt2_small", "prompt": args.prompt, "new_tokens": args.new,
              "machine": machine(), "jinterp": ours, "hf": theirs, "speedup": {},
              "tokens_match": {}}
    for case in ours:
        if isinstance(ours[case], dict) and isinstance(theirs.get(case), dict):
            result["speedup"][case] = theirs[case]["median_s"] / ours[case]["median_s"]
            result["tokens_match"][case] = ours[case].pop("new_tokens") == theirs[case].pop(
                "new_tokens")
    result["machine"]["load_avg_1m_at_end"] = os.getloadavg()[0]
    if args.plot:
        result["figure"] = plot(result, args.plot)
    print(json.dumps(result, indent=2))


def plot(result: dict, path: str) -> str:
    """Tokens per second per case, jinterp next to HF, the speed-up written above each pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(result["speedup"])
    x = np.arange(len(cases))
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    ours = [result["jinterp"][c]["tokens_per_s"] for c in cases]
    theirs = [result["hf"][c]["tokens_per_s"] for c in cases]
    ax.bar(x - 0.2, ours, 0.4, label="jinterp.generate (jit, KV cache)")
    ax.bar(x + 0.2, theirs, 0.4, label="HF generate (torch)")
    for i, case in enumerate(cases):
        ax.text(i, max(ours[i], theirs[i]) * 1.02, f"{result['speedup'][case]:.2f}x",
                ha="center", fontsize=8)
    ax.set_xticks(x, [c.replace("_batch", "\nbatch ") for c in cases])
    ax.set_ylabel("new tokens / s")
    ax.set_title(f"GPT-2 small shape, {result['prompt']}-token prompts, {result['new_tokens']} "
                 "new tokens, greedy (CPU)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
