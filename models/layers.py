"""Stateless maths shared by every port: norms, activations, masks, attention, MLPs.

Every function is pure, takes explicit weights, and reports its named intermediates through a
``hook(point, x) -> x`` callback (:data:`jinterp.hooks.HookFn`), so the same code serves a
plain forward (the callback is the identity), captures and interventions.

Precision follows HuggingFace, because "logits that don't match HF" is the complaint these
ports exist to avoid: norm statistics and softmax in float32, RoPE angles in float32
(:mod:`jinterp.models.rope`), everything else in the activation dtype. RMSNorm comes in HF's
two flavours, which round differently in bfloat16:

- Llama: ``w * (x / rms(x)).to(dtype)`` (normalise in float32, cast, then scale in ``dtype``);
- Gemma: ``(x / rms(x) * (1 + w)).to(dtype)`` (all in float32, cast once; the stored weight is
  an offset from 1, so a zero weight is the identity scale).

Attention is written once, as grouped-query attention: query head ``h`` reads key/value head
``h // group``. GPT-2's multi-head attention is the case ``group == 1``, multi-query attention
``n_kv_heads == 1``; keys and values are never repeated to ``n_heads``.
"""

from __future__ import annotations

import enum

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Bool, Float, Int

from jinterp.hooks import HookFn
from jinterp.model import AttnContext
from jinterp.models.rope import cos_sin, rotate

#: Masked attention scores, as TransformerLens writes them into ``hook_attn_scores``.
MASKED = -jnp.inf

#: A window wider than any context: "no sliding window" as data, so every layer has one.
NO_WINDOW = 2**30


class Activation(str, enum.Enum):
    """MLP non-linearities (gated MLPs apply it to the gate branch)."""

    GELU_TANH = "gelu_tanh"  # tanh approximation: GPT-2's gelu_new, Gemma's GeGLU
    GELU = "gelu"  # exact erf GELU
    RELU = "relu"
    SILU = "silu"  # SwiGLU (Llama)
    GELU_NEW = "gelu_tanh"  # alias: GPT-2's name for the tanh approximation

    @classmethod
    def _missing_(cls, value):
        return {"gelu_new": cls.GELU_TANH, "gelu_pytorch_tanh": cls.GELU_TANH}.get(value)

    @classmethod
    def from_hf(cls, name: str, gelu_means_tanh: bool = False) -> Activation:
        """HF's ``activation_function`` / ``hidden_act``; Gemma's legacy ``"gelu"`` means tanh."""
        aliases = {"gelu_new": cls.GELU_TANH, "gelu_pytorch_tanh": cls.GELU_TANH,
                   "gelu": cls.GELU_TANH if gelu_means_tanh else cls.GELU, "relu": cls.RELU,
                   "silu": cls.SILU, "swish": cls.SILU}
        if name not in aliases:
            raise ValueError(f"Unsupported activation {name!r}; supported: {sorted(aliases)}.")
        return aliases[name]

    def __call__(self, x: Array) -> Array:
        if self is Activation.SILU:
            return jax.nn.silu(x)
        if self is Activation.RELU:
            return jax.nn.relu(x)
        return jax.nn.gelu(x, approximate=self is Activation.GELU_TANH)


def lead(w: Array, ndim: int) -> Array:
    """``w`` with leading axes of size one up to rank ``ndim`` (explicit broadcasting)."""
    return w.reshape((1,) * (ndim - w.ndim) + w.shape)


def add_bias(x: Array, b: Array | None) -> Array:
    """``x + b`` over the trailing axes of ``x``; no bias is a no-op."""
    return x if b is None else x + lead(b, x.ndim)


