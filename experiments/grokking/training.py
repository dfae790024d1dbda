"""Full-batch AdamW training: ``lax.scan`` chunks, seeds at once with ``vmap``, exact resume.

The training state is one pytree ``{"params", "opt_state", "step"}`` whose every leaf has a
leading ``seed`` axis; one compiled call runs ``steps_per_call`` steps of every seed
(``vmap(scan(step))``) and then evaluates train and test loss and accuracy. Full-batch training
has no data order and no randomness after init, so the state alone determines the future, and a
run restored from its orbax checkpoint continues bit for bit (checked in the tests).

On disk, under ``out_dir``::

    config.json                 the GrokConfig (a resumed run must match it)
    ckpt/<step>/                orbax checkpoint of the state after every chunk
    history/chunk_<end>.npz     per-step train loss/accuracy of the chunk, the evaluation at
                                its end, and (every ``snapshot_every`` steps) the parameters

``history/`` is plain npz (loaded with ``allow_pickle=False``); the progress measures are computed
from it afterwards, because the key frequencies come from the final model.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from jinterp import distributed
from jinterp.checkpoint import Checkpointer

from .config import GrokConfig
from .data import ModAddData, make_data, tokens
from .model import Params, init_params, loss_and_accuracy

TrainState = dict[str, Any]
SEP = "."  # joins pytree paths into npz keys


def make_optimizer(cfg: GrokConfig) -> optax.GradientTransformation:
    """AdamW with the authors' ``LambdaLR(min(step / 10, 1))``: the very first step has lr 0."""
    def schedule(count):
        return cfg.lr * jnp.minimum(count / cfg.warmup_steps, 1.0)

    return optax.adamw(schedule, b1=cfg.beta1, b2=cfg.beta2, eps=cfg.eps,
                       weight_decay=cfg.weight_decay)


def init_state(cfg: GrokConfig) -> TrainState:
    """Initial state of every seed in ``cfg.seeds``, stacked on a leading axis (one compiled
    program: run op by op, the vmapped init dispatched ~180 small compiles)."""
    return _init_state(cfg, jnp.asarray(cfg.seeds, dtype=jnp.uint32))


@functools.partial(jax.jit, static_argnums=0)
def _init_state(cfg: GrokConfig, seeds: jax.Array) -> TrainState:
    opt = make_optimizer(cfg)

    def one(seed):
        params = init_params(cfg, jax.random.key(seed))
        return {"params": params, "opt_state": opt.init(params), "step": jnp.zeros((), jnp.int32)}

    return jax.vmap(one)(seeds)


def device_data(cfg: GrokConfig, data: ModAddData) -> dict[str, jax.Array]:
    """Train/test tokens and labels as device arrays (arguments, not baked-in constants)."""
    out = {}
    for which in ("train", "test"):
        a, b, y = data.split(which)
        out[f"{which}_tokens"] = jnp.asarray(tokens(a, b, cfg.p))
        out[f"{which}_labels"] = jnp.asarray(y)
    return out


@functools.lru_cache(maxsize=8)
def make_chunk_fn(cfg: GrokConfig):
    """Jitted ``(state, data) -> (state, metrics)``: ``steps_per_call`` steps for every seed.

    Cached per config, so resuming in the same process reuses the compiled program.
    """
    opt = make_optimizer(cfg)

    def step(state: TrainState, batch) -> tuple[TrainState, tuple[jax.Array, jax.Array]]:
        grad_fn = jax.value_and_grad(loss_and_accuracy, has_aux=True)
        (loss, acc), grads = grad_fn(state["params"], batch["train_tokens"], batch["train_labels"],
                                   cfg.loss_classes)
        updates, opt_state = opt.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, (loss, acc)

    def chunk(state: TrainState, batch) -> tuple[TrainState, dict[str, jax.Array]]:
        state, (losses, accs) = jax.lax.scan(lambda s, _: step(s, batch), state, None,
                                             length=cfg.steps_per_call)
        evals = evaluate(state["params"], batch, cfg.loss_classes)
        return state, {"train_loss": losses, "train_acc": accs, **evals}

    return jax.jit(jax.vmap(chunk, in_axes=(0, None)))


