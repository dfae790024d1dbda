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

Outputs in ``out_dir``: ``metrics.jsonl`` (one row per logged step and instance: ``loss``,
``mse`` in normalised units (inputs scaled so E||x||^2 = d_in), ``mse_raw`` and ``fvu`` in raw
activation units, ``l0``, ``dead_fraction``, ...), ``evals.jsonl`` (:func:`evaluate` on
held-out tokens), ``checkpoints/``, ``sae/`` (or ``sae_{i}/`` for a sweep) in SAELens format
with the ``hook_name``, ``training.png`` and ``summary.json``.
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
from tqdm.auto import tqdm

from jinterp.checkpoint import Checkpointer
from jinterp.model import HookedModel
from jinterp.sae.config import SAEConfig
from jinterp.sae.evaluate import evaluate
from jinterp.sae.io import config_to_dict, save_saelens
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


@dataclasses.dataclass
class ModelTrainResult:
    """What :func:`train_on_model` returns.

    Attributes:
        configs: the SAEs' configs, in the order given.
        params: each SAE's parameters in raw activation units (normalisation folded in).
        history: logged rows (``step``, ``instance`` and the metrics; also ``metrics.jsonl``).
        evals: evaluation rows (``step``, ``instance`` and :func:`evaluate`'s dict).
        state: the final ``{"sae": ..., "store": ...}`` pytree (resume from it).
    """

    configs: list[SAEConfig]
    params: list[dict]
    history: list[dict[str, Any]]
    evals: list[dict[str, Any]]
    state: dict


def _source_description(source: TokenSource) -> dict[str, Any]:
    keys = ("batch_size", "seq_len", "seed", "d_vocab", "bos_id", "low", "shuffle",
            "batches_per_epoch")
    return {"type": type(source).__name__,
            **{k: getattr(source, k) for k in keys if hasattr(source, k)}}


