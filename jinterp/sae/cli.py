"""``python -m jinterp.sae.train``: train SAEs on a local model's activations in one command.

Example (GPT-2 small's residual stream after block 6, a TopK SAE, a token file)::

    python -m jinterp.sae.train --model ckpt/gpt2 --hook blocks.6.hook_resid_post \\
        --arch topk --d-sae 24576 --k 32 --tokens tokens.npy --steps 30000 \\
        --batch-size 4096 --lr 2e-4 --exclude-bos --eval-sequences 64 --out runs/gpt2_l6

Several values for ``--d-sae``, ``--k``, ``--l1``, ``--l0`` or ``--lr`` train their product as
one sweep on one activation stream (one compiled program). A rerun with the same ``--out``
resumes from the last checkpoint; one with other settings stops with the differing fields.
Everything goes through :func:`jinterp.sae.train_on_model` (the same from Python).

Several devices or hosts: ``--mesh data=D,model=M`` splits the forwards, the buffer and the
batches over ``D`` and each SAE's latents over ``M`` (``D * M`` = every device of every
process). A multi-process run starts the *same* command once per process with
``--coordinator host:port --num-processes N --process-id i`` (or lets the cluster's variables
say it: SLURM, Cloud TPU; see ``docs/scale_out_runs.md``); process 0 writes the logs and files.
SIGTERM saves a checkpoint at the next step and exits with status 0; rerun to resume.

Transcoders and crosscoders use the same command::

    # a transcoder replacing block 6's MLP, with a skip connection
    ... --hook blocks.6.ln2.hook_normalized --hook-out blocks.6.hook_mlp_out --skip --arch relu
    # an acausal crosscoder over four layers (Anthropic's: ReLU, block-summed decoder norms)
    ... --hooks blocks.0.hook_resid_post,blocks.1.hook_resid_post,... --arch crosscoder
    # a two-model crosscoder for model diffing: the same hook of two checkpoints
    ... --model ckpt/base ckpt/finetuned --hook blocks.6.hook_resid_post --arch crosscoder
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import sys
from collections.abc import Sequence

from jinterp import distributed
from jinterp.sae.config import ARCHITECTURE_NAMES, SAEConfig
from jinterp.sae.model_trainer import train_on_model
from jinterp.sae.sources import SyntheticTokenSource, TokenArraySource, text_source
from jinterp.sae.store import ActivationStore, as_hook_spec


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jinterp.sae.train",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, nargs="+",
                   help="a HuggingFace checkpoint directory; two or more (checkpoints of one "
                   "model, e.g. base and fine-tuned) train a crosscoder over --hook of each")
    hooks = p.add_mutually_exclusive_group(required=True)
    hooks.add_argument("--hook", help="activation name (name:h for one head); a transcoder's "
                       "input")
    hooks.add_argument("--hooks", help="comma-separated activation names: a crosscoder's "
                       "blocks (e.g. blocks.0.hook_resid_post,blocks.1.hook_resid_post)")
    p.add_argument("--hook-out", "--target-hook", dest="hook_out", default=None,
                   help="a transcoder's output activation (e.g. blocks.6.hook_mlp_out); --hook "
                   "is then its input (e.g. blocks.6.ln2.hook_normalized)")
    p.add_argument("--skip", action="store_true",
                   help="a transcoder with a learned linear skip connection (W_skip)")
    p.add_argument("--arch", default="topk", choices=(*ARCHITECTURE_NAMES, CROSSCODER),
                   help="crosscoder = Anthropic's crosscoder (relu with block-summed decoder "
                   "norms); any architecture is a crosscoder with --hooks or several --model")
    p.add_argument("--d-sae", type=int, nargs="+", required=True)
    p.add_argument("--k", type=int, nargs="+", default=[None])
    p.add_argument("--l1", type=float, nargs="+", default=[None], help="relu / gated L1 weight")
    p.add_argument("--l0", type=float, nargs="+", default=[None], help="jumprelu L0 weight")
    p.add_argument("--n-experts", type=int, default=None, help="switch experts")
    p.add_argument("--lr", type=float, nargs="+", default=[3e-4])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=4096, help="tokens per SAE step")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--tokens", help=".npy token file, [n_seq, pos] or flat [n_tokens]")
    src.add_argument("--text", nargs="+", help=".txt files or directories (tokenised with the "
                     "model directory's tokenizer)")
    src.add_argument("--synthetic", action="store_true", help="uniform random tokens (tests)")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--forward-batch", type=int, default=8, help="sequences per LM forward")
    p.add_argument("--buffer-batches", type=int, default=16, help="buffer size in forwards")
    p.add_argument("--exclude-bos", action="store_true", help="drop BOS (and pad) positions")
    p.add_argument("--exclude-ids", type=int, nargs="*", default=[])
    p.add_argument("--exclude-first", action="store_true", help="drop position 0")
    p.add_argument("--eval-sequences", type=int, default=0, help="held-out sequences")
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--dtype", default=None, help="model dtype (default: the checkpoint's)")
    p.add_argument("--out", required=True)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--mesh", default=None, type=parse_mesh, metavar="data=D,model=M",
                   help="split the run over D x M devices (all devices of all processes; "
                   "default: one device)")
    distributed.add_arguments(p)
    return p


def parse_mesh(text: str) -> dict[str, int]:
    """``"data=4,model=2"`` -> ``{"data": 4, "model": 2}`` (a missing axis has size 1)."""
    sizes = {"data": 1, "model": 1}
    for part in (p for p in text.split(",") if p.strip()):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq or name not in sizes or not value.strip().isdigit() or int(value) < 1:
            raise argparse.ArgumentTypeError(
                f"--mesh {text!r}: expected data=D,model=M with positive integers (e.g. "
                "data=4,model=2)")
        sizes[name] = int(value)
    return sizes


def make_run_mesh(sizes: dict[str, int] | None):
    """The ``data x model`` mesh over every device of every process, or None."""
    if sizes is None:
        return None
    import jax

    from jinterp.sharding import make_mesh

    n = sizes["data"] * sizes["model"]
    if n != jax.device_count():
        raise SystemExit(f"--mesh data={sizes['data']},model={sizes['model']} covers {n} "
                         f"devices but the run has {jax.device_count()} "
                         f"({jax.process_count()} processes x {jax.local_device_count()}): "
                         f"choose sizes whose product is {jax.device_count()}.")
    return make_mesh(sizes["data"], sizes["model"])


CROSSCODER = "crosscoder"


def sweep_configs(args: argparse.Namespace, d_in: int, *, d_out: int | None = None,
                  n_blocks: int = 1) -> list[SAEConfig]:
    """The product of the listed sizes and coefficients, as configs.

    Args:
        d_in: the input width (a crosscoder's: all blocks together).
        d_out: a transcoder's output width.
        n_blocks: a crosscoder's number of blocks.
    """
    if args.arch == CROSSCODER and n_blocks < 2:
        raise SystemExit("--arch crosscoder reads several blocks: pass --hooks a,b,... or two "
                         "--model directories.")
    arch = "relu" if args.arch == CROSSCODER else args.arch
    out = []
    for d_sae, k, l1, l0 in itertools.product(args.d_sae, args.k, args.l1, args.l0):
        extra = {name: v for name, v in (("l1_coefficient", l1), ("l0_coefficient", l0))
                 if v is not None}
        out.append(SAEConfig(arch, d_in=d_in, d_sae=d_sae, k=k, n_experts=args.n_experts,
                             d_out=d_out, skip_connection=args.skip, n_blocks=n_blocks,
                             **extra))
    return out


def _load_models(dirs: list[str], dtype: str | None):
    """The port and one parameter set per directory (several: checkpoints of one model)."""
    model, params = _ports().load_pretrained(dirs[0], dtype=dtype)
    if len(dirs) == 1:
        return model, params
    sets = [params]
    for d in dirs[1:]:
        other, p = _ports().load_pretrained(d, dtype=dtype)
        if other != model:
            raise SystemExit(f"{d} is not a checkpoint of the same model as {dirs[0]} (their "
                             "configs differ); a two-model crosscoder reads one port's hooks "
                             "with two parameter sets.")
        sets.append(p)
    return model, sets


def _ports():
    """``jinterp.models``, loaded at run time: the command line is an application on top of
    the library and must read checkpoints, but no library module depends on the ports (the
    rule ``tests/core/test_vocabulary.py`` enforces for every ``jinterp`` import statement)."""
    return importlib.import_module("jinterp.models")


def _special_ids(model_dir: str, want: bool) -> tuple[list[int], object]:
    """(BOS / pad ids to exclude, the tokenizer or None) of the model directory."""
    try:
        tok = _ports().load_tokenizer(model_dir)
    except (FileNotFoundError, ValueError, OSError):
        if want:
            raise
        return [], None
    ids = sorted({i for i in (tok.bos_id, tok.pad_id) if i is not None}) if want else []
    return ids, tok


def main(argv: Sequence[str] | None = None):
    """Runs the command; returns the :class:`~jinterp.sae.ModelTrainResult`."""
    args = parser().parse_args(argv)
    distributed.initialize_from_args(args)  # before anything touches a device
    mesh = make_run_mesh(args.mesh)
    model, params = _load_models(args.model, args.dtype)
    hooks = [h for h in args.hooks.split(",") if h] if args.hooks else [args.hook]
    if args.hook_out is not None and (len(hooks) > 1 or len(args.model) > 1):
        raise SystemExit("--hook-out (a transcoder) reads one --hook of one --model.")
    exclude, tok = _special_ids(args.model[0], args.exclude_bos or args.text is not None)
    exclude = exclude if args.exclude_bos else []
    n_seq = args.forward_batch
    eval_tokens = None
    if args.synthetic:
        source = SyntheticTokenSource(model.d_vocab, n_seq, args.seq_len, seed=args.seed)
        if args.eval_sequences:
            eval_tokens = SyntheticTokenSource(model.d_vocab, args.eval_sequences, args.seq_len,
                                               seed=args.seed + 1).batch(0)
    else:
        kw = dict(seed=args.seed, d_vocab=model.d_vocab, held_out=args.eval_sequences)
        if args.text is not None:
            source = text_source(args.text, tok, n_seq, args.seq_len, **kw)
        else:
            source = TokenArraySource(args.tokens, n_seq, seq_len=args.seq_len, **kw)
        if args.eval_sequences:
            eval_tokens = source.held_out_tokens()
    probe = hooks + ([args.hook_out] if args.hook_out else [])
    width = ActivationStore(model, probe, source, batch_size=1).widths
    n_blocks = len(hooks) * len(args.model)
    w_in = width[as_hook_spec(hooks[0]).key]
    configs = sweep_configs(args, w_in * n_blocks, n_blocks=n_blocks, d_out=None if
                            args.hook_out is None else width[as_hook_spec(args.hook_out).key])
    lrs = args.lr
    if len(lrs) > 1:  # the learning rate is a per-instance array: a product with the configs
        configs, lrs = [c for c in configs for _ in lrs], [lr for _ in configs for lr in lrs]
    names = {"model_name": str(args.model[0])} if len(args.model) == 1 else {
        "model_name": str(args.model[0]), "model_names": [str(m) for m in args.model]}
    result = train_on_model(
        model, params, configs, hooks[0] if len(hooks) == 1 else hooks, source, args.steps,
        hook_out=args.hook_out, lr=lrs[0] if len(lrs) == 1 else lrs, seeds=args.seed,
        batch_size=args.batch_size,
        buffer_batches=args.buffer_batches, exclude_ids=sorted(set(exclude + args.exclude_ids)),
        exclude_first=args.exclude_first, out_dir=args.out,
        checkpoint_every=args.checkpoint_every, log_every=args.log_every,
        eval_every=args.eval_every or (args.steps if eval_tokens is not None else None),
        eval_tokens=eval_tokens, progress=not args.no_progress, mesh=mesh,
        metadata={**names, "dataset_path": str(args.tokens or args.text or "synthetic")})
    if result.preempted and distributed.is_main():
        step = int(distributed.to_host(result.state["sae"][0].step)[0])
        print(f"stopped by a signal after step {step} of {args.steps}: checkpoint saved in "
              f"{args.out}/checkpoints; rerun the same command to resume.", flush=True)
    distributed.shutdown()
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