def evaluate(params: Params, batch, n_classes: int) -> dict[str, jax.Array]:
    """Train and test loss and accuracy of one seed's parameters (over ``n_classes`` logits)."""
    out = {}
    for which in ("train", "test"):
        loss, acc = loss_and_accuracy(params, batch[f"{which}_tokens"], batch[f"{which}_labels"],
                                      n_classes)
        out[f"eval_{which}_loss"], out[f"eval_{which}_acc"] = loss, acc
    return out


_evaluate_seeds = jax.jit(jax.vmap(evaluate, in_axes=(0, None, None)), static_argnums=2)


def flatten_params(params: Params) -> dict[str, np.ndarray]:
    """``{"blocks.mlp.W_in": array, ...}`` for npz files."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {SEP.join(k.key for k in path): np.asarray(leaf) for path, leaf in leaves}


def unflatten_params(flat: dict[str, np.ndarray]) -> Params:
    """Inverse of :func:`flatten_params`."""
    out: dict = {}
    for name, value in flat.items():
        node = out
        *parents, leaf = name.split(SEP)
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return out


def seed_mesh(n_seeds: int) -> Mesh | None:
    """A mesh over every process's devices that splits the seed axis, in multi-process runs.

    Seeds are independent models, so splitting them is data parallelism with no collective in
    the step (XLA inserts none). One process keeps today's single-device program (None).

    Raises:
        ValueError: when the seeds do not divide over the devices.
    """
    if jax.process_count() == 1:
        return None
    n_dev = jax.device_count()
    if n_seeds % n_dev:
        raise ValueError(f"{n_seeds} seeds do not split over {n_dev} devices "
                         f"({jax.process_count()} processes): train a multiple of {n_dev} "
                         "seeds (--seeds), or fewer devices per process")
    return distributed.check_mesh(Mesh(np.asarray(jax.devices()), ("seeds",)))


def _place(tree: Any, mesh: Mesh | None, split: bool) -> Any:
    """Host values as global arrays: seed axis split (``split``) or replicated."""
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec("seeds") if split else PartitionSpec())
    return distributed.place_host(tree, sharding)


def _write_chunk(path: str, end_step: int, metrics: dict, params: Params | None) -> None:
    """Writes one history file from process 0 (the gather is collective: every process calls)."""
    metrics, params = distributed.to_host((metrics, params))
    if not distributed.is_main():
        return
    arrays = {k: np.asarray(v) for k, v in metrics.items()}
    arrays["end_step"] = np.asarray(end_step)
    if params is not None:
        arrays |= {"params" + SEP + k: v for k, v in flatten_params(params).items()}
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _check_config(cfg: GrokConfig, out_dir: str) -> None:
    if not distributed.is_main():  # every process reads the same file; process 0 writes it
        distributed.barrier("grokking config")
    path = os.path.join(out_dir, "config.json")
    wanted = json.loads(json.dumps(dataclasses.asdict(cfg)))
    if os.path.exists(path):
        with open(path) as f:
            found = json.load(f)
        if found != wanted:
            diff = {k: (found.get(k), wanted.get(k)) for k in wanted
                    if found.get(k) != wanted.get(k)}
            raise ValueError(f"{out_dir} holds a run with a different config {diff} (saved, "
                             "requested); use a new --out directory or the saved options to "
                             "resume.")
    else:
        with open(path, "w") as f:
            json.dump(wanted, f, indent=1)
    if distributed.is_main():
        distributed.barrier("grokking config")


def _read_seconds(out_dir: str) -> float:
    path = os.path.join(out_dir, "timing.json")
    if not os.path.exists(path):
        return 0.0
    with open(path) as f:
        return float(json.load(f)["train_seconds"])


def _write_seconds(out_dir: str, seconds: float) -> None:
    if not distributed.is_main():
        return
    with open(os.path.join(out_dir, "timing.json"), "w") as f:
        json.dump({"train_seconds": seconds}, f)


def train_seconds(out_dir: str) -> float:
    """Wall-clock seconds spent in training chunks so far, summed over resumed sessions."""
    return _read_seconds(out_dir)


def train(cfg: GrokConfig, out_dir: str, *, progress: bool = True,
          max_chunks: int | None = None) -> TrainState:
    """Trains (or resumes) the run in ``out_dir`` and returns the final state.

    In a multi-process run (:func:`jinterp.distributed.initialize`) the seeds are split over
    every process's devices (:func:`seed_mesh`); process 0 writes the files and the bar.

    Args:
        max_chunks: stop after this many chunks (simulates an interruption; tests use it).
    """
    os.makedirs(os.path.join(out_dir, "history"), exist_ok=True)
    _check_config(cfg, out_dir)
    mesh = seed_mesh(len(cfg.seeds))
    data = make_data(cfg.p, cfg.frac_train, cfg.data_seed)
    batch = _place(device_data(cfg, data), mesh, split=False)
    state = _place(init_state(cfg), mesh, split=True)
    chunk_fn = make_chunk_fn(cfg)
    hist = lambda step: os.path.join(out_dir, "history", f"chunk_{step:06d}.npz")
    with Checkpointer(os.path.join(out_dir, "ckpt")) as ckpt:
        state = ckpt.restore_or(state)
        start = int(distributed.to_host(state["step"])[0])
        if start == 0:
            init_eval = _evaluate_seeds(state["params"], batch, cfg.loss_classes)
            _write_chunk(hist(0), 0, init_eval, state["params"])
        bar = tqdm(total=cfg.steps, initial=start, unit="step", desc="grokking",
                   disable=not progress or not distributed.is_main())
        done, seconds = 0, _read_seconds(out_dir)
        while start < cfg.steps and (max_chunks is None or done < max_chunks):
            tic = time.perf_counter()
            state, metrics = chunk_fn(state, batch)
            start += cfg.steps_per_call
            keep = start % cfg.snapshot_every == 0 or start == cfg.steps
            snap = state["params"] if keep else None
            metrics = distributed.to_host(metrics)
            _write_chunk(hist(start), start, metrics, snap)
            ckpt.save(start, state)
            seconds += time.perf_counter() - tic
            _write_seconds(out_dir, seconds)
            done += 1
            bar.update(cfg.steps_per_call)
            bar.set_postfix(train=f"{float(metrics['eval_train_loss'][0]):.2e}",
                            test=f"{float(metrics['eval_test_loss'][0]):.2e}",
                            test_acc=f"{float(metrics['eval_test_acc'][0]):.3f}")
        bar.close()
    return state


def load_history(out_dir: str) -> dict[str, Any]:
    """Reads ``history/`` back: curves with a leading seed axis and the parameter snapshots.

    Returns:
        ``train_loss``/``train_acc`` ``[seed, step]`` (per step, before that step's update);
        ``eval_steps`` ``[n_eval]`` and ``eval_{train,test}_{loss,acc}`` ``[seed, n_eval]``;
        ``snapshot_steps`` ``[n_snap]`` and ``snapshots``: a params pytree with leaves
        ``[n_snap, seed, ...]``.
    """
    files = sorted(glob.glob(os.path.join(out_dir, "history", "chunk_*.npz")))
    if not files:
        raise FileNotFoundError(f"no training history in {out_dir}/history; train first.")
    per_step = {"train_loss": [], "train_acc": []}
    evals, eval_steps, snaps, snap_steps = {}, [], [], []
    for path in files:
        with np.load(path, allow_pickle=False) as f:
            step = int(f["end_step"])
            eval_steps.append(step)
            for key in f.files:
                if key.startswith("eval_"):
                    evals.setdefault(key, []).append(f[key])
            if step > 0:
                for key in per_step:
                    per_step[key].append(f[key])
            flat = {k[len("params" + SEP):]: f[k] for k in f.files if k.startswith("params" + SEP)}
            if flat:
                snaps.append(unflatten_params(flat))
                snap_steps.append(step)
    out: dict[str, Any] = {k: np.concatenate(v, axis=1) for k, v in per_step.items() if v}
    out |= {k: np.stack(v, axis=1) for k, v in evals.items()}
    out["eval_steps"] = np.asarray(eval_steps)
    out["snapshot_steps"] = np.asarray(snap_steps)
    out["snapshots"] = jax.tree.map(lambda *xs: np.stack(xs), *snaps)
    return out
