"""Autoregressive generation with a KV cache, hooks at every step, one compiled program.

A call prefills the prompt once (every position in one forward, keys and values kept), then
runs ``max_new_tokens - 1`` single-token steps in a ``lax.scan``, all under one ``jit``:

- **The cache** is two fixed-size arrays ``[layer, batch, k_pos, n_kv_heads, d_head]`` (keys
  after RoPE, values), ``k_pos = prompt + max_new_tokens`` slots. Each step hands each block its
  layer's slice through :class:`jinterp.model.AttnContext`; the block attends over every slot
  (the unwritten ones are masked by causality) and returns the step's new keys and values,
  written at the step's slot in place. Sliding windows and soft-caps are the ports' own code,
  the same as a full forward's.
- **Padding.** ``attention_mask`` marks real prompt tokens (left, right or any padding).
  Positions count real tokens (HuggingFace's ``generate`` rule), each row's first new token is
  read at its last real token, and new tokens go into the slots after the prompt, so every row
  generates what it generates unpadded. (HF reads the last slot, which for a right-padded row
  is a pad: use left padding to compare with HF.)
- **Hooks** are the hooks of :func:`jinterp.run_with_hooks` (functions, interventions, ``At``),
  applied on the prompt's forward and on every step (``hooks_on="all"``), on the prompt only
  (``"prompt"``) or on generated positions only (``"generated"``: every step's forward, never
  the prompt's; the first new token is then the unhooked model's). On a step, activations are
  ``[batch, 1, ...]`` (one position), attention scores and patterns ``[batch, n_heads, 1,
  k_pos]`` over every slot; position-selecting interventions (``Patch(pos=...)``) are meant
  for the prompt (``hooks_on="prompt"``).
- **Stopping.** With ``eos_token_id``, a row that has produced it continues with
  ``pad_token_id``; the loop always runs ``max_new_tokens`` steps (one shape, one program).

:func:`stream` yields the same tokens in chunks (a prefill program and a chunk program that
carry the cache from call to call), for printing as text arrives.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax
from jaxtyping import Array, Bool, Int

from jinterp.generation.sampling import Sampler, make_sampler, sample
from jinterp.hooks import Hooks
from jinterp.loop import KV_OUT, TopHook, run_blocks, split_layers
from jinterp.model import AttnContext, HookedModel
from jinterp.plan import Plan
from jinterp.run import Inputs, prepare, validate_attention_mask

#: Where hooks apply: the prompt's forward and every step, the prompt only, the steps only.
HOOKS_ON = ("all", "prompt", "generated")


@dataclasses.dataclass(frozen=True)
class Program:
    """The static part of one generation: the model, the two plans, sampling, lengths."""

    model: HookedModel
    prefill_plan: Plan
    decode_plan: Plan
    prefill_hooks: tuple  # (treedef, static leaves) of the prompt's hooks
    decode_hooks: tuple
    sampler: Sampler
    n_prompt: int
    n_new: int


@struct.dataclass
class DecodeState:
    """Everything a decode step reads and writes (a pytree: it crosses ``jit`` calls).

    Attributes:
        tokens: the prompt, then the tokens generated so far (later slots 0).
        cache: ``(k, v)``, each ``[layer, batch, k_pos, n_kv_heads, d_head]``.
        positions / valid: each slot's position and realness (:class:`AttnContext`).
        step: how many tokens have been generated (the last one sits at slot
            ``n_prompt + step - 1`` and is the next step's input).
        done: rows that have produced ``eos_token_id``.
        key: the sampling key (None for greedy decoding); step ``t`` draws with
            ``fold_in(key, t)``, so chunked and one-shot generation draw the same tokens.
        stop: ``(eos_token_id, pad_token_id)`` as data (EOS -1: none), so a new EOS id never
            recompiles.
    """

    tokens: Int[Array, "batch k_pos"]
    cache: Any
    positions: Int[Array, "batch k_pos"]
    valid: Bool[Array, "batch k_pos"]
    step: Int[Array, ""]
    done: Bool[Array, " batch"]
    key: Any
    stop: Int[Array, "2"]


def _rebuild(static, leaves):
    treedef, static_leaves = static
    return jax.tree.unflatten(treedef, [d if s is None else s
                                        for d, s in zip(leaves, static_leaves)])


def _choose(prog: Program, logits, key, step, done, stop, temperature, top_p):
    """The next token of each row (pads for rows already done) and the new ``done``."""
    step_key = None if key is None else jax.random.fold_in(key, step)
    token = jnp.where(done, stop[1], sample(logits, step_key, temperature, top_p, prog.sampler))
    return token, done | (token == stop[0])


def prefill(params, tokens: Int[Array, "batch pos"], attention_mask, leaves, key, stop,
            temperature, top_p, *, prog: Program) -> DecodeState:
    """The prompt's forward: its keys and values cached, the first new token chosen."""
    model, plan = prog.model, prog.prefill_plan
    batch, n_prompt = tokens.shape
    n_slots = n_prompt + prog.n_new
    real = (jnp.ones((batch, n_prompt), bool) if attention_mask is None
            else jnp.asarray(attention_mask).astype(bool))
    prompt_ctx = AttnContext.from_mask(real)
    n_real = jnp.sum(real, axis=1, dtype=jnp.int32)  # batch
    new_positions = n_real[:, None] + jnp.arange(prog.n_new, dtype=jnp.int32)[None]  # batch new
    ctx = AttnContext(jnp.concatenate([prompt_ctx.positions, new_positions], axis=1),
                      jnp.concatenate([real, jnp.ones((batch, prog.n_new), bool)], axis=1),
                      return_kv=True)
    data = _rebuild(prog.prefill_hooks, leaves)
    top = TopHook(plan, model.points, data["top"], {})
    resid = model.embed(params, tokens, top, ctx)
    resid, stacked = run_blocks(model, plan, params, resid, data["groups"], {}, 1, ctx)
    k, v = stacked[KV_OUT]  # each layer batch pos n_kv_heads d_head
    last = n_prompt - 1 - jnp.argmax(real[:, ::-1], axis=1)  # batch: each row's last real token
    resid_last = jnp.take_along_axis(resid, last[:, None, None], axis=1)  # batch 1 d_model
    logits = model.unembed(params, resid_last, top)[:, 0]  # batch d_vocab
    widen = ((0, 0), (0, 0), (0, prog.n_new), (0, 0), (0, 0))
    cache = (jnp.pad(k, widen), jnp.pad(v, widen))  # layer batch k_pos n_kv_heads d_head
    token, done = _choose(prog, logits, key, 0, jnp.zeros(batch, bool), stop, temperature,
                          top_p)
    all_tokens = jnp.zeros((batch, n_slots), jnp.int32).at[:, :n_prompt].set(tokens)
    all_tokens = all_tokens.at[:, n_prompt].set(token)
    return DecodeState(all_tokens, cache, ctx.positions, ctx.valid, jnp.int32(1), done, key,
                       stop)


def decode(state: DecodeState, params, leaves, temperature, top_p, *, prog: Program,
           n_steps: int) -> DecodeState:
    """``n_steps`` single-token steps from ``state`` (a ``lax.scan``; the cache is updated in
    place)."""
    model, plan = prog.model, prog.decode_plan
    data = _rebuild(prog.decode_hooks, leaves)
    per_layer = split_layers(model, params)  # once: each step reads these buffers in place

    def step(state: DecodeState, _):
        slot = prog.n_prompt + state.step - 1  # where the last new token sits
        ctx = AttnContext(state.positions, state.valid, slot, kv=state.cache, return_kv=True)
        top = TopHook(plan, model.points, data["top"], {})
        token_in = lax.dynamic_slice_in_dim(state.tokens, slot, 1, axis=1)  # batch 1
        resid = model.embed(params, token_in, top, ctx)
        resid, stacked = run_blocks(model, plan, params, resid, data["groups"], {}, 1, ctx,
                                    per_layer)
        cache = tuple(lax.dynamic_update_slice_in_dim(c, new, slot, axis=2)
                      for c, new in zip(state.cache, stacked[KV_OUT]))
        logits = model.unembed(params, resid, top)[:, 0]  # batch d_vocab
        token, done = _choose(prog, logits, state.key, state.step, state.done, state.stop,
                              temperature, top_p)
        tokens = lax.dynamic_update_slice_in_dim(state.tokens, token[:, None], slot + 1, axis=1)
        return state.replace(tokens=tokens, cache=cache, step=state.step + 1, done=done), None

    if n_steps == 0:
        return state
    state, _ = lax.scan(step, state, None, length=n_steps)
    return state


@functools.partial(jax.jit, static_argnames=("prog",))
def _generate(params, tokens, attention_mask, leaves_prefill, leaves_decode, key, stop,
              temperature, top_p, *, prog: Program) -> Int[Array, "batch k_pos"]:
    state = prefill(params, tokens, attention_mask, leaves_prefill, key, stop, temperature, top_p,
                    prog=prog)
    state = decode(state, params, leaves_decode, temperature, top_p, prog=prog,
                   n_steps=prog.n_new - 1)
    return state.tokens


_prefill = jax.jit(prefill, static_argnames=("prog",))
_decode = jax.jit(decode, static_argnames=("prog", "n_steps"), donate_argnames=("state",))


# ------------------------------------------------------------------------------- checks
def _check_max_new(model: HookedModel, n_prompt: int, max_new_tokens) -> int:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)):
        raise TypeError(f"max_new_tokens must be an int >= 1 (it is static: the cache and the "
                        f"loop have that many slots); got {max_new_tokens!r}.")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens}: generate at least one token.")
    total = n_prompt + int(max_new_tokens)
    if model.n_ctx is not None and total > model.n_ctx:
        raise ValueError(
            f"Generating {max_new_tokens} tokens after a {n_prompt}-token prompt needs {total} "
            f"positions, past the model's context n_ctx={model.n_ctx}. Pass max_new_tokens <= "
            f"{model.n_ctx - n_prompt}, or shorten the prompt (keep its last tokens).")
    return int(max_new_tokens)


