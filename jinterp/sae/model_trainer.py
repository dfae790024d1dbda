"""Training SAEs on a model's activations: tokens -> store -> one SAE or a sweep, end to end.

:func:`train_on_model` is what ``python -m jinterp.sae.train`` runs. Each step the host
dispatches, without waiting for the device: the pushes the buffer needs (one LM forward each,
up to the hook's layer, :class:`~jinterp.sae.store.ActivationStore`) and one jitted program
that pops a batch from the device buffer and takes a step of every SAE of the sweep
(:func:`jinterp.sae.sweep.sweep_step`; one SAE is a sweep of one). The host decides when to
push from the token ids alone, so the only device-to-host copies are the metrics, fetched every
``log_every`` steps, the evaluations and the checkpoints.

The run's state is one pytree ``{"sae": sweep states, "store": StoreState}``: orbax checkpoints
hold the buffer and the index of the next token batch too, so a resumed run replays exactly
the uninterrupted one. ``run.json`` in ``out_dir`` records the settings; resuming with
different ones raises, naming the fields, before anything is written.

Transcoders and crosscoders train through the same loop (:mod:`jinterp.sae.model_streams`
says which buffers make a batch): ``hook_out=`` makes ``(x, y)`` batches from two hooks of one
forward (a transcoder, e.g. ``blocks.L.ln2.hook_normalized`` -> ``blocks.L.hook_mlp_out``);
several hooks, or ``params`` given as a sequence of checkpoints of the model, make a
crosscoder's blocks (each normalised to ``E||s_b x_b||^2 = d_block``, scales folded back into
the saved weights). Evaluation uses :func:`~jinterp.sae.transcoder_eval.evaluate_transcoder`
and :func:`~jinterp.sae.crosscoder_eval.evaluate_crosscoder` for them.

Outputs in ``out_dir``: ``metrics.jsonl`` (one row per logged step and instance: ``loss``,
``mse`` in normalised units (inputs scaled so E||x||^2 = d_in), ``mse_raw`` and ``fvu`` in raw
activation units, ``l0``, ``dead_fraction``, ...), ``evals.jsonl`` (:func:`evaluate` on
held-out tokens), ``checkpoints/``, ``sae/`` (or ``sae_{i}/`` for a sweep) in SAELens format
with the ``hook_name``, ``training.png`` and ``summary.json``; for a crosscoder over two
checkpoints (model diffing) each dictionary's directory also gets ``diff.json`` and
``diff.png`` (:func:`jinterp.sae.diffing.write_diff`: shared / base-only / fine-tuned-only
latents), summarised under ``"diff"`` in ``summary.json``.

Several devices and processes (``mesh=``, a ``data x model`` mesh, e.g. over every process of
a multi-host run, :mod:`jinterp.distributed`): the LM forward is data-parallel (each process
loads only its rows of each token batch; the port's parameters are replicated), the store's
buffer and batches are split over ``data``, and every SAE's latents (encoder columns, decoder
rows, Adam moments, dead-latent counters) over ``model`` (:mod:`jinterp.sae.sharding`). Logs,
figures, ``run.json``, ``summary.json`` and the SAELens files come from process 0 only;
checkpoints are written by every process together. The result's ``params`` are host copies
on every process.

Preemption: SIGTERM (a scheduler's notice) makes the loop save a checkpoint at the next step
boundary (every process at the same step, :class:`jinterp.preemption.Preemption`) and return
with ``preempted=True``; rerunning the same call resumes from it. In a multi-process run the
processes agree on the signal every ``log_every`` steps (a tiny all-gather at the steps whose
metrics are fetched anyway).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from jinterp import distributed
from jinterp.checkpoint import Checkpointer
from jinterp.model import HookedModel
from jinterp.preemption import Preemption
from jinterp.sae import diffing, model_streams
from jinterp.sae import sharding as sae_sharding
from jinterp.sae.config import SAEConfig
from jinterp.sae.crosscoder import block_scales, fold_block_scales
from jinterp.sae.crosscoder_eval import evaluate_crosscoder
from jinterp.sae.evaluate import evaluate
from jinterp.sae.io import config_to_dict, save_saelens
from jinterp.sae.model_streams import Kind, Streams
from jinterp.sae.schedule import TrainConfig, scaled_dead_window
from jinterp.sae.sources import TokenSource
from jinterp.sae.store import ActivationStore, StoreState, as_hook_spec, pop_rows
from jinterp.sae.sweep import SweepPlan, instance_state, plan_sweep, sweep_state, sweep_step
from jinterp.sae.trainer import (
    _rewind_jsonl,
    estimate_norm_scale,
    fold_norm_scale,
    geometric_median,
)
from jinterp.sae.transcoder_eval import evaluate_transcoder


@dataclasses.dataclass
class ModelTrainResult:
    """What :func:`train_on_model` returns.

    Attributes:
        configs: the SAEs' configs, in the order given.
        params: each SAE's parameters in raw activation units (normalisation folded in).
        history: logged rows (``step``, ``instance`` and the metrics; also ``metrics.jsonl``).
        evals: evaluation rows (``step``, ``instance`` and :func:`evaluate`'s dict).
        state: the final ``{"sae": ..., "store": ...}`` pytree (resume from it); a
            crosscoder's also holds ``"scales"``, its per-block normalisation.
        preempted: the run stopped early on a stop signal (a checkpoint was saved when it
            has an ``out_dir``; no SAE files were written).
    """

    configs: list[SAEConfig]
    params: list[dict]
    history: list[dict[str, Any]]
    evals: list[dict[str, Any]]
    state: dict
    preempted: bool = False


def _source_description(source: TokenSource) -> dict[str, Any]:
    keys = ("batch_size", "seq_len", "seed", "d_vocab", "bos_id", "low", "shuffle",
            "batches_per_epoch")
    return {"type": type(source).__name__,
            **{k: getattr(source, k) for k in keys if hasattr(source, k)}}


def _settings(configs, hook, source, store, lrs, seeds, tcfg, batch_size, normalize,
              b_dec_init, hook_out, streams: Streams) -> dict[str, Any]:
    """What defines a run (``run.json``): a resume must match it field for field."""
    hook = hook if isinstance(hook, str) else [as_hook_spec(h).key for h in hook]
    extra = {} if streams.kind == Kind.SAE else {"hook_out": hook_out,
                                                  "streams": model_streams.describe(streams)}
    return {"hook": hook, **extra, "configs": [config_to_dict(c) for c in configs], "lr": list(lrs),
            "seeds": list(seeds), "train_config": dataclasses.asdict(tcfg),
            "batch_size": batch_size, "buffer_batches": store.capacity // store.push_rows,
            "exclude_ids": list(store.exclude_ids), "exclude_first": store.exclude_first,
            "store_seed": store.seed, "normalize": normalize, "b_dec_init": b_dec_init,
            "source": _source_description(source)}


def _check_resume(path: str, settings: dict[str, Any]) -> None:
    if not os.path.exists(path):
        return
    with open(path) as fh:
        saved = json.load(fh)
    now = json.loads(json.dumps(settings))  # tuples -> lists, as saved
    diff = [f"{k}: saved {saved.get(k)!r}, now {now.get(k)!r}"
            for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    if diff:
        raise ValueError(f"{os.path.dirname(path)} holds a run with other settings, so it cannot "
                         f"resume: {'; '.join(diff)}. Pass the saved settings, or another out "
                         "directory for a new run.")


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3), donate_argnums=(4, 5))
def _sae_step(plan: SweepPlan, tcfg: TrainConfig, store: ActivationStore, streams: Streams,
              states: tuple, store_state: StoreState, scales) -> tuple[tuple, StoreState, dict]:
    """Pop a batch from the device buffer and step every SAE of the sweep (one program);
    with the store's mesh the batch is split over ``data`` and latents over ``model``."""
    rows, store_state = pop_rows(store, store_state)
    store_state = store_state.replace(rows={k: store.constrain_rows(v)
                                            for k, v in store_state.rows.items()})
    batch = model_streams.batch(streams, rows, scales)
    states, metrics = sweep_step(plan, tcfg, states, batch, mesh=store.mesh)
    metrics = model_streams.raw_metrics(streams, batch, metrics, states[0].norm_scale[0],
                                        states[0].target_norm_scale[0])
    return states, store_state, metrics


def _initial_states(plan: SweepPlan, store: ActivationStore, streams: Streams, params, seeds,
                    lrs, tcfg: TrainConfig, normalize: bool, b_dec_init: str | None):
    """Fresh sweep states (normalisation and ``b_dec`` from the first full buffer) and store.

    SAE: one scale; transcoder: one for ``x`` and one for ``y``, ``b_dec`` from ``y``;
    crosscoder: one per block (kept in the run state), the concatenation then has scale 1.
    """
    store_state, fill, _ = store.fill(params, store.init(), 0, 0)
    host = {k: np.asarray(v)[:fill] for k, v in distributed.to_host(store_state.rows).items()}
    xs, y = model_streams.samples(streams, host)
    extra = {}
    if streams.kind == Kind.CROSSCODER:
        scales = block_scales(xs) if normalize else np.ones(len(xs))
        extra["scales"] = np.asarray(scales, np.float32)
        sample = np.concatenate([x * s for x, s in zip(xs, scales)], axis=-1)
        scale, t_scale, centre_of = 1.0, 1.0, sample
    else:
        scale = estimate_norm_scale(xs[0]) if normalize else 1.0
        t_scale = estimate_norm_scale(y) if normalize and y is not None else scale
        centre_of = xs[0] if y is None else y
    states = sweep_state(plan, seeds, lr=lrs, tcfg=tcfg, norm_scale=scale)
    if t_scale != scale:
        states = tuple(_with_params(s, target_norm_scale=jnp.full_like(
            s.target_norm_scale, t_scale)) for s in states)
    if b_dec_init is not None:
        scaled = jnp.asarray(centre_of) * (t_scale if y is not None else scale)
        centre = geometric_median(scaled) if b_dec_init == "geometric_median" else scaled.mean(0)
        states = tuple(_with_b_dec(s, centre) for s in states)
    if store.mesh is not None:  # every process computed the same values from the same rows
        states = sae_sharding.shard_state(jax.device_get(states), store.mesh)
        extra = sae_sharding.place_host(extra, NamedSharding(store.mesh, PartitionSpec()))
    else:
        extra = jax.tree.map(jnp.asarray, extra)
    return {"sae": states, "store": store_state, **extra}


def _with_params(state, **fields):
    """A copy of a stacked sweep state with ``fields`` replaced.

    (``replace`` would run the per-instance shape checks of ``TrainState.__init__`` on the
    stacked ``[instance, ...]`` leaves; a rebuilt copy, as JAX makes, does not.)
    """
    new = jax.tree.map(lambda x: x, state)
    for name, value in fields.items():
        object.__setattr__(new, name, value)
    return new


def _with_b_dec(state, centre):
    """A stacked sweep state with every instance's ``b_dec`` set to ``centre``."""
    b_dec = state.params["b_dec"]
    return _with_params(state, params={**state.params, "b_dec": jnp.broadcast_to(
        centre.astype(b_dec.dtype), b_dec.shape)})


def _rows_of(metrics: dict, first: int, n_instances: int) -> list[dict[str, Any]]:
    host = {k: np.asarray(v) for k, v in distributed.to_host(metrics).items()
            if np.ndim(v) == 2}
    rows = []
    for s in range(next(iter(host.values())).shape[0]):
        for i in range(n_instances):
            rows.append({"step": first + s, "instance": i,
                         **{k: float(v[s, i]) for k, v in host.items()}})
    return rows


def train_on_model(model: HookedModel, params, configs: SAEConfig | Sequence[SAEConfig],
                   hook: str | Sequence[str], source: TokenSource, steps: int, *,
                   hook_out: str | None = None,
                   lr: float | Sequence[float] = 3e-4, seeds: int | Sequence[int] = 0,
                   batch_size: int = 4096, tcfg: TrainConfig | None = None,
                   buffer_batches: int = 8, exclude_ids: Sequence[int] = (),
                   exclude_first: bool = False, out_dir: str | os.PathLike | None = None,
                   checkpoint_every: int | None = None, log_every: int = 10,
                   eval_every: int | None = None, eval_tokens: np.ndarray | None = None,
                   normalize: bool = True,
                   b_dec_init: str | None = "geometric_median", store_seed: int = 0,
                   metadata: dict[str, Any] | None = None,
                   progress: bool = True, mesh: Mesh | None = None) -> ModelTrainResult:
    """Trains one SAE (or a sweep of them on one activation stream) on ``model`` at ``hook``.

    Also a transcoder (``hook_out``) or a crosscoder (several hooks, or several checkpoints in
    ``params``): see the module docstring.

    Args:
        model / params: the port and its parameters; a sequence of parameter sets
            (checkpoints of this model, e.g. base and fine-tuned) trains a crosscoder over
            ``hook`` of each (blocks ordered checkpoint by checkpoint, hook by hook).
        configs: one :class:`SAEConfig` or several (a sweep: one compiled program, one stream).
        hook: the activation, e.g. ``blocks.6.hook_resid_post`` (``name:h``: head ``h``); a
            sequence of names is a crosscoder's blocks (``n_blocks`` = their number).
        source: token batches (:mod:`jinterp.sae.sources`).
        steps: total SAE steps (a resumed run continues up to it).
        hook_out: a transcoder's output activation (``blocks.L.hook_mlp_out``; ``hook`` is its
            input); the store streams both from one forward.
        lr / seeds: one per instance, or one for all.
        batch_size: tokens per SAE step.
        tcfg: schedules; default ``TrainConfig(total_steps=steps)`` (the dead-latent window is
            scaled to a short run, with a warning: :func:`scaled_dead_window`).
        buffer_batches: the store's capacity in forward passes.
        exclude_ids / exclude_first: positions the store drops (BOS, padding; position 0).
        out_dir: where logs, checkpoints, figures and the SAELens files go (None: nowhere).
        checkpoint_every: save the state every this many steps (needs ``out_dir``).
        log_every: fetch and log metrics every this many steps.
        eval_every / eval_tokens: run :func:`evaluate` on ``eval_tokens`` every this many
            steps and at the end.
        normalize / b_dec_init: as :func:`jinterp.sae.train`.
        store_seed: seeds the buffer's shuffles.
        metadata: extra SAELens metadata for the saved files (e.g. ``model_name``).
        progress: show a tqdm bar (process 0 only).
        mesh: a ``data x model`` mesh (:func:`jinterp.sharding.make_mesh`; in a multi-process
            run over every process's devices): data-parallel forwards and store, latents
            split over ``model`` (see the module docstring). None: one device, as before.
    """
    configs = [configs] if isinstance(configs, SAEConfig) else list(configs)
    if mesh is not None and jax.process_count() > 1:
        distributed.check_mesh(mesh)
    main = distributed.is_main()
    spans_processes = mesh is not None and jax.process_count() > 1
    if checkpoint_every is not None and out_dir is None:
        raise ValueError("checkpoint_every needs out_dir")
    n_ckpt = len(params) if isinstance(params, (list, tuple)) else 1
    streams, store_hooks = model_streams.make_streams(hook, hook_out, n_ckpt)
    params = list(params) if n_ckpt > 1 else params
    store = ActivationStore(model, store_hooks, source, batch_size=batch_size,
                            buffer_batches=buffer_batches, exclude_ids=exclude_ids,
                            exclude_first=exclude_first, seed=store_seed, checkpoints=n_ckpt,
                            mesh=mesh)
    eval_params = params  # evaluation runs on each process's own first device
    if mesh is not None:  # the forwards: parameters replicated over the mesh
        params = sae_sharding.place_host(jax.device_get(params),
                                         NamedSharding(mesh, PartitionSpec()))
    model_streams.check_configs(streams, configs, store.widths)
    plan = plan_sweep(configs)
    n = plan.n_instances
    lrs = list(lr) if isinstance(lr, (list, tuple)) else [lr] * n
    seeds = list(seeds) if isinstance(seeds, (list, tuple)) else [seeds + i for i in range(n)]
    tcfg = TrainConfig(total_steps=steps) if tcfg is None else tcfg
    tcfg = scaled_dead_window(tcfg, min(c.dead_after_tokens for c in configs), steps,
                              batch_size)
    settings = _settings(configs, hook, source, store, lrs, seeds, tcfg, batch_size, normalize,
                         b_dec_init, hook_out, streams)
    ckpt, history, evals = None, [], []
    if out_dir is not None:
        out_dir = os.fspath(out_dir)
        _check_resume(os.path.join(out_dir, "run.json"), settings)
        _barrier("jinterp_sae_resume_checked")  # every process read run.json before it changes
        if main:
            os.makedirs(out_dir, exist_ok=True)
            with open(os.path.join(out_dir, "run.json"), "w") as fh:
                json.dump(settings, fh, indent=1)
    make = functools.partial(_initial_states, plan, store, streams, params, seeds, lrs, tcfg,
                             normalize, b_dec_init)
    ckpt_dir = None if out_dir is None else os.path.join(out_dir, "checkpoints")
    if checkpoint_every or (ckpt_dir is not None and os.path.isdir(ckpt_dir)):
        ckpt = Checkpointer(ckpt_dir)  # also resumes a run that a stop signal cut short
    if ckpt is not None and ckpt.latest_step() is not None:
        state = ckpt.restore(_restore_target(plan, store, streams, seeds, lrs, tcfg))
    else:
        state = make()
    start = int(distributed.to_host(state["sae"][0].step)[0])
    fill, next_batch = (int(v) for v in distributed.to_host(
        (state["store"].fill, state["store"].next_batch)))
    if out_dir is not None and main:  # the others keep this run's rows only
        history = _rewind_jsonl(os.path.join(out_dir, "metrics.jsonl"), start)
        evals = _rewind_jsonl(os.path.join(out_dir, "evals.jsonl"), start)
    log_dir = out_dir if main else None

    def run_eval(step: int) -> None:
        for i, p in enumerate(_folded(plan, state, streams)):
            row = {"step": step, "instance": i,
                   **_evaluate(model, eval_params, configs[i], p, streams, eval_tokens,
                               tuple(exclude_ids))}
            evals.append(row)
            _append(log_dir, "evals.jsonl", [row])

    bar = tqdm(total=steps, initial=start, disable=not (progress and main),
               desc=f"{streams.kind.value} on {', '.join(k for _, k in streams.blocks)}")
    pending: list[dict] = []
    first_pending = start + 1
    preempted = False
    preempt = Preemption(every=max(1, log_every)).__enter__()
    try:
        for step in range(start, steps):
            store_state, fill, next_batch = store.fill(params, state["store"], fill, next_batch)
            sae_states, store_state, metrics = _sae_step(plan, tcfg, store, streams, state["sae"],
                                                         store_state, state.get("scales"))
            if spans_processes:
                # One program at a time across processes: two in flight may run their
                # collectives in different orders in different processes (a hang, seen on CPU
                # about one run in three at 30 steps without this).
                jax.block_until_ready((sae_states, store_state))
            state = {**state, "sae": sae_states, "store": store_state}
            fill -= batch_size
            pending.append(metrics)
            done = step + 1
            # collective only when the run spans processes (a mesh-less run stays local)
            preempted = done < steps and (preempt.should_stop(step) if spans_processes
                                          else preempt.requested)
            if done % log_every == 0 or done == steps or preempted or (
                    checkpoint_every and done % checkpoint_every == 0):
                stacked = jax.tree.map(lambda *m: jnp.stack(m), *pending)
                rows = [r for r in _rows_of(stacked, first_pending, n)
                        if r["step"] % log_every == 0 or r["step"] == steps]
                history.extend(rows)
                _append(log_dir, "metrics.jsonl", rows)
                pending, first_pending = [], done + 1
                if rows:
                    bar.set_postfix(loss=f"{rows[-1]['loss']:.4g}", l0=f"{rows[-1]['l0']:.1f}",
                                    fvu=f"{rows[-1]['fvu']:.3f}")
            if eval_tokens is not None and eval_every and (done % eval_every == 0
                                                           or done == steps):
                run_eval(done)
            if preempted:
                if out_dir is not None:
                    ckpt = ckpt or Checkpointer(ckpt_dir)
                    ckpt.save(done, state)
                break
            if ckpt is not None and checkpoint_every and (done % checkpoint_every == 0
                                                          or done == steps):
                ckpt.save(done, state)
            bar.update(1)
    finally:
        preempt.__exit__(None, None, None)
        bar.close()
        if ckpt is not None:
            ckpt.close()
    folded = _folded(plan, state, streams)
    if out_dir is not None and not preempted:
        # a collective when the buffer is split over processes: every process takes part
        store_host = distributed.to_host(state["store"]) if _diffs_wanted(streams) else None
        if main:
            _write_outputs(out_dir, configs, folded, history, evals, hook, source, metadata,
                           streams, store_host)
    return ModelTrainResult(configs=configs, params=folded, history=history, evals=evals,
                            state=state, preempted=preempted)


def _barrier(name: str) -> None:
    """Waits for every process (a no-op for one)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _restore_target(plan: SweepPlan, store: ActivationStore, streams: Streams, seeds, lrs,
                    tcfg: TrainConfig) -> dict:
    """The run state's shapes and dtypes (and, with a mesh, shardings) to restore into."""
    like = {"sae": jax.eval_shape(lambda: sweep_state(plan, seeds, lr=lrs, tcfg=tcfg)),
            "store": jax.eval_shape(store.init)}
    if streams.kind == Kind.CROSSCODER:
        like["scales"] = jax.ShapeDtypeStruct((streams.n_blocks,), jnp.float32)
    if store.mesh is None:
        return like
    rep = NamedSharding(store.mesh, PartitionSpec())
    shardings = {"sae": sae_sharding.state_shardings(like["sae"], store.mesh),
                 "store": store.state_shardings(),
                 **({"scales": rep} if "scales" in like else {})}
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        like, shardings)


