"""The SAE training driver: :func:`train` (data -> trained, checkpointed, logged SAE).

:func:`train` wraps the pure step of :mod:`jinterp.sae.train_step` with what a long run
needs: input normalisation estimated from the data, ``b_dec`` initialised at the geometric
median (or mean) of the data, many steps per compiled call (``lax.scan`` over a chunk of
batches), a tqdm progress bar, metrics to JSONL, orbax checkpoints every N steps and exact
resume (the data position is a function of the step, so a resumed run replays exactly the
batches the uninterrupted one would have seen).

Multi-process runs (:mod:`jinterp.distributed`): every process calls :func:`train` with the
same arguments and a ``mesh`` over all processes' devices. The state lives sharded on that
mesh (each process holds only its shards; checkpoints are written shard by shard and restore
onto whatever mesh the resumed run uses), each process places only its own rows of every
batch, and the metrics log, progress bar and ``metrics.jsonl`` come from process 0. SIGTERM
(a preemption; :class:`~jinterp.preemption.Preemption`, polled after every compiled call and
agreed across processes) saves a checkpoint at the next step boundary and returns early with
``TrainResult.preempted`` set; run again, the job continues bit for bit. The checkpoint folder
remembers the run's configuration and refuses to resume a different one.

The log's ``mse`` is in normalised units (see below); ``mse_raw`` and ``fvu`` (centred, per
batch) are in the activations' own units. A run shorter than ``dead_after_tokens`` gets a dead
window scaled to it, with a warning (:func:`~jinterp.sae.schedule.scaled_dead_window`).

Input normalisation (Anthropic, April 2024): the trainer multiplies every batch by a constant
``s`` with ``E||s x||^2 = d_in``, so hyper-parameters such as the L1 coefficient transfer
between layers and models. The returned parameters have ``s`` folded back in
(:func:`fold_norm_scale`): they take raw activations and reconstruct raw activations.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Iterator
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float
from tqdm.auto import tqdm

from jinterp import distributed
from jinterp.checkpoint import Checkpointer
from jinterp.preemption import Preemption
from jinterp.sae import sharding as sharding_lib
from jinterp.sae.architectures import Params
from jinterp.sae.config import SAEConfig
from jinterp.sae.data import ActivationSource, as_source
from jinterp.sae.schedule import TrainConfig, scaled_dead_window
from jinterp.sae.train_step import TrainState, make_train_loop, make_train_step, train_state
from jinterp.sae.transcoder_data import paired_source


# ----------------------------------------------------------------------------- data statistics
def estimate_norm_scale(x: Float[Array | np.ndarray, "batch d_in"]) -> float:
    """``s`` with ``E||s x||^2 = d_in`` over the rows of ``x`` (Anthropic's normalisation)."""
    mean_sq = float(np.mean(np.sum(np.square(np.asarray(x, np.float64)), axis=-1)))
    if not mean_sq > 0:
        raise ValueError("cannot normalise activations whose mean squared norm is 0")
    return float(np.sqrt(x.shape[-1] / mean_sq))


@functools.partial(jax.jit, static_argnames=("iters", "eps"))
def geometric_median(x: Float[Array | np.ndarray, "batch d"], iters: int = 100,
                     eps: float = 1e-8) -> Float[Array, " d"]:
    """The point minimising the summed Euclidean distance to the rows of ``x`` (Weiszfeld).

    Gao et al. and SAELens start ``b_dec`` here: unlike the mean it is not dragged by the
    few huge-norm tokens (e.g. BOS) that residual streams contain.
    """
    x = x.astype(jnp.float32)

    def body(_, y):
        w = 1.0 / jnp.maximum(jnp.linalg.norm(x - y[None, :], axis=-1), eps)  # [batch]
        return (w @ x) / jnp.sum(w)

    return jax.lax.fori_loop(0, iters, body, jnp.mean(x, axis=0))


def fold_norm_scale(cfg: SAEConfig, params: Params, norm_scale: float,
                    target_norm_scale: float | None = None) -> Params:
    """Parameters for raw activations from ones trained on ``x * norm_scale``.

    Latents stay identical: the input-side weights absorb ``s`` (``W_enc s``; ``b_dec``
    subtracted before the encoder becomes ``b_dec / s``), the output side divides by the
    target scale (``W_dec / s_t``, ``b_dec / s_t``; a skip transcoder's ``W_skip s / s_t``).
    Thresholds and encoder biases act on pre-activations, which do not change.
    """
    s_in = jnp.float32(norm_scale)
    s_out = s_in if target_norm_scale is None else jnp.float32(target_norm_scale)
    out = dict(params)
    for name in ("W_enc", "W_router"):
        if name in out:
            out[name] = (out[name] * s_in).astype(params[name].dtype)
    out["W_dec"] = (out["W_dec"] / s_out).astype(params["W_dec"].dtype)
    out["b_dec"] = (out["b_dec"] / s_out).astype(params["b_dec"].dtype)
    if "W_skip" in out:
        out["W_skip"] = (out["W_skip"] * (s_in / s_out)).astype(params["W_skip"].dtype)
    return out


# ----------------------------------------------------------------------------- results & logs
@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        state: the final training state (normalised units; resume from it).
        params: the trained SAE with the normalisation folded in (for raw activations).
        history: the logged metrics, one dict per logged step (also in ``metrics.jsonl``).
        preempted: the run stopped early on SIGTERM (after saving a checkpoint, if it keeps
            them); run it again to continue.
    """

    state: TrainState
    params: Params
    history: list[dict[str, float | int]]
    preempted: bool = False


def _scalar_metrics(metrics: dict[str, Array | np.ndarray]) -> dict[str, np.ndarray]:
    """Host copies of the per-step scalar metrics (vectors such as ``fired`` are dropped)."""
    host = distributed.to_host(metrics)
    return {k: np.asarray(v) for k, v in host.items() if np.ndim(v) <= 1}


def _rewind_jsonl(path: str, step: int, *, write: bool = True) -> list[dict[str, float | int]]:
    """Keeps only log lines of steps <= ``step`` (a crashed run may have logged past its last
    checkpoint) and returns them, so a resumed run's log equals an uninterrupted one's.

    The file is replaced atomically, so other processes that only read it (``write=False``)
    see the old or the new lines, never half a file; a line cut by a crash is dropped."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as fh:
        for line in fh:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # the last line of a killed run
                continue
    rows = [r for r in rows if r["step"] <= step]
    if write:
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
        os.replace(tmp, path)
    return rows


# ----------------------------------------------------------------------------- the driver
def _initial_state(cfg: SAEConfig, tcfg: TrainConfig, source: ActivationSource, *, lr: float,
                   seed: int, normalize: bool, b_dec_init: str | None,
                   init_batches: int) -> TrainState:
    """A fresh state with the normalisation and ``b_dec`` estimated from the first batches
    (a transcoder's target gets its own scale, and ``b_dec``, in its space, from the targets)."""
    first = [b for _, b in zip(range(init_batches), source.batches(0))]
    sample = _stack(first, np.concatenate)
    xs, ys = sample if isinstance(sample, tuple) else (sample, sample)
    scale = estimate_norm_scale(xs) if normalize else 1.0
    t_scale = estimate_norm_scale(ys) if normalize and ys is not xs else scale
    state = train_state(cfg, jax.random.PRNGKey(seed), lr=lr, tcfg=tcfg, norm_scale=scale,
                        target_norm_scale=t_scale)
    if b_dec_init is not None:
        scaled = jnp.asarray(ys) * t_scale
        centre = geometric_median(scaled) if b_dec_init == "geometric_median" else scaled.mean(0)
        params = {**state.params, "b_dec": centre.astype(state.params["b_dec"].dtype)}
        state = state.replace(params=params)
    return state


def _stack(batches: list, how=np.stack):
    """``how`` over a list of batches, per element for ``(x, y)`` pairs."""
    if isinstance(batches[0], tuple):
        return tuple(how(list(column)) for column in zip(*batches))
    return how(batches)


def _chunks(source: ActivationSource, start: int, steps: int, per_call: int
            ) -> Iterator[tuple[int, np.ndarray | tuple[np.ndarray, np.ndarray]]]:
    """(first step, stacked batches) chunks of ``per_call`` steps; the tail one by one."""
    it = source.batches(start)
    step = start
    while step < steps:
        n = per_call if steps - step >= per_call else 1
        yield step, _stack([next(it) for _ in range(n)])
        step += n


def train(cfg: SAEConfig, data: Any, steps: int, *, lr: float = 5e-5,
          tcfg: TrainConfig | None = None, batch_size: int = 4096, seed: int = 0,
          out_dir: str | os.PathLike | None = None, checkpoint_every: int | None = None,
          steps_per_call: int = 1, log_every: int = 1, normalize: bool = True,
          b_dec_init: Literal["geometric_median", "mean"] | None = "geometric_median",
          init_batches: int = 4, mesh: jax.sharding.Mesh | None = None,
          progress: bool = True) -> TrainResult:
    """Trains one SAE on activations from ``data`` for ``steps`` steps.

    Args:
        cfg: the SAE (architecture, sizes, sparsity coefficient).
        data: an array / memmap / .npy path(s) (read in shuffled chunks), an iterator of
            activation arrays, or an :class:`~jinterp.sae.data.ActivationSource`. A
            transcoder (``cfg.d_out`` set) trains on ``(x, y)`` streams: ``data=(x_data,
            y_data)`` with the same tokens row for row (each as above), an iterator of
            ``(x, y)`` pairs, or a :mod:`~jinterp.sae.transcoder_data` source; ``x`` and ``y``
            get their own normalisation scales and ``b_dec`` starts at the targets' median.
            In a multi-process run every process passes the same data (each places only its
            own rows of every batch).
        steps: total number of steps (a resumed run continues up to it).
        lr: base learning rate.
        tcfg: schedules and optimizer options; default: ``TrainConfig(total_steps=steps)``.
        batch_size: tokens per step.
        seed: seeds parameter init and the data order.
        out_dir: where ``metrics.jsonl`` and the ``checkpoints/`` folder go (None: nowhere).
        checkpoint_every: save the state every this many steps (needs ``out_dir``); a run
            with a checkpoint in ``out_dir`` resumes from it (on any mesh), and refuses one
            written with a different ``cfg``, ``tcfg``, ``lr``, ``batch_size``, ``seed`` or
            initialisation.
        steps_per_call: steps per compiled call (``lax.scan``); must divide checkpoint_every.
        log_every: log metrics of every this-many-th step.
        normalize: scale inputs so that ``E||x||^2 = d_in`` (folded back in ``params``).
        b_dec_init: start ``b_dec`` at the data's geometric median or mean (None: zero).
        init_batches: batches used to estimate the normalisation and ``b_dec``.
        mesh: optional ``data x model`` mesh (:func:`jinterp.sae.sharding.make_mesh`);
            required, over every process's devices, in a multi-process run.
        progress: show a tqdm progress bar (process 0 only).

    Raises:
        ValueError: bad ``checkpoint_every``, data of the wrong width, or a multi-process run
            without a mesh over all its devices.
        jinterp.checkpoint.CheckpointMismatch: ``out_dir`` holds another run's checkpoints.
    """
    if checkpoint_every is not None and (out_dir is None or checkpoint_every % steps_per_call):
        raise ValueError(f"checkpoint_every={checkpoint_every} needs out_dir and must be a "
                         f"multiple of steps_per_call={steps_per_call}")
    if jax.process_count() > 1:
        if mesh is None:
            raise ValueError(f"a run over {jax.process_count()} processes needs mesh= over all "
                             f"{jax.device_count()} devices (jinterp.sae.sharding.make_mesh)")
        distributed.check_mesh(mesh)
    main = distributed.is_main()
    tcfg = TrainConfig(total_steps=steps) if tcfg is None else tcfg
    tcfg = scaled_dead_window(tcfg, cfg.dead_after_tokens, steps, batch_size)
    if cfg.is_transcoder:
        source = paired_source(data, batch_size, seed=seed, d_in=cfg.d_in,
                               d_target=cfg.d_target)
    else:
        source = as_source(data, batch_size, seed=seed, d_in=cfg.d_in)
    if source.d_in != cfg.d_in:
        raise ValueError(f"data has d_in={source.d_in} but the SAE expects d_in={cfg.d_in}")
    ckpt = None
    if checkpoint_every:
        identity = {"trainer": "jinterp.sae.trainer.train", "sae": dataclasses.asdict(cfg),
                    "train": dataclasses.asdict(tcfg), "lr": lr, "batch_size": batch_size,
                    "seed": seed, "normalize": normalize, "b_dec_init": b_dec_init,
                    "init_batches": init_batches}
        ckpt = Checkpointer(os.path.join(out_dir, "checkpoints"), metadata=identity)
        ckpt.check_metadata()  # before any work: a different run's folder is an error
    state = _initial_state(cfg, tcfg, source, lr=lr, seed=seed, normalize=normalize,
                           b_dec_init=b_dec_init, init_batches=init_batches)
    if mesh is not None:
        state = sharding_lib.shard_state(state, mesh)
    if ckpt is not None:
        state = ckpt.restore_or(state)  # onto this run's shardings, whatever mesh wrote it
    start = int(distributed.to_host(state.step))
    history, log_path = [], None
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        log_path = os.path.join(out_dir, "metrics.jsonl")
        history = _rewind_jsonl(log_path, start, write=main)
    step_fn = make_train_step(cfg, tcfg, mesh=mesh)
    loop_fn = make_train_loop(cfg, tcfg, mesh=mesh) if steps_per_call > 1 else None
    # one read: raw-unit metrics divide by its square
    scale = float(distributed.to_host(state.target_norm_scale))
    bar = tqdm(total=steps, initial=start, disable=not (progress and main),
               desc=f"SAE {cfg.architecture}")
    log = open(log_path, "a") if log_path and main else None
    preempted = False
    try:
        with Preemption() as preempt:
            for first, batches in _chunks(source, start, steps, steps_per_call):
                n_steps = len(_target(batches))
                if n_steps == 1:
                    one = jax.tree.map(lambda b: b[0], batches)
                    state, metrics = step_fn(state, _place(one, mesh))
                    metrics = jax.tree.map(lambda m: m[None], metrics)
                else:
                    state, metrics = loop_fn(state, _place(batches, mesh))
                metrics = distributed.to_host(metrics)  # gathers what other processes hold
                rows = _log_rows(metrics, first, log_every,
                                 _raw_units(_target(batches), metrics, scale))
                history.extend(rows)
                if log is not None:
                    log.writelines(json.dumps(r) + "\n" for r in rows)
                    log.flush()
                done = first + n_steps
                preempted = done < steps and preempt.should_stop(done)
                if ckpt is not None and (done % checkpoint_every == 0 or done == steps
                                         or preempted):
                    ckpt.save(done, state)
                bar.update(n_steps)
                if rows:
                    bar.set_postfix(loss=f"{rows[-1]['loss']:.4g}", l0=f"{rows[-1]['l0']:.1f}",
                                    dead=f"{rows[-1]['dead_fraction']:.2f}")
                if preempted:
                    if main:
                        tqdm.write(f"SAE training stopped by a signal after step {done}"
                                   + (" (checkpoint saved)" if ckpt is not None else ""))
                    break
    finally:
        bar.close()
        if log is not None:
            log.close()
        if ckpt is not None:
            ckpt.close()
    host = distributed.to_host({"params": state.params, "norm_scale": state.norm_scale,
                                "target_norm_scale": state.target_norm_scale})
    params = fold_norm_scale(cfg, host["params"], float(host["norm_scale"]),
                             float(host["target_norm_scale"]))
    return TrainResult(state=state, params=params, history=history, preempted=preempted)


def _target(batches):
    """What the SAE reconstructs: the batches themselves, or ``y`` of ``(x, y)`` pairs."""
    return batches[1] if isinstance(batches, tuple) else batches


def _place(batches, mesh: jax.sharding.Mesh | None):
    """Batches on the device(s); across processes each one transfers only its own rows."""
    if mesh is None:
        return jax.tree.map(jnp.asarray, batches)
    if jax.process_count() == 1:
        return sharding_lib.shard_batch(batches, mesh)
    return distributed.place_host(batches, jax.tree.map(
        lambda a: sharding_lib.batch_sharding(mesh, np.ndim(a)), batches))


def _raw_units(batches: np.ndarray, metrics: dict[str, Array | np.ndarray],
               scale: float) -> dict[str, np.ndarray]:
    """``mse_raw`` (the step's MSE in the activations' own units; ``mse`` is in normalised
    units, inputs scaled so E||x||^2 = d_in) and ``fvu`` (centred, per batch), ``[n_steps]``;
    ``batches`` and ``scale`` are the reconstruction target's (a transcoder's ``y``)."""
    x = batches.astype(np.float64)
    var = np.mean(np.sum(np.square(x - x.mean(axis=1, keepdims=True)), axis=-1), axis=-1)
    mse_raw = np.asarray(jax.device_get(metrics["mse"]), np.float64).reshape(-1) / scale ** 2
    return {"mse_raw": mse_raw, "fvu": mse_raw / np.maximum(var, 1e-30)}


def _log_rows(metrics: dict[str, Array | np.ndarray], first: int, log_every: int,
              extra: dict[str, np.ndarray] | None = None) -> list[dict[str, float | int]]:
    """One JSON-ready row per logged step of a chunk of stacked ``[n_steps]`` metrics."""
    host = {**_scalar_metrics(metrics), **(extra or {})}
    n = len(next(iter(host.values())))
    rows = []
    for i in range(n):
        step = first + i + 1  # metrics of the update that produced state.step == step
        if step % log_every == 0:
            rows.append({"step": step, **{k: float(v[i]) for k, v in host.items()}})
    return rows

