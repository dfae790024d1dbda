"""The shared Llama/Gemma decoder: one config of every knob, one scanned forward.

Llama 2/3, Gemma 1/2/3 differ by a handful of switches (norm flavour, embedding scale, post-norms,
soft-caps, q/k norms, sliding windows, per-layer RoPE base). :class:`LlamaLikeConfig` holds them
all; the family files (``llama.py``, ``gemma*.py``) only hold presets, HF config translation and
validation of what their family allows.

Per-layer variation (local vs global attention, a local RoPE base) is *data*, not Python
branches: the forward stacks each layer's RoPE inverse frequencies and attention window into
arrays with a leading ``layer`` axis and scans over them with the stacked params, so compile time
stays flat in depth and captures come out stacked.

Parameters (leading ``layer`` axis on everything under ``blocks``)::

    embed.W_E            [d_vocab, d_model]
    blocks.ln1.w         [layer, d_model]              (ln2 the same; ln1_post/ln2_post: post_norms)
    blocks.attn.W_Q      [layer, n_heads, d_model, d_head]     b_Q [layer, n_heads, d_head]  (bias)
    blocks.attn.W_K/W_V  [layer, n_kv_heads, d_model, d_head]  b_K/b_V [layer, n_kv_heads, d_head]
    blocks.attn.W_O      [layer, n_heads, d_head, d_model]     b_O [layer, d_model]
    blocks.attn.q_norm.w / k_norm.w  [layer, d_head]                (qk_norm)
    blocks.mlp.W_gate/W_in [layer, d_model, d_mlp]  W_out [layer, d_mlp, d_model]
                         (mlp_bias: b_gate/b_in [layer, d_mlp], b_out [layer, d_model])
    ln_final.w           [d_model]
    unembed.W_U          [d_model, d_vocab]              (untied only; tied reuses W_E.T)

Norm weights are stored as the checkpoint stores them: Gemma's are offsets (scale ``1 + w``).

Activation names are TransformerLens's, in forward order: ``hook_resid_pre``, ``ln1.*``,
``attn.hook_q`` ``[batch pos n_heads d_head]``, ``attn.hook_k`` / ``hook_v``
``[batch pos n_kv_heads d_head]`` (never repeated to n_heads), Gemma 3's ``attn.q_norm.*`` /
``attn.k_norm.*``, ``attn.hook_rot_q`` / ``hook_rot_k`` (after RoPE), ``attn.hook_attn_scores``
(scaled, soft-capped, masked with -inf), ``attn.hook_pattern``, ``attn.hook_z``, optional
``attn.hook_result``, Gemma 2/3's ``ln1_post.*``, ``hook_attn_out`` (what is added to the
residual), ``hook_resid_mid``, ``ln2.*``, ``mlp.hook_pre`` (gate pre-activation),
``mlp.hook_pre_linear`` (up projection), ``mlp.hook_post`` (``act(gate) * up``), ``ln2_post.*``,
``hook_mlp_out``, ``hook_resid_post``. Differences from TL: RMSNorm ``hook_normalized`` is
``x / scale`` before the weight (float32), as in TL; TL calls Gemma 3's q/k norms ``attn.q_norm.*``
/ ``attn.k_norm.*`` and hooks them on a flattened ``[batch*pos*heads, d_head]`` view, here they
keep ``[batch pos heads ...]``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from jinterp.model import AttnContext, HookedModel
from jinterp.models.dtypes import canonical_dtype
from jinterp.models.layers import (
    NO_WINDOW,
    Activation,
    attention,
    causal_mask,
    gated_mlp,
    rms_norm,
    rope_tables,
    soft_cap,
)
from jinterp.models.rope import Rope, cos_sin
from jinterp.names import BLOCK_POINTS, TOP_POINTS, Axes, standard


@dataclasses.dataclass(frozen=True)
class DecoderShape:
    """The sizes every family config starts with (family configs subclass it and add their knobs).

    ``n_kv_heads`` == ``n_heads`` is multi-head attention, 1 is multi-query, between is grouped.
    ``d_head`` is free (Gemma's is not ``d_model / n_heads``).
    """

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int

    def shape(self) -> dict:
        """The shape fields as keyword arguments (for :class:`LlamaLikeConfig`)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(DecoderShape)}