def _settings(configs, hook, source, store, lrs, seeds, tcfg, batch_size, normalize,
              b_dec_init) -> dict[str, Any]:
    """What defines a run (``run.json``): a resume must match it field for field."""
    return {"hook": hook, "configs": [config_to_dict(c) for c in configs], "lr": list(lrs),
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
def _sae_step(plan: SweepPlan, tcfg: TrainConfig, store: ActivationStore, key: str,
              states: tuple, store_state: StoreState) -> tuple[tuple, StoreState, dict]:
    """Pop a batch from the device buffer and step every SAE of the sweep (one program)."""
    rows, store_state = pop_rows(store, store_state)
    x = rows[key].astype(jnp.float32)
    states, metrics = sweep_step(plan, tcfg, states, x)
    var = jnp.mean(jnp.sum(jnp.square(x - jnp.mean(x, axis=0, keepdims=True)), axis=-1))
    mse_raw = metrics["mse"] / jnp.square(states[0].norm_scale[0])
    metrics = {**metrics, "mse_raw": mse_raw, "fvu": mse_raw / jnp.maximum(var, 1e-30)}
    return states, store_state, metrics


def _initial_states(plan: SweepPlan, store: ActivationStore, key: str, params, seeds, lrs,
                    tcfg: TrainConfig, normalize: bool, b_dec_init: str | None):
    """Fresh sweep states (normalisation and ``b_dec`` from the first full buffer) and store."""
    store_state, fill, _ = store.fill(params, store.init(), 0, 0)
    sample = np.asarray(jax.device_get(store_state.rows[key]))[:fill]
    scale = estimate_norm_scale(sample) if normalize else 1.0
    states = sweep_state(plan, seeds, lr=lrs, tcfg=tcfg, norm_scale=scale)
    if b_dec_init is not None:
        scaled = jnp.asarray(sample) * scale
        centre = geometric_median(scaled) if b_dec_init == "geometric_median" else scaled.mean(0)
        states = tuple(_with_b_dec(s, centre) for s in states)
    return {"sae": states, "store": store_state}


def _with_b_dec(state, centre):
    """A stacked sweep state with every instance's ``b_dec`` set to ``centre``.

    (``replace`` would run the per-instance shape checks of ``TrainState.__init__`` on the
    stacked ``[instance, ...]`` leaves; a rebuilt copy, as JAX makes, does not.)
    """
    new = jax.tree.map(lambda x: x, state)
    b_dec = state.params["b_dec"]
    object.__setattr__(new, "params", {**state.params, "b_dec": jnp.broadcast_to(
        centre.astype(b_dec.dtype), b_dec.shape)})
    return new


def _rows_of(metrics: dict, first: int, n_instances: int) -> list[dict[str, Any]]:
    host = {k: np.asarray(v) for k, v in jax.device_get(metrics).items() if np.ndim(v) == 2}
    rows = []
    for s in range(next(iter(host.values())).shape[0]):
        for i in range(n_instances):
            rows.append({"step": first + s, "instance": i,
                         **{k: float(v[s, i]) for k, v in host.items()}})
    return rows


def train_on_model(model: HookedModel, params, configs: SAEConfig | Sequence[SAEConfig],
                   hook: str, source: TokenSource, steps: int, *,
                   lr: float | Sequence[float] = 3e-4, seeds: int | Sequence[int] = 0,
                   batch_size: int = 4096, tcfg: TrainConfig | None = None,
                   buffer_batches: int = 8, exclude_ids: Sequence[int] = (),
                   exclude_first: bool = False, out_dir: str | os.PathLike | None = None,
                   checkpoint_every: int | None = None, log_every: int = 10,
                   eval_every: int | None = None, eval_tokens: np.ndarray | None = None,
                   normalize: bool = True,
                   b_dec_init: str | None = "geometric_median", store_seed: int = 0,
                   metadata: dict[str, Any] | None = None,
                   progress: bool = True) -> ModelTrainResult:
    """Trains one SAE (or a sweep of them on one activation stream) on ``model`` at ``hook``.

    Args:
        model / params: the port and its parameters.
        configs: one :class:`SAEConfig` or several (a sweep: one compiled program, one stream).
        hook: the activation, e.g. ``blocks.6.hook_resid_post`` (``name:h``: head ``h``).
        source: token batches (:mod:`jinterp.sae.sources`).
        steps: total SAE steps (a resumed run continues up to it).
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
        progress: show a tqdm bar.
    """
    configs = [configs] if isinstance(configs, SAEConfig) else list(configs)
    if any(c.is_transcoder for c in configs):
        raise ValueError("train_on_model trains SAEs on one hook; transcoders need (x, y) "
                         "streams from two hooks, not supported yet.")
    if checkpoint_every is not None and out_dir is None:
        raise ValueError("checkpoint_every needs out_dir")
    spec = as_hook_spec(hook)
    store = ActivationStore(model, spec, source, batch_size=batch_size,
                            buffer_batches=buffer_batches, exclude_ids=exclude_ids,
                            exclude_first=exclude_first, seed=store_seed)
    key = spec.key
    for c in configs:
        if c.d_in != store.widths[key]:
            raise ValueError(f"an SAE has d_in={c.d_in}, but {hook!r} gives rows of width "
                             f"{store.widths[key]}: set d_in={store.widths[key]}.")
    plan = plan_sweep(configs)
    n = plan.n_instances
    lrs = list(lr) if isinstance(lr, (list, tuple)) else [lr] * n
    seeds = list(seeds) if isinstance(seeds, (list, tuple)) else [seeds + i for i in range(n)]
    tcfg = TrainConfig(total_steps=steps) if tcfg is None else tcfg
    tcfg = scaled_dead_window(tcfg, min(c.dead_after_tokens for c in configs), steps,
                              batch_size)
    settings = _settings(configs, hook, source, store, lrs, seeds, tcfg, batch_size, normalize,
                         b_dec_init)
    ckpt, history, evals = None, [], []
    if out_dir is not None:
        out_dir = os.fspath(out_dir)
        _check_resume(os.path.join(out_dir, "run.json"), settings)
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "run.json"), "w") as fh:
            json.dump(settings, fh, indent=1)
    make = functools.partial(_initial_states, plan, store, key, params, seeds, lrs, tcfg,
                             normalize, b_dec_init)
    if checkpoint_every:
        ckpt = Checkpointer(os.path.join(out_dir, "checkpoints"))
    if ckpt is not None and ckpt.latest_step() is not None:
        like = {"sae": jax.eval_shape(lambda: sweep_state(plan, seeds, lr=lrs, tcfg=tcfg)),
                "store": jax.eval_shape(store.init)}
        state = ckpt.restore(like)
    else:
        state = make()
    start = int(state["sae"][0].step[0])
    fill, next_batch = int(state["store"].fill), int(state["store"].next_batch)
    if out_dir is not None:
        history = _rewind_jsonl(os.path.join(out_dir, "metrics.jsonl"), start)
        evals = _rewind_jsonl(os.path.join(out_dir, "evals.jsonl"), start)

    def run_eval(step: int) -> None:
        for i, p in enumerate(_folded(plan, state["sae"])):
            row = {"step": step, "instance": i,
                   **evaluate(model, params, configs[i], p, hook, eval_tokens,
                              exclude_ids=tuple(exclude_ids))}
            evals.append(row)
            _append(out_dir, "evals.jsonl", [row])

    bar = tqdm(total=steps, initial=start, disable=not progress, desc=f"SAE on {hook}")
    pending: list[dict] = []
    first_pending = start + 1
    try:
        for step in range(start, steps):
            store_state, fill, next_batch = store.fill(params, state["store"], fill, next_batch)
            sae_states, store_state, metrics = _sae_step(plan, tcfg, store, key, state["sae"],
                                                         store_state)
            state = {"sae": sae_states, "store": store_state}
            fill -= batch_size
            pending.append(metrics)
            done = step + 1
            if done % log_every == 0 or done == steps or (
                    checkpoint_every and done % checkpoint_every == 0):
                stacked = jax.tree.map(lambda *m: jnp.stack(m), *pending)
                rows = [r for r in _rows_of(stacked, first_pending, n)
                        if r["step"] % log_every == 0 or r["step"] == steps]
                history.extend(rows)
                _append(out_dir, "metrics.jsonl", rows)
                pending, first_pending = [], done + 1
                if rows:
                    bar.set_postfix(loss=f"{rows[-1]['loss']:.4g}", l0=f"{rows[-1]['l0']:.1f}",
                                    fvu=f"{rows[-1]['fvu']:.3f}")
            if eval_tokens is not None and eval_every and (done % eval_every == 0
                                                           or done == steps):
                run_eval(done)
            if ckpt is not None and (done % checkpoint_every == 0 or done == steps):
                ckpt.save(done, state)
            bar.update(1)
    finally:
        bar.close()
        if ckpt is not None:
            ckpt.close()
    folded = _folded(plan, state["sae"])
    if out_dir is not None:
        _write_outputs(out_dir, configs, folded, history, evals, hook, source, metadata)
    return ModelTrainResult(configs=configs, params=folded, history=history, evals=evals,
                            state=state)