# ------------------------------------------------------------------------------- norms
def layer_norm(x: Float[Array, "batch pos d_model"], w: Float[Array, " d_model"] | None,
               b: Float[Array, " d_model"] | None, eps: float, name: str,
               hook: HookFn) -> Float[Array, "batch pos d_model"]:
    """LayerNorm with TransformerLens's hooks ``{name}.hook_scale`` / ``{name}.hook_normalized``.

    ``hook_scale`` is ``sqrt(var + eps)`` ``[batch pos 1]``; ``hook_normalized`` is
    ``(x - mean) / scale`` *before* the weight and bias, as in TransformerLens (its folded
    ``LayerNormPre`` and its v4 bridge), so SAEs trained there on ``ln*.hook_normalized`` read
    the same values here. The norm's output is ``hook_normalized * w + b``.
    """
    centred = x - jnp.mean(x, axis=-1, keepdims=True)
    scale = hook(f"{name}.hook_scale", jnp.sqrt(jnp.mean(centred**2, axis=-1, keepdims=True) + eps))
    out = hook(f"{name}.hook_normalized", centred / scale)
    if w is not None:
        out = out * lead(w, out.ndim)
    return add_bias(out, b)


def rms_norm(x: Float[Array, "*lead d"], w: Float[Array, " d"], eps: float, offset: bool,
             name: str, hook: HookFn) -> Float[Array, "*lead d"]:
    """RMSNorm over the last axis with TransformerLens's hook points.

    Args:
        x: residual ``[batch pos d_model]`` or per-head ``[batch pos heads d_head]`` (Gemma 3's
            q/k norms), in the activation dtype.
        w: the stored weight; the scale is ``w`` (Llama) or ``1 + w`` (Gemma, ``offset=True``).
        eps: added to the mean square.
        offset: Gemma's ``(1 + w)`` scale, computed in float32 before the single cast.
        name: hook prefix, e.g. ``"ln1"`` or ``"attn.q_norm"``.

    Hooks:
        ``{name}.hook_scale``: ``sqrt(mean(x**2) + eps)`` in float32, shape ``[..., 1]`` (TL's
        convention: the root-mean-square, not its inverse). Replacing it (e.g. freezing the
        norm scale) changes the output, because the output divides by this value.
        ``{name}.hook_normalized``: ``x / scale`` in float32, *before* the weight, as in
        TransformerLens. The output is ``hook_normalized * w`` (Llama, cast first) or
        ``* (1 + w)`` (Gemma).
    """
    dtype = x.dtype
    x32 = x.astype(jnp.float32)
    scale = hook(f"{name}.hook_scale", jnp.sqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps))
    normed = hook(f"{name}.hook_normalized", x32 / scale)
    w = lead(w, x.ndim)
    if offset:
        return (normed * (1.0 + w.astype(jnp.float32))).astype(dtype)
    return w * normed.astype(dtype)


def soft_cap(x: Array, cap: float) -> Array:
    """``cap * tanh(x / cap)`` in float32, cast back (Gemma 2's attention and logit caps)."""
    x32 = x.astype(jnp.float32)
    return (cap * jnp.tanh(x32 / cap)).astype(x.dtype)


# ------------------------------------------------------------------------------- attention
def causal_mask(n_q: int, n_k: int, window: Array | int = NO_WINDOW) -> Bool[Array, "q_pos k_pos"]:
    """True where query ``i`` may attend key ``j``: ``j <= i`` and ``i - j < window``."""
    q = jnp.arange(n_q)[:, None] + (n_k - n_q)
    k = jnp.arange(n_k)[None, :]
    return (k <= q) & (q - k < window)


def softmax_f32(scores: Float[Array, "batch n_heads q_pos k_pos"]
                ) -> Float[Array, "batch n_heads q_pos k_pos"]:
    """Softmax over keys in float32 whatever the input dtype (as HF does), cast back."""
    return jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(scores.dtype)