def _evaluate(model, params, cfg, p, streams: Streams, tokens, exclude_ids) -> dict:
    if streams.kind == Kind.TRANSCODER:
        return evaluate_transcoder(model, params, cfg, p, streams.inputs[0], streams.target,
                                   tokens, exclude_ids=exclude_ids)
    if streams.kind == Kind.CROSSCODER:
        return evaluate_crosscoder(model, params, cfg, p, streams.blocks, tokens,
                                   exclude_ids=exclude_ids)
    return evaluate(model, params, cfg, p, streams.inputs[0], tokens, exclude_ids=exclude_ids)


def _folded(plan: SweepPlan, state: dict, streams: Streams) -> list[dict]:
    """Each instance's parameters for raw activations (every normalisation folded in)."""
    out = []
    # host copies (gathering the latents other processes hold), back on this process's device
    host = jax.tree.map(jnp.asarray, distributed.to_host(state["sae"]))
    scales = distributed.to_host(state["scales"]) if streams.kind == Kind.CROSSCODER else None
    for i, cfg in enumerate(plan.configs):
        st = instance_state(plan, host, i)
        p = jax.device_get(fold_norm_scale(cfg, st.params, float(st.norm_scale),
                                           float(st.target_norm_scale)))
        if streams.kind == Kind.CROSSCODER:
            p = jax.device_get(fold_block_scales(cfg, p, scales))
        out.append(p)
    return out