@dataclasses.dataclass(frozen=True)
class LlamaLikeConfig:
    """Every switch of the Llama/Gemma decoder family.

    Attributes:
        n_kv_heads: key/value heads (== n_heads: MHA; 1: MQA; between: GQA).
        d_head: per-head width, independent of ``d_model / n_heads`` (Gemma).
        n_ctx: longest accepted sequence (HF ``max_position_embeddings``); None for no limit.
        rope: RoPE of global layers (all layers without a local pattern).
        rope_local: RoPE of local (sliding-window) layers when it differs (Gemma 3); None =
            ``rope``.
        local_layers: per layer, whether it uses the sliding window (Gemma 2/3); () = none does.
        sliding_window: a local layer's query at ``i`` sees keys ``j`` with ``i - j < window``.
        norm_offset: Gemma's RMSNorm scale ``1 + w`` (float32) instead of Llama's ``w``.
        embed_scale: multiply embeddings by ``sqrt(d_model)`` rounded to the model dtype (Gemma).
        post_norms: extra RMSNorms on the attention and MLP outputs (Gemma 2/3).
        qk_norm: RMSNorm on each query and key head before RoPE (Gemma 3).
        query_pre_attn_scalar: scores are divided by ``sqrt(this)``; None means ``d_head``.
        attn_softcap / final_softcap: ``cap * tanh(x / cap)`` on scores / logits; None = off.
        attn_bias / mlp_bias: biases on q, k, v, o / gate, up, down (Llama variants).
        dtype: parameter dtype of ``init`` (activations follow the params' dtype).
    """

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int | None = None
    rope: Rope = Rope()
    rope_local: Rope | None = None
    local_layers: tuple[bool, ...] = ()
    sliding_window: int | None = None
    activation: Activation | str = Activation.SILU
    rms_eps: float = 1e-6
    norm_offset: bool = False
    embed_scale: bool = False
    post_norms: bool = False
    qk_norm: bool = False
    query_pre_attn_scalar: float | None = None
    attn_softcap: float | None = None
    final_softcap: float | None = None
    tied_embeddings: bool = False
    attn_bias: bool = False
    mlp_bias: bool = False
    init_range: float = 0.02
    dtype: str | object = "float32"

    def __post_init__(self):
        object.__setattr__(self, "dtype", canonical_dtype(self.dtype))
        object.__setattr__(self, "activation", Activation(self.activation))
        object.__setattr__(self, "local_layers", tuple(bool(b) for b in self.local_layers))
        for field in ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_head", "d_mlp", "d_vocab"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{field} must be positive, got {getattr(self, field)}.")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not divisible by "
                             f"n_kv_heads={self.n_kv_heads}; each key/value head must serve the "
                             "same number of query heads.")
        if self.d_head % 2:
            raise ValueError(f"RoPE needs an even d_head, got {self.d_head}.")
        if self.n_ctx is not None and self.n_ctx <= 0:
            raise ValueError(f"n_ctx must be positive or None, got {self.n_ctx}.")
        if self.local_layers and len(self.local_layers) != self.n_layers:
            raise ValueError(f"local_layers has {len(self.local_layers)} entries for "
                             f"n_layers={self.n_layers}.")
        if any(self.local_layers) and (self.sliding_window is None or self.sliding_window < 1):
            raise ValueError(f"Local layers need sliding_window >= 1, got {self.sliding_window}.")
        for field in ("attn_softcap", "final_softcap", "query_pre_attn_scalar"):
            value = getattr(self, field)
            if value is not None and value <= 0:
                raise ValueError(f"{field} must be positive or None (off), got {value}.")
        if self.rms_eps < 0:
            raise ValueError(f"rms_eps must be >= 0, got {self.rms_eps}.")
        for rope in (self.rope, self.rope_local):
            if rope is not None:
                rope.inverse_frequencies(self.d_head)  # validates against d_head

    @property
    def n_groups(self) -> int:
        """Query heads per key/value head."""
        return self.n_heads // self.n_kv_heads

    @property
    def attn_scale(self) -> float:
        """Multiplier of query-key dot products: ``(query_pre_attn_scalar or d_head) ** -0.5``."""
        return (self.query_pre_attn_scalar or self.d_head) ** -0.5

    def is_local(self, layer: int) -> bool:
        return bool(self.local_layers) and self.local_layers[layer]