def grouped_scores(q: Float[Array, "batch q_pos n_heads d_head"],
                   k: Float[Array, "batch k_pos n_kv_heads d_head"]
                   ) -> Float[Array, "batch n_heads q_pos k_pos"]:
    """Query-key dot products; query head ``h`` reads key head ``h // group``."""
    b, n_q, n_heads, d_head = q.shape
    n_kv = k.shape[2]
    q = q.reshape(b, n_q, n_kv, n_heads // n_kv, d_head)  # batch q_pos n_kv_heads group d_head
    scores = jnp.einsum("bqkgd,bskd->bkgqs", q, k)  # batch n_kv_heads group q_pos k_pos
    return scores.reshape(b, n_heads, n_q, k.shape[1])  # batch n_heads q_pos k_pos


def grouped_mix(pattern: Float[Array, "batch n_heads q_pos k_pos"],
                v: Float[Array, "batch k_pos n_kv_heads d_head"]
                ) -> Float[Array, "batch q_pos n_heads d_head"]:
    """Pattern-weighted values per query head (``hook_z``), reading value head ``h // group``."""
    b, n_heads, n_q, n_k = pattern.shape
    n_kv, d_head = v.shape[2], v.shape[3]
    pattern = pattern.reshape(b, n_kv, n_heads // n_kv, n_q, n_k)  # b n_kv_heads group q k
    z = jnp.einsum("bkgqs,bskd->bqkgd", pattern, v)  # batch q_pos n_kv_heads group d_head
    return z.reshape(b, n_q, n_heads, d_head)  # batch q_pos n_heads d_head


def attention(p: dict, x: Float[Array, "batch pos d_model"], hook, *, scale: Array | float,
              mask: Bool[Array, "pos pos"] | Bool[Array, "batch pos k_pos"], qk_norm=None,
              rope=None, softcap: float | None = None, ctx: AttnContext | None = None):
    """Grouped-query attention with TransformerLens's hooks, for every family.

    Args:
        p: ``W_Q [n_heads, d_model, d_head]``, ``W_K`` / ``W_V [n_kv_heads, d_model, d_head]``,
            ``W_O [n_heads, d_head, d_model]``, optional biases ``b_Q/b_K/b_V/b_O`` and Gemma 3's
            ``q_norm`` / ``k_norm`` weights.
        x: the normalised residual.
        hook: the block's hook (``hook.wants("attn.hook_result")`` switches per-head outputs).
        scale: multiplier of the query-key dot products.
        mask: where a query may attend (causal, maybe windowed): ``[pos, pos]``, or per row
            ``[batch, pos, k_pos]`` with ``ctx`` (:meth:`AttnContext.mask`).
        qk_norm: ``(name, x, w) -> x`` applied to queries and keys before RoPE, or None.
        rope: ``(cos, sin)`` ``[pos, d_head]`` for rotary models (``[batch, pos, d_head]``
            with per-row positions), or None.
        softcap: Gemma 2's ``cap * tanh(scores / cap)`` before the mask, or None.
        ctx: padding and KV cache (:class:`jinterp.model.AttnContext`); None for a plain call.
            With ``ctx.kv`` this call's keys and values are written into the layer's cache at
            ``ctx.offset`` and the queries attend over every slot (``k_pos`` of the cache).

    Returns:
        The attention output ``[batch, pos, d_model]``; with ``ctx.return_kv`` also this call's
        ``(k, v)`` ``[batch, pos, n_kv_heads, d_head]`` (keys after RoPE) for the cache.
    """
    q = add_bias(jnp.einsum("bpd,hde->bphe", x, p["W_Q"]), p.get("b_Q"))  # b pos n_heads d_head
    k = add_bias(jnp.einsum("bpd,kde->bpke", x, p["W_K"]), p.get("b_K"))  # b pos n_kv d_head
    v = add_bias(jnp.einsum("bpd,kde->bpke", x, p["W_V"]), p.get("b_V"))  # b pos n_kv d_head
    q, k, v = hook("attn.hook_q", q), hook("attn.hook_k", k), hook("attn.hook_v", v)
    if qk_norm is not None:
        q = qk_norm("attn.q_norm", q, p["q_norm"]["w"])
        k = qk_norm("attn.k_norm", k, p["k_norm"]["w"])
    if rope is not None:
        q = hook("attn.hook_rot_q", rotate_rows(q, *rope))
        k = hook("attn.hook_rot_k", rotate_rows(k, *rope))
    k_all, v_all = k, v
    if ctx is not None and ctx.kv is not None:  # decoding: this call's keys join the cache
        k_all = lax.dynamic_update_slice_in_dim(ctx.kv[0], k, ctx.offset, axis=1)
        v_all = lax.dynamic_update_slice_in_dim(ctx.kv[1], v, ctx.offset, axis=1)
    scores = grouped_scores(q, k_all) * jnp.asarray(scale, q.dtype)  # batch n_heads q_pos k_pos
    if softcap is not None:
        scores = soft_cap(scores, softcap)
    if ctx is not None:
        mask = mask[:, None]  # batch 1 q_pos k_pos
    scores = hook("attn.hook_attn_scores", jnp.where(mask, scores, MASKED))
    pattern = hook("attn.hook_pattern", softmax_f32(scores))
    z = hook("attn.hook_z", grouped_mix(pattern, v_all))  # batch pos n_heads d_head
    if hook.wants("attn.hook_result"):
        result = jnp.einsum("bqhe,hed->bqhd", z, p["W_O"])  # batch pos n_heads d_model
        out = hook("attn.hook_result", result).sum(axis=2)
    else:
        out = jnp.einsum("bqhe,hed->bqd", z, p["W_O"])  # batch pos d_model
    out = add_bias(out, p.get("b_O"))
    return (out, (k, v)) if ctx is not None and ctx.return_kv else out


def rotate_rows(x: Float[Array, "batch pos heads d_head"], cos: Array, sin: Array
                ) -> Float[Array, "batch pos heads d_head"]:
    """RoPE with one table for every row (``cos`` ``[pos, d_head]``) or one per row
    (``[batch, pos, d_head]``: left padding shifts each row's positions)."""
    if cos.ndim == 2:
        return rotate(x, cos, sin)
    return jax.vmap(lambda xb, c, s: rotate(xb[None], c, s)[0])(x, cos, sin)


def rope_tables(positions: Int[Array, " pos"] | Int[Array, "batch pos"], inv_freq: Array,
                dtype) -> tuple[Array, Array]:
    """cos and sin ``[pos, d_head]``, or ``[batch, pos, d_head]`` for per-row positions."""
    if positions.ndim == 1:
        return cos_sin(positions, inv_freq, dtype)
    return jax.vmap(cos_sin, in_axes=(0, None, None))(positions, inv_freq, dtype)


# ------------------------------------------------------------------------------- MLPs
def mlp(p: dict, x: Float[Array, "batch pos d_model"], act: Activation,
        hook: HookFn) -> Float[Array, "batch pos d_model"]:
    """``act(x W_in + b_in) W_out + b_out`` with hooks ``mlp.hook_pre`` / ``mlp.hook_post``."""
    pre = hook("mlp.hook_pre", add_bias(x @ p["W_in"], p.get("b_in")))  # batch pos d_mlp
    post = hook("mlp.hook_post", act(pre))
    return add_bias(post @ p["W_out"], p.get("b_out"))  # batch pos d_model


def gated_mlp(p: dict, x: Float[Array, "batch pos d_model"], act: Activation,
              hook: HookFn) -> Float[Array, "batch pos d_model"]:
    """``(act(x W_gate) * (x W_in)) W_out`` with TL's hooks.

    Hooks: ``mlp.hook_pre`` (gate pre-activation), ``mlp.hook_pre_linear`` (the linear "up"
    branch), ``mlp.hook_post`` (their product, the input of ``W_out``), all ``[batch pos d_mlp]``.
    """
    pre = hook("mlp.hook_pre", add_bias(x @ p["W_gate"], p.get("b_gate")))  # batch pos d_mlp
    pre_linear = hook("mlp.hook_pre_linear", add_bias(x @ p["W_in"], p.get("b_in")))
    post = hook("mlp.hook_post", act(pre) * pre_linear)
    return add_bias(post @ p["W_out"], p.get("b_out"))  # batch pos d_model