def _append(out_dir: str | None, name: str, rows: list[dict]) -> None:
    if out_dir is None or not rows:
        return
    with open(os.path.join(out_dir, name), "a") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)


def _hook_metadata(streams: Streams) -> tuple[dict[str, Any], str]:
    """SAELens metadata naming the hooks (``hook_name``, a transcoder's ``hook_name_out``, a
    crosscoder's ``crosscoder_blocks``) and the file's ``reshape_activations``."""
    first = as_hook_spec(streams.blocks[0][1])
    reshape = "hook_z" if first.name.endswith("hook_z") and first.head is None else "none"
    if streams.kind == Kind.CROSSCODER:
        return {"crosscoder_blocks": [[c, k] for c, k in streams.blocks]}, "none"
    meta: dict[str, Any] = {"hook_name": first.name}
    if first.head is not None:
        meta["hook_head_index"] = first.head
    if streams.kind == Kind.TRANSCODER:
        out = as_hook_spec(streams.target)
        meta["hook_name_out"] = out.name
        if out.head is not None:
            meta["hook_head_index_out"] = out.head
    return meta, reshape


def _write_outputs(out_dir: str, configs, folded, history, evals, hook, source,
                   metadata, streams: Streams, store_state: StoreState | None) -> None:
    """SAELens files with the hook names, the figure and summary.json; for a crosscoder over
    two checkpoints also each dictionary's model-diffing summary (``diff.json``, ``diff.png``:
    :func:`jinterp.sae.diffing.write_diff`, live latents counted on the final buffer)."""
    bos = getattr(source, "prepend_bos", None)
    hook_meta, reshape = _hook_metadata(streams)
    meta = {**hook_meta, "context_size": source.seq_len,
            **({} if bos is None else {"prepend_bos": bool(bos)}), **(metadata or {})}
    dirs = []
    for i, (cfg, p) in enumerate(zip(configs, folded)):
        d = os.path.join(out_dir, "sae" if len(configs) == 1 else f"sae_{i}")
        save_saelens(d, cfg, p, metadata=meta, reshape_activations=reshape)
        dirs.append(d)
    diffs = _write_diffs(dirs, configs, folded, streams, store_state)
    _plot(os.path.join(out_dir, "training.png"), history, len(configs))
    last = {}
    for row in evals:
        last[row["instance"]] = row
    summary = {"hook_name": hook if isinstance(hook, str) else list(hook), "saes": dirs,
               **({} if streams.kind == Kind.SAE else {"kind": streams.kind.value,
                                                        **hook_meta}),
               **({} if diffs is None else {"diff": diffs}),
               "final_metrics": [r for r in history if r["step"] == history[-1]["step"]]
               if history else [], "final_evals": [last[i] for i in sorted(last)]}
    with open(os.path.join(out_dir, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)


def _diffs_wanted(streams: Streams) -> bool:
    """A crosscoder whose blocks span two checkpoints gets a model-diffing summary."""
    return streams.kind == Kind.CROSSCODER and {c for c, _ in streams.blocks} == {0, 1}


def _write_diffs(dirs, configs, folded, streams: Streams, store_state: StoreState | None
                 ) -> list[dict] | None:
    """Each dictionary's shared / exclusive analysis when its blocks span two checkpoints
    (checkpoint 0's blocks against checkpoint 1's); None otherwise."""
    if not _diffs_wanted(streams):
        return None
    groups = [[b for b, (c, _) in enumerate(streams.blocks) if c == i] for i in (0, 1)]
    rows, fill = jax.device_get((store_state.rows, store_state.fill))  # rows [0, fill) live
    x = np.concatenate([np.asarray(rows[k][:int(fill)], np.float32) for k in streams.inputs],
                       axis=-1)
    return [diffing.write_diff(cfg, p, x, d, groups=groups, title=os.path.basename(d))
            for d, cfg, p in zip(dirs, configs, folded)]


def _plot(path: str, history: list[dict], n: int) -> None:
    """Loss, L0, FVU and dead fraction over training, one line per instance."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("loss", "l0", "fvu", "dead_fraction")
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3))
    for ax, k in zip(axes, keys):
        for i in range(n):
            rows = [r for r in history if r["instance"] == i and k in r]
            ax.plot([r["step"] for r in rows], [r[k] for r in rows], label=f"SAE {i}")
        ax.set_title(k)
        ax.set_xlabel("step")
    if n > 1:
        axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