@dataclasses.dataclass(frozen=True)
class LlamaLike(HookedModel):
    """The Llama/Gemma decoder as a jinterp port; family classes (``Llama``, ``Gemma2``...)
    subclass it.

    Args:
        config: a :class:`LlamaLikeConfig`, or a family config with a ``to_core()`` method.
    """

    config: Any
    accepts_context = True  # embed / block take an AttnContext (padding, KV cache)

    @functools.cached_property
    def core(self) -> LlamaLikeConfig:
        """The family-independent config every part of the forward reads."""
        return self.config if isinstance(self.config, LlamaLikeConfig) else self.config.to_core()

    @property
    def n_layers(self) -> int:
        return self.core.n_layers

    @property
    def d_model(self) -> int:
        return self.core.d_model

    @property
    def d_vocab(self) -> int:
        return self.core.d_vocab

    @property
    def n_ctx(self) -> int | None:
        return self.core.n_ctx

    @functools.cached_property
    def top_point_axes(self) -> dict[str, Axes]:
        return standard(("hook_embed", "ln_final.hook_scale", "ln_final.hook_normalized"),
                        TOP_POINTS)

    @functools.cached_property
    def block_point_axes(self) -> dict[str, Axes]:
        c = self.core
        norm = lambda n: [f"{n}.hook_scale", f"{n}.hook_normalized"]
        points = ["hook_resid_pre", *norm("ln1"), "attn.hook_q", "attn.hook_k", "attn.hook_v"]
        if c.qk_norm:
            points += norm("attn.q_norm") + norm("attn.k_norm")
        points += ["attn.hook_rot_q", "attn.hook_rot_k", "attn.hook_attn_scores",
                   "attn.hook_pattern", "attn.hook_z", "attn.hook_result"]
        points += norm("ln1_post") if c.post_norms else []
        points += ["hook_attn_out", "hook_resid_mid", *norm("ln2")]
        points += ["mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post"]
        points += norm("ln2_post") if c.post_norms else []
        return standard(points + ["hook_mlp_out", "hook_resid_post"], BLOCK_POINTS)

    # ---------------------------------------------------------------------------- params
    @functools.cached_property
    def dims(self) -> dict[str, int]:
        """Size of every logical axis of the parameters (see :mod:`jinterp.names`)."""
        c = self.core
        return {"layer": c.n_layers, "d_model": c.d_model, "n_heads": c.n_heads,
                "n_kv_heads": c.n_kv_heads, "d_head": c.d_head, "d_mlp": c.d_mlp,
                "d_vocab": c.d_vocab}

    def param_axes(self) -> dict:
        """The params pytree with each array replaced by its logical axes (a tuple of names).

        One table (:mod:`jinterp.sharding`) maps these names to mesh axes; ``init`` reads the
        shapes from here, so the layout is written once.
        """
        c = self.core
        head = ("layer", "n_heads", "d_model", "d_head")
        kv = ("layer", "n_kv_heads", "d_model", "d_head")
        attn = {"W_Q": head, "W_K": kv, "W_V": kv, "W_O": ("layer", "n_heads", "d_head", "d_model")}
        if c.attn_bias:
            attn |= {"b_Q": ("layer", "n_heads", "d_head"),
                     "b_K": ("layer", "n_kv_heads", "d_head"),
                     "b_V": ("layer", "n_kv_heads", "d_head"), "b_O": ("layer", "d_model")}
        if c.qk_norm:
            attn |= {"q_norm": {"w": ("layer", "d_head")}, "k_norm": {"w": ("layer", "d_head")}}
        up = ("layer", "d_model", "d_mlp")
        mlp = {"W_gate": up, "W_in": up, "W_out": ("layer", "d_mlp", "d_model")}
        if c.mlp_bias:
            mlp |= {"b_gate": ("layer", "d_mlp"), "b_in": ("layer", "d_mlp"),
                    "b_out": ("layer", "d_model")}
        norms = ("ln1", "ln2", "ln1_post", "ln2_post") if c.post_norms else ("ln1", "ln2")
        blocks = {"attn": attn, "mlp": mlp, **{n: {"w": ("layer", "d_model")} for n in norms}}
        axes = {"embed": {"W_E": ("d_vocab", "d_model")}, "blocks": blocks,
                "ln_final": {"w": ("d_model",)}}
        if not c.tied_embeddings:
            axes["unembed"] = {"W_U": ("d_model", "d_vocab")}
        return axes

    def init(self, key: jax.Array) -> dict:
        """Random params: normal(0, init_range) matrices, zero biases, identity norm scales.

        One jitted program (a real-size init is then one compile, not one per tensor); under
        ``jax.eval_shape`` nothing is allocated.
        """
        return _jitted_init(self, key)

    def _init(self, key: jax.Array) -> dict:
        c = self.core
        dtype = jnp.dtype(c.dtype)
        is_axes = lambda x: isinstance(x, tuple)
        shapes = jax.tree.map(lambda axes: tuple(self.dims[a] for a in axes), self.param_axes(),
                              is_leaf=is_axes)
        leaves, treedef = jax.tree.flatten_with_path(shapes, is_leaf=is_axes)
        keys = jax.random.split(key, len(leaves))

        def make(path, shape, k):
            name = jax.tree_util.keystr(path)
            if name.endswith("['w']"):  # norm weights: scale 1 is w=1 (Llama) or w=0 (Gemma)
                return jnp.full(shape, 0.0 if c.norm_offset else 1.0, dtype)
            if "'b_" in name:
                return jnp.zeros(shape, dtype)
            return (c.init_range * jax.random.normal(k, shape, jnp.float32)).astype(dtype)

        return jax.tree.unflatten(treedef, [make(p, s, k) for (p, s), k in zip(leaves, keys)])

    # ---------------------------------------------------------------------------- forward
    def embed(self, params: dict, tokens: Int[Array, "batch pos"], hook,
              ctx: AttnContext | None = None) -> Float[Array, "batch pos d_model"]:
        """Token embeddings (scaled for Gemma); positions enter through RoPE, so ``ctx`` is
        unused here."""
        W_E = params["embed"]["W_E"]
        resid = W_E[tokens]  # batch pos d_model
        if self.core.embed_scale:  # HF rounds sqrt(d_model) to the dtype (55.4256 -> 55.5 in bf16)
            resid = resid * jnp.asarray(np.float32(math.sqrt(self.core.d_model))).astype(W_E.dtype)
        return hook("hook_embed", resid)

    def layer_inputs(self, params: dict) -> dict:
        """Stacked block weights, each layer's RoPE inverse frequencies and attention window.

        A global layer's window is :data:`~jinterp.models.layers.NO_WINDOW` (every earlier key
        is visible), so local and global layers differ by data, not by code.
        """
        c = self.core
        global_freq = c.rope.inverse_frequencies(c.d_head)
        local_freq = (c.rope_local or c.rope).inverse_frequencies(c.d_head)
        local = [c.is_local(l) for l in range(c.n_layers)]
        inv_freq = np.stack([local_freq if is_l else global_freq for is_l in local])  # layer half
        window = np.array([c.sliding_window if is_l else NO_WINDOW for is_l in local], np.int32)
        return {"params": params["blocks"], "inv_freq": jnp.asarray(inv_freq),
                "window": jnp.asarray(window)}

    def block(self, resid: Float[Array, "batch pos d_model"], layer_inputs: dict, hook,
              ctx: AttnContext | None = None):
        """One block; with ``ctx.return_kv`` also this call's keys and values (the cache's)."""
        c = self.core
        p = layer_inputs["params"]
        norm = lambda name, x: rms_norm(x, p[name]["w"], c.rms_eps, c.norm_offset, name, hook)
        qk_norm = lambda name, x, w: rms_norm(x, w, c.rms_eps, c.norm_offset, name, hook)
        n_pos = resid.shape[1]
        window = layer_inputs["window"]
        if ctx is None:
            rope = cos_sin(jnp.arange(n_pos), layer_inputs["inv_freq"], resid.dtype)  # pos d_head
            mask = causal_mask(n_pos, n_pos, window)
        else:  # per-row positions: batch pos d_head
            rope = rope_tables(ctx.query_positions(n_pos), layer_inputs["inv_freq"], resid.dtype)
            mask = ctx.mask(n_pos, window)
        resid_pre = hook("hook_resid_pre", resid)
        attn_out = attention(p["attn"], norm("ln1", resid_pre), hook, scale=c.attn_scale,
                             mask=mask, qk_norm=qk_norm if c.qk_norm else None, rope=rope,
                             softcap=c.attn_softcap, ctx=ctx)
        attn_out, kv = attn_out if ctx is not None and ctx.return_kv else (attn_out, None)
        if c.post_norms:
            attn_out = norm("ln1_post", attn_out)
        resid_mid = hook("hook_resid_mid", resid_pre + hook("hook_attn_out", attn_out))
        mlp_out = gated_mlp(p["mlp"], norm("ln2", resid_mid), c.activation, hook)
        if c.post_norms:
            mlp_out = norm("ln2_post", mlp_out)
        resid_post = hook("hook_resid_post", resid_mid + hook("hook_mlp_out", mlp_out))
        return resid_post if kv is None else (resid_post, kv)

    def unembed(self, params: dict, resid: Float[Array, "batch pos d_model"],
                hook) -> Float[Array, "batch pos d_vocab"]:
        c = self.core
        resid = rms_norm(resid, params["ln_final"]["w"], c.rms_eps, c.norm_offset, "ln_final", hook)
        if c.tied_embeddings:
            logits = jnp.einsum("bpd,vd->bpv", resid, params["embed"]["W_E"])  # batch pos d_vocab
        else:
            logits = resid @ params["unembed"]["W_U"]  # batch pos d_vocab
        return soft_cap(logits, c.final_softcap) if c.final_softcap else logits

    # ---------------------------------------------------------------------------- reading
    # What jinterp's readers (jinterp.readout, jinterp.weights, cache decompositions) need to
    # know about the port without importing it; documented in docs/reading.md.
    normalization = "rmsnorm"  # ln1 / ln2 / ln_final (and post / q / k norms) are RMSNorms

    @property
    def norm_offset(self) -> bool:
        """Whether a norm's scale is ``1 + w`` (Gemma) rather than ``w``."""
        return self.core.norm_offset

    @property
    def final_softcap(self) -> float | None:
        """Gemma 2 / 3's ``cap * tanh(logits / cap)`` on the logits; None when off."""
        return self.core.final_softcap

    def unembed_weights(self, params: dict) -> tuple[Array, None]:
        """``(W_U [d_model, d_vocab], None)``: no family has an unembedding bias."""
        if self.core.tied_embeddings:
            return params["embed"]["W_E"].T, None
        return params["unembed"]["W_U"], None

    def final_norm(self, params: dict, resid: Float[Array, "batch pos d_model"]
                   ) -> Float[Array, "batch pos d_model"]:
        """``ln_final`` with its weight (RMSNorm; Gemma's scale ``1 + w``)."""
        c = self.core
        return rms_norm(resid, params["ln_final"]["w"], c.rms_eps, c.norm_offset, "ln_final",
                        lambda _, x: x)

    def untied(self, bias: bool = False) -> LlamaLike:
        """This model with its own ``unembed.W_U`` (weight processing breaks the tie).

        The result is a plain :class:`LlamaLike` over the same core config (same forward, same
        names). RMSNorm has no bias, so there is never an unembedding bias to add.
        """
        if bias:
            raise ValueError("Llama-like models have no unembedding bias (RMSNorm has no bias "
                             "to fold into one); call untied() without bias.")
        return LlamaLike(dataclasses.replace(self.core, tied_embeddings=False))


_jitted_init = jax.jit(LlamaLike._init, static_argnums=0)