def _folded(plan: SweepPlan, states: tuple) -> list[dict]:
    out = []
    for i, cfg in enumerate(plan.configs):
        st = jax.device_get(instance_state(plan, states, i))
        out.append(fold_norm_scale(cfg, st.params, float(st.norm_scale)))
    return out


def _append(out_dir: str | None, name: str, rows: list[dict]) -> None:
    if out_dir is None or not rows:
        return
    with open(os.path.join(out_dir, name), "a") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)


def _write_outputs(out_dir: str, configs, folded, history, evals, hook, source,
                   metadata) -> None:
    """SAELens files with the hook name, the figure and summary.json."""
    bos = getattr(source, "prepend_bos", None)
    meta = {"hook_name": as_hook_spec(hook).name, "context_size": source.seq_len,
            **({} if bos is None else {"prepend_bos": bool(bos)}),
            **({} if as_hook_spec(hook).head is None else
               {"hook_head_index": as_hook_spec(hook).head}), **(metadata or {})}
    dirs = []
    for i, (cfg, p) in enumerate(zip(configs, folded)):
        d = os.path.join(out_dir, "sae" if len(configs) == 1 else f"sae_{i}")
        reshape = "hook_z" if as_hook_spec(hook).name.endswith("hook_z") and \
            as_hook_spec(hook).head is None else "none"
        save_saelens(d, cfg, p, metadata=meta, reshape_activations=reshape)
        dirs.append(d)
    _plot(os.path.join(out_dir, "training.png"), history, len(configs))
    last = {}
    for row in evals:
        last[row["instance"]] = row
    summary = {"hook_name": hook, "saes": dirs,
               "final_metrics": [r for r in history if r["step"] == history[-1]["step"]]
               if history else [], "final_evals": [last[i] for i in sorted(last)]}
    with open(os.path.join(out_dir, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)


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