def _check_token_id(value, name: str, d_vocab: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not (
            0 <= value < d_vocab):
        raise ValueError(f"{name}={value!r} must be a token id in [0, {d_vocab}) or None.")
    return int(value)


def setup(model: HookedModel, params, tokens: Inputs, max_new_tokens: int, hooks: Hooks,
          temperature, top_k, top_p, key, attention_mask, hooks_on: str, eos_token_id,
          pad_token_id) -> tuple[Program, dict]:
    """Checks a generation call; returns its static program and its dynamic arguments."""
    if not model.accepts_context:
        raise TypeError(f"{type(model).__name__} does not take an attention context "
                        "(accepts_context is False), so it has no KV cache to generate with; add "
                        "the ctx argument to its embed and block (see jinterp.model).")
    if hooks_on not in HOOKS_ON:
        raise ValueError(f"hooks_on={hooks_on!r}; choose 'all' (the prompt and every generated "
                         "position), 'prompt' or 'generated' (generated positions only).")
    prompt_hooks = None if hooks_on == "generated" else hooks
    step_hooks = None if hooks_on == "prompt" else hooks
    prep = prepare(model, params, tokens, False, prompt_hooks, None, None)
    batch, n_prompt = prep.inputs.shape
    if n_prompt == 0:
        raise ValueError("The prompt is empty: generation continues at least one token "
                         "(e.g. a BOS token).")
    n_new = _check_max_new(model, n_prompt, max_new_tokens)
    mask = validate_attention_mask(model, attention_mask, prep.inputs)
    step_prep = prepare(model, params, np.zeros((batch, 1), np.int32), False, step_hooks, None,
                        None)
    sampler = make_sampler(temperature, top_k, top_p, key, model.d_vocab)
    eos = _check_token_id(eos_token_id, "eos_token_id", model.d_vocab)
    pad = _check_token_id(pad_token_id, "pad_token_id", model.d_vocab)
    prog = Program(model, prep.plan, step_prep.plan, (prep.treedef, prep.static_leaves),
                   (step_prep.treedef, step_prep.static_leaves), sampler, n_prompt, n_new)
    pad = pad if pad is not None else (eos if eos is not None else 0)
    args = dict(params=params, tokens=prep.inputs, attention_mask=mask,
                leaves_prefill=prep.leaves, leaves_decode=step_prep.leaves,
                key=None if sampler.greedy else key,
                stop=jnp.asarray([-1 if eos is None else eos, pad], jnp.int32),
                temperature=jnp.float32(temperature or 1.0),
                top_p=jnp.float32(1.0 if top_p is None else top_p))
    return prog, args


# ------------------------------------------------------------------------------- public
def generate(model: HookedModel, params, tokens: Inputs, max_new_tokens: int,
             hooks: Hooks = None, *, temperature: float = 0.0, top_k: int | None = None,
             top_p: float | None = None, key: jax.Array | None = None, attention_mask=None,
             hooks_on: str = "all", eos_token_id: int | None = None,
             pad_token_id: int | None = None) -> Int[Array, "batch total"]:
    """Continues each prompt by ``max_new_tokens`` tokens, with ``hooks`` applied throughout.

    Args:
        model, params: a port that accepts an attention context (every jinterp family).
        tokens: prompts ``[batch, pos]`` (padded to one length; see ``attention_mask``).
        max_new_tokens: tokens to add (static); ``pos + max_new_tokens`` must fit ``n_ctx``.
        hooks: as :func:`jinterp.run_with_hooks` (functions, interventions, ``At``).
        temperature: 0 for greedy decoding (argmax, HF's ``do_sample=False``); above 0 samples
            from ``softmax(logits / temperature)``.
        top_k / top_p: HF's top-k and nucleus filters of the sampled distribution.
        key: a ``jax.random.key``; needed to sample, unused when greedy.
        attention_mask: ``[batch, pos]`` 1 for real prompt tokens, 0 for pads (left or right).
        hooks_on: ``"all"`` (prompt and generated positions), ``"prompt"`` or ``"generated"``
            (each generated position's forward only).
        eos_token_id / pad_token_id: a row that produced ``eos_token_id`` continues with
            ``pad_token_id`` (default: the EOS id), as HF fills finished rows.

    Returns:
        ``[batch, pos + max_new_tokens]``: the prompts as given, then the new tokens.
    """
    prog, args = setup(model, params, tokens, max_new_tokens, hooks, temperature, top_k, top_p,
                       key, attention_mask, hooks_on, eos_token_id, pad_token_id)
    return _generate(**args, prog=prog)


def stream(model: HookedModel, params, tokens: Inputs, max_new_tokens: int, hooks: Hooks = None,
           *, chunk: int = 16, temperature: float = 0.0, top_k: int | None = None,
           top_p: float | None = None, key: jax.Array | None = None, attention_mask=None,
           hooks_on: str = "all", eos_token_id: int | None = None,
           pad_token_id: int | None = None) -> Iterator[Int[Array, "batch n"]]:
    """:func:`generate`'s new tokens in pieces: the first token, then ``chunk`` at a time.

    Two compiled programs (the prompt's, and ``chunk`` steps; a shorter last chunk compiles
    once more) carry the cache between calls, so the tokens equal :func:`generate`'s for the
    same arguments, key included. Stop iterating to stop generating.
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk={chunk!r} must be an int >= 1 (tokens per compiled call).")
    prog, args = setup(model, params, tokens, max_new_tokens, hooks, temperature, top_k, top_p,
                       key, attention_mask, hooks_on, eos_token_id, pad_token_id)
    state = _prefill(args["params"], args["tokens"], args["attention_mask"],
                     args["leaves_prefill"], args["key"], args["stop"], args["temperature"],
                     args["top_p"], prog=prog)
    n_prompt, done = prog.n_prompt, 1
    yield state.tokens[:, n_prompt:n_prompt + 1]
    while done < prog.n_new:
        n = min(chunk, prog.n_new - done)
        state = _decode(state, args["params"], args["leaves_decode"], args["temperature"],
                        args["top_p"], prog=prog, n_steps=n)
        yield state.tokens[:, n_prompt + done:n_prompt + done + n]
        done += n
