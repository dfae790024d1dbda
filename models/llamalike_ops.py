"""Stateless maths of the Llama/Gemma family: RMSNorm, soft-capping, grouped-query attention, gated MLPs.

Every function is pure and reports named intermediates through ``hook(point, x) -> x`` (see
:mod:`jinterp.hook_points`). Precision follows HuggingFace, because "logits that don't match HF"
is the complaint these ports exist to avoid: RMSNorm statistics and softmax in float32; RoPE
angles in float32 (:mod:`jinterp.models.rope`); everything else in the activation dtype.

RMSNorm comes in HF's two flavours, which round differently in bfloat16:

- Llama: ``w * (x / rms(x)).to(dtype)`` (normalise in float32, cast, then scale in ``dtype``);
- Gemma: ``(x / rms(x) * (1 + w)).to(dtype)`` (all in float32, cast once; the stored weight is
  an offset from 1, so a zero weight is the identity scale).
"""

from __future__ import annotations

import enum
from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

HookFn = Callable[[str, Array], Array]


class GatedActivation(str, enum.Enum):
    """Non-linearity on the gate branch of a gated MLP (``act(x W_gate) * (x W_in)``)."""

    SILU = "silu"  # SwiGLU (Llama)
    GELU_TANH = "gelu_tanh"  # GeGLU with tanh-approximate GELU (Gemma)
    GELU = "gelu"  # exact erf GELU

    @classmethod
    def from_hf(cls, name: str, gelu_means_tanh: bool = False) -> "GatedActivation":
        """HF's ``hidden_act`` / ``hidden_activation``; Gemma's legacy ``"gelu"`` means tanh."""
        aliases = {"silu": cls.SILU, "swish": cls.SILU, "gelu_pytorch_tanh": cls.GELU_TANH,
                   "gelu_new": cls.GELU_TANH, "gelu": cls.GELU_TANH if gelu_means_tanh else cls.GELU}
        if name not in aliases:
            raise ValueError(f"Unsupported MLP activation {name!r}; supported: {sorted(aliases)}.")
        return aliases[name]

    def __call__(self, x: Array) -> Array:
        if self is GatedActivation.SILU:
            return jax.nn.silu(x)
        return jax.nn.gelu(x, approximate=self is GatedActivation.GELU_TANH)


def rms_norm(x: Float[Array, "*lead d"], w: Float[Array, "d"], eps: float, offset: bool, name: str,
             hook: HookFn) -> Float[Array, "*lead d"]:
    """RMSNorm over the last axis with TransformerLens's hook points.

    Args:
        x: input in the activation dtype (residual ``[batch pos d_model]`` or per-head
            ``[batch pos heads d_head]`` for Gemma 3's q/k norms).
        w: the stored weight; the scale is ``w`` (Llama) or ``1 + w`` (Gemma, ``offset=True``).
        eps: added to the mean square.
        offset: Gemma's ``(1 + w)`` scale, computed in float32 before the single cast.
        name: hook prefix, e.g. ``"ln1"`` or ``"attn.q_norm"``.

    Hooks:
        ``{name}.hook_scale``: ``sqrt(mean(x**2) + eps)`` in float32, shape ``[..., 1]`` (TL's
        convention: the root-mean-square, not its inverse). A hook that replaces it (e.g. freezing
        the norm scale) changes the output, because the output divides by this value.
        ``{name}.hook_normalized``: ``x / scale`` in float32, *before* the weight, as in
        TransformerLens (so SAEs trained there on ``hook_normalized`` read the same values). The
        norm's output is ``hook_normalized * w`` (Llama, cast first) or ``* (1 + w)`` (Gemma).
    """
    dtype = x.dtype
    x32 = x.astype(jnp.float32)
    scale = hook(f"{name}.hook_scale", jnp.sqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps))
    normed = hook(f"{name}.hook_normalized", x32 / scale)
    if offset:
        return (normed * (1.0 + w.astype(jnp.float32))).astype(dtype)
    return w * normed.astype(dtype)


def soft_cap(x: Array, cap: float) -> Array:
    """``cap * tanh(x / cap)`` in float32, cast back (Gemma 2's attention and final-logit caps)."""
    x32 = x.astype(jnp.float32)
    return (cap * jnp.tanh(x32 / cap)).astype(x.dtype)


def grouped_scores(q: Float[Array, "batch q_pos n_heads d_head"],
                   k: Float[Array, "batch k_pos n_kv_heads d_head"]) -> Float[Array, "batch n_heads q_pos k_pos"]:
    """Query-key dot products with grouped keys, never materialising repeated k.

    Head ``h`` reads kv head ``h // group`` (HF's ``repeat_kv``), so queries are viewed as
    ``[n_kv_heads, group]``: MHA is ``group == 1``, MQA is ``n_kv_heads == 1``.
    """
    b, n_q, n_heads, d_head = q.shape
    n_kv = k.shape[2]
    q = q.reshape(b, n_q, n_kv, n_heads // n_kv, d_head)  # batch q_pos n_kv_heads group d_head
    scores = jnp.einsum("bqkgd,bskd->bkgqs", q, k)  # batch n_kv_heads group q_pos k_pos
    return scores.reshape(b, n_heads, n_q, k.shape[1])  # batch n_heads q_pos k_pos


def grouped_mix(pattern: Float[Array, "batch n_heads q_pos k_pos"],
                v: Float[Array, "batch k_pos n_kv_heads d_head"]) -> Float[Array, "batch q_pos n_heads d_head"]:
    """Pattern-weighted values per query head (``hook_z``), reading kv head ``h // group``."""
    b, n_heads, n_q, n_k = pattern.shape
    n_kv, d_head = v.shape[2], v.shape[3]
    pattern = pattern.reshape(b, n_kv, n_heads // n_kv, n_q, n_k)  # batch n_kv_heads group q_pos k_pos
    z = jnp.einsum("bkgqs,bskd->bqkgd", pattern, v)  # batch q_pos n_kv_heads group d_head
    return z.reshape(b, n_q, n_heads, d_head)  # batch q_pos n_heads d_head


def gated_mlp(p: dict, x: Float[Array, "batch pos d_model"], act: GatedActivation, bias: bool,
              hook: HookFn) -> Float[Array, "batch pos d_model"]:
    """``(act(x W_gate) * (x W_in)) W_out`` with TL's hooks.

    Hooks: ``mlp.hook_pre`` (gate pre-activation), ``mlp.hook_pre_linear`` (the linear "up"
    branch), ``mlp.hook_post`` (their product, the input of ``W_out``), all ``[batch pos d_mlp]``.
    """
    gate = x @ p["W_gate"] + (p["b_gate"] if bias else 0)  # batch pos d_mlp
    pre = hook("mlp.hook_pre", gate)
    pre_linear = hook("mlp.hook_pre_linear", x @ p["W_in"] + (p["b_in"] if bias else 0))  # batch pos d_mlp
    post = hook("mlp.hook_post", act(pre) * pre_linear)
    return post @ p["W_out"] + (p["b_out"] if bias else 0)  # batch pos d_model
