"""SAE training on a model, end to end: jinterp's ``train_on_model`` vs SAELens's own runner.

What is timed (tokens per second = SAE training tokens / wall time of a training run):

* jinterp: :func:`jinterp.sae.train_on_model` on a GPT-2-small-shaped port with random
  weights (12 layers, d_model 768, 12 heads, d_mlp 3072, vocab 50,257), a TopK SAE at
  ``blocks.6.hook_resid_post``: token batches -> the activation store (LM forward with
  ``stop_at_layer=7``, buffer on the device) -> the fused pop + SAE step, including the first
  buffer fill. The same run is made once beforehand with ``--warmup-steps`` steps (same
  static configuration, so it compiles every program the timed run uses): its wall time is
  reported as ``warmup_run_s`` and the timed run excludes compilation.
* SAELens: ``LanguageModelSAETrainingRunner(cfg, override_dataset=..., override_model=...)
  .run()`` with a ``LanguageModelSAERunnerConfig`` holding a ``TopKTrainingSAEConfig``, on a
  TransformerLens ``HookedTransformer`` built from a ``HookedTransformerConfig`` of the same
  shapes (random weights) and an in-memory pretokenised ``datasets.Dataset`` of the same ids
  (no hub access; ``HF_HUB_OFFLINE=1``). Its ``ActivationsStore`` also stops at the hook's
  layer. No wandb, no evaluations, no checkpoints, nothing saved. The same warm-up run first.
* Same settings on both sides: context 128, the same token ids, 16 prompts per LM forward,
  4,096 tokens per SAE step, a buffer of 8,192 activations (jinterp: 4 forwards; SAELens:
  ``n_batches_in_buffer=64`` x 128 positions, its mixing buffer's size), k, d_sae, lr 3e-4,
  Adam, float32, a dead-latent window of 1,000 steps (so AuxK never fires in either), no
  input normalisation, ``b_dec`` from zero, no tokens excluded.
* The activation store alone (LM forward + buffer write, tokens forwarded per second), with
  and without ``stop_at_layer``, for both libraries. jinterp's store always stops at its
  hook's layer; the "full" variant sets ``store.stop_at_layer = None`` before first use (full
  forward incl. the unembedding). SAELens's variant replaces
  ``extract_stop_at_layer_from_tlens_hook_name`` with ``lambda name: None``.

Each measurement runs in its own process (its own peak RSS, no cross-library effects); the
load average is recorded before and after each (the machine is shared). The jinterp side runs
in this interpreter, the SAELens side in ``--saelens-python`` (default ``$SAELENS_PYTHON`` or
``.venv-parity/bin/python``: transformer-lens and sae-lens installed, jinterp not needed).

Usage: ``python benchmarks/bench_sae_model.py [--fast] [--steps 12] [--d-sae 6144]``; prints
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def _cpu_model() -> str:
    """The CPU's model name (the two libraries' ratio differs from one CPU to another)."""
    sys.path.insert(0, REPO)
    from benchmarks.common import cpu_model

    return cpu_model()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _tokens(args):
    """The same ids on both sides: ``[n_seq, context]``, BOS (50256 for GPT-2) at position 0."""
    import numpy as np

    lm_tokens = (args.steps + args.warmup_steps + 4) * args.batch_tokens + 2 * args.buffer_rows
    n_seq = -(-lm_tokens // args.context)
    tokens = np.random.default_rng(0).integers(0, args.d_vocab - 1, (n_seq, args.context))
    tokens[:, 0] = args.d_vocab - 1
    return tokens.astype(np.int32)


# ----------------------------------------------------------------------------- jinterp
def _jinterp_model(args):
    import jax

    from jinterp import models

    model = models.GPT2(models.GPT2Config(
        n_layers=args.n_layers, d_model=args.d_model, n_heads=args.n_heads,
        d_head=args.d_model // args.n_heads, d_mlp=4 * args.d_model, d_vocab=args.d_vocab,
        n_ctx=max(args.context, 128)))
    return model, jax.jit(model.init)(jax.random.key(0))


def run_jinterp_train(args) -> dict:
    import warnings

    import jax

    from jinterp import sae

    model, params = _jinterp_model(args)
    source = sae.TokenArraySource(_tokens(args), args.forward_batch, shuffle=False,
                                  d_vocab=args.d_vocab)
    cfg = sae.SAEConfig("topk", d_in=args.d_model, d_sae=args.d_sae, k=args.k)
    tcfg = sae.TrainConfig(total_steps=args.steps, dead_window=args.dead_window)
    kw = dict(lr=3e-4, batch_size=args.batch_tokens, tcfg=tcfg,
              buffer_batches=args.buffer_rows // (args.forward_batch * args.context),
              normalize=False, b_dec_init=None, log_every=10, progress=False)

    def run(steps):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            result = sae.train_on_model(model, params, cfg, args.hook, source, steps, **kw)
            jax.block_until_ready(result.state)
            return time.perf_counter() - t0, result

    warm_s, _ = run(args.warmup_steps)
    wall, result = run(args.steps)
    forwards = int(result.state["store"].next_batch)
    return {"tokens_per_s": args.steps * args.batch_tokens / wall, "wall_s": wall,
            "warmup_run_s": warm_s, "sae_tokens": args.steps * args.batch_tokens,
            "lm_tokens_forwarded": forwards * args.forward_batch * args.context,
            "final_loss": result.history[-1]["loss"], "final_l0": result.history[-1]["l0"],
            "peak_rss_mb": _peak_rss_mb(), "jax": jax.__version__,
            "code_path": "train_on_model -> ActivationStore.fill (push: LM forward up to the "
                         "hook's block) -> _sae_step (pop + sweep_step), one SAE"}


def run_jinterp_store(args, full: bool) -> dict:
    import jax

    from jinterp import sae

    model, params = _jinterp_model(args)
    source = sae.TokenArraySource(_tokens(args), args.forward_batch, shuffle=False,
                                  d_vocab=args.d_vocab)
    store = sae.ActivationStore(model, args.hook, source, batch_size=args.batch_tokens,
                                buffer_batches=args.buffer_rows // source.seq_len
                                // args.forward_batch)
    if full:
        store.stop_at_layer = None  # before first use: the whole model, unembedding included
    stop = store.stop_at_layer
    state = store.init()
    toks = [jax.numpy.asarray(source.batch(i)) for i in range(args.store_forwards + 1)]

    def forward(state, t):  # one push, then drop the rows again so the buffer never fills
        state = store.push(params, state, t)
        return state.replace(fill=state.fill * 0)

    t0 = time.perf_counter()
    state = jax.block_until_ready(forward(state, toks[0]))
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for t in toks[1:]:
        state = forward(state, t)
    jax.block_until_ready(state)
    wall = time.perf_counter() - t0
    n = args.store_forwards * args.forward_batch * args.context
    return {"tokens_per_s": n / wall, "wall_s": wall, "forwards": args.store_forwards,
            "first_push_s": first_s, "stop_at_layer": stop, "peak_rss_mb": _peak_rss_mb()}


# ----------------------------------------------------------------------------- SAELens
def _saelens_setup(args):
    import datasets
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = HookedTransformer(HookedTransformerConfig(
        n_layers=args.n_layers, d_model=args.d_model, n_ctx=max(args.context, 128),
        d_head=args.d_model // args.n_heads, n_heads=args.n_heads, d_mlp=4 * args.d_model,
        d_vocab=args.d_vocab, act_fn="gelu_new", normalization_type="LN", device="cpu",
        seed=0))
    model.eval()
    ds = datasets.Dataset.from_dict({"input_ids": _tokens(args).tolist()})
    return model, ds


def _saelens_cfg(args, steps: int):
    from sae_lens import LanguageModelSAERunnerConfig, LoggingConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAEConfig

    return LanguageModelSAERunnerConfig(
        sae=TopKTrainingSAEConfig(d_in=args.d_model, d_sae=args.d_sae, k=args.k),
        model_name="random-gpt2-small-shape", hook_name=args.hook, dataset_path="",
        is_dataset_tokenized=True, streaming=False, context_size=args.context,
        n_batches_in_buffer=args.buffer_rows // args.context,
        training_tokens=steps * args.batch_tokens, store_batch_size_prompts=args.forward_batch,
        train_batch_size_tokens=args.batch_tokens, lr=3e-4, device="cpu", dtype="float32",
        dead_feature_window=args.dead_window, feature_sampling_window=2 * args.dead_window,
        logger=LoggingConfig(log_to_wandb=False), n_checkpoints=0, output_path=None,
        save_final_checkpoint=False, verbose=False)


def run_saelens_train(args) -> dict:
    import logging
    import warnings

    import sae_lens
    import torch
    from sae_lens import LanguageModelSAETrainingRunner

    logging.disable(logging.WARNING)
    model, ds = _saelens_setup(args)

    def run(steps):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            runner = LanguageModelSAETrainingRunner(_saelens_cfg(args, steps),
                                                    override_dataset=ds, override_model=model)
            sae = runner.run()
            return time.perf_counter() - t0, runner, sae

    warm_s, _, _ = run(args.warmup_steps)
    wall, runner, _ = run(args.steps)
    return {"tokens_per_s": args.steps * args.batch_tokens / wall, "wall_s": wall,
            "warmup_run_s": warm_s, "sae_tokens": args.steps * args.batch_tokens,
            "lm_tokens_forwarded": runner.activations_store.n_dataset_processed * args.context,
            "peak_rss_mb": _peak_rss_mb(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "sae_lens_version": sae_lens.__version__,
            "code_path": "LanguageModelSAETrainingRunner.run -> SAETrainer.fit -> "
                         "ActivationsStore (mixing buffer, run_with_cache with stop_at_layer) -> "
                         "SAETrainer.step"}


def run_saelens_store(args, full: bool) -> dict:
    import logging
    import warnings

    import sae_lens.training.activations_store as act_store
    import torch
    from sae_lens.training.activations_store import ActivationsStore

    logging.disable(logging.WARNING)
    if full:
        act_store.extract_stop_at_layer_from_tlens_hook_name = lambda name: None
    model, ds = _saelens_setup(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = ActivationsStore.from_config(model, _saelens_cfg(args, args.steps),
                                             override_dataset=ds)
        with torch.no_grad():
            t0 = time.perf_counter()
            store.get_raw_llm_batch()
            first_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in range(args.store_forwards):
                store.get_raw_llm_batch()
            wall = time.perf_counter() - t0
    n = args.store_forwards * args.forward_batch * args.context
    return {"tokens_per_s": n / wall, "wall_s": wall, "forwards": args.store_forwards,
            "first_batch_s": first_s, "stop_at_layer": None if full else
            act_store.extract_stop_at_layer_from_tlens_hook_name(args.hook),
            "peak_rss_mb": _peak_rss_mb(), "code_path": "ActivationsStore.get_raw_llm_batch"}


# ----------------------------------------------------------------------------- driver
RUNNERS = {
    "jinterp_train": run_jinterp_train,
    "saelens_train": run_saelens_train,
    "jinterp_store_stop": lambda a: run_jinterp_store(a, full=False),
    "jinterp_store_full": lambda a: run_jinterp_store(a, full=True),
    "saelens_store_stop": lambda a: run_saelens_store(a, full=False),
    "saelens_store_full": lambda a: run_saelens_store(a, full=True),
}


def _child(args, what: str) -> dict:
    """One measurement in a fresh interpreter, with the load average around it."""
    python = args.saelens_python if what.startswith("saelens") else sys.executable
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "JAX_PLATFORMS": "cpu", "WANDB_MODE": "disabled",
           "TOKENIZERS_PARALLELISM": "false"}
    cmd = [python, os.path.abspath(__file__), "--only", what, *args.passthrough]
    before = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    result = ({"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
              if out.returncode != 0 else json.loads(out.stdout.strip().splitlines()[-1]))
    result.update(process_s=time.perf_counter() - t0, load_avg_1m_before=before,
                  load_avg_1m_after=os.getloadavg()[0])
    return result


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-layers", type=int, default=12)
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--n-heads", type=int, default=12)
    p.add_argument("--d-vocab", type=int, default=50257)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--hook", default="blocks.6.hook_resid_post")
    p.add_argument("--d-sae", type=int, default=6144)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch-tokens", type=int, default=4096, help="tokens per SAE step")
    p.add_argument("--forward-batch", type=int, default=16, help="prompts per LM forward")
    p.add_argument("--buffer-rows", type=int, default=8192, help="activations in the buffer")
    p.add_argument("--steps", type=int, default=12, help="timed SAE steps")
    p.add_argument("--warmup-steps", type=int, default=1)
    p.add_argument("--store-forwards", type=int, default=4, help="timed forwards, store alone")
    p.add_argument("--dead-window", type=int, default=1000, help="steps (SAELens's default)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--saelens-python", default=os.environ.get(
        "SAELENS_PYTHON", os.path.join(REPO, ".venv-parity", "bin", "python")))
    p.add_argument("--skip", nargs="*", default=[], choices=sorted(RUNNERS))
    p.add_argument("--fast", action="store_true", help="tiny sizes: a smoke test of the script")
    p.add_argument("--only", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.fast:
        args.n_layers, args.d_model, args.n_heads, args.d_vocab = 2, 64, 4, 1000
        args.hook, args.d_sae, args.k, args.batch_tokens = "blocks.0.hook_resid_post", 256, 8, 512
        args.forward_batch, args.buffer_rows, args.steps, args.store_forwards = 4, 2048, 4, 2
    args.passthrough = [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in (
        "n_layers", "d_model", "n_heads", "d_vocab", "context", "hook", "d_sae", "k",
        "batch_tokens", "forward_batch", "buffer_rows", "steps", "warmup_steps",
        "store_forwards", "dead_window", "threads")]
    return args


def main():
    args = _parse()
    if args.only:
        print(json.dumps(RUNNERS[args.only](args)))
        return
    result = {"config": {
        "model": {"n_layers": args.n_layers, "d_model": args.d_model, "n_heads": args.n_heads,
                  "d_mlp": 4 * args.d_model, "d_vocab": args.d_vocab, "weights": "random"},
        "hook": args.hook, "context": args.context, "sae": {"architecture": "topk",
                                                            "d_sae": args.d_sae, "k": args.k},
        "batch_tokens": args.batch_tokens, "prompts_per_forward": args.forward_batch,
        "buffer_rows": args.buffer_rows, "timed_steps": args.steps,
        "warmup_steps": args.warmup_steps, "threads": args.threads, "dtype": "float32",
        "platform": "cpu", "cpu_count": os.cpu_count(), "cpu_model": _cpu_model(),
        "timing": "tokens/s = timed SAE tokens / wall time of a whole training run (first "
                  "buffer fill included), after a warm-up run that compiles (jinterp) / "
                  "allocates (torch); store: forwarded tokens / wall time of the timed "
                  "forwards after one untimed forward"}}
    for what in RUNNERS:
        if what not in args.skip:
            result[what] = _child(args, what)

    def ratio(a, b):
        if "tokens_per_s" in result.get(a, {}) and "tokens_per_s" in result.get(b, {}):
            return result[a]["tokens_per_s"] / result[b]["tokens_per_s"]
        return None

    result["speedup_train_vs_saelens"] = ratio("jinterp_train", "saelens_train")
    result["speedup_store_vs_saelens"] = ratio("jinterp_store_stop", "saelens_store_stop")
    result["store_stop_at_layer_gain"] = {"jinterp": ratio("jinterp_store_stop",
                                                           "jinterp_store_full"),
                                          "saelens": ratio("saelens_store_stop",
                                                           "saelens_store_full")}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    main()
