"""GPT-2 as a pure function of ``(params, tokens)``, and the research variants toy studies use.

One frozen config covers GPT-2 small to XL and the small transformers of the toy-model papers
(attention-only, no LayerNorm, no positional embedding, ReLU, untied unembedding, no biases).
Parameters are an explicit pytree with per-head weights and a leading ``layer`` axis on
everything inside ``blocks`` (the forward scans over it, so compile time is flat in depth)::

    embed.W_E          [d_vocab, d_model]
    pos_embed.W_pos    [n_ctx, d_model]                 (learned positions only)
    blocks.ln1.w/b     [layer, d_model]                 (LayerNorm only; same for ln2)
    blocks.attn.W_Q/K/V [layer, n_heads, d_model, d_head]   b_Q/K/V [layer, n_heads, d_head]
    blocks.attn.W_O    [layer, n_heads, d_head, d_model]    b_O     [layer, d_model]
    blocks.mlp.W_in    [layer, d_model, d_mlp]  b_in [layer, d_mlp]   (not attention-only)
    blocks.mlp.W_out   [layer, d_mlp, d_model]  b_out [layer, d_model]
    ln_final.w/b       [d_model]
    unembed.W_U        [d_model, d_vocab]  b_U [d_vocab]     (untied only; tied reuses W_E.T)

Activation names and shapes are TransformerLens's (see :mod:`jinterp.names`).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jinterp.hook_points import HookPoints
from jinterp.model import HookedModel
from jinterp.models.layers import Activation, HookFn, apply_mask, causal_mask, layer_norm, softmax_f32


class Norm(str, enum.Enum):
    LAYERNORM = "layernorm"
    NONE = "none"


class Positional(str, enum.Enum):
    LEARNED = "learned"
    NONE = "none"


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """Shape and variant of a GPT-2-family model.

    Attributes:
        d_mlp: MLP width; ``None`` makes an attention-only model (no MLP, no ln2).
        attn_scale_by_layer: HF's ``scale_attn_by_inverse_layer_idx`` (scores / (layer + 1)).
        attn_bias / mlp_bias / unembed_bias: which biases exist (GPT-2: True, True, False).
    """

    n_layers: int = 12
    d_model: int = 768
    n_heads: int = 12
    d_head: int = 64
    d_mlp: int | None = 3072
    d_vocab: int = 50257
    n_ctx: int = 1024
    activation: Activation = Activation.GELU_NEW
    normalization: Norm = Norm.LAYERNORM
    positional: Positional = Positional.LEARNED
    tied_embeddings: bool = True
    attn_bias: bool = True
    mlp_bias: bool = True
    unembed_bias: bool = False
    ln_eps: float = 1e-5
    attn_scale_by_layer: bool = False
    init_range: float = 0.02
    dtype: str = "float32"

    def __post_init__(self):
        for field in ("activation", "normalization", "positional"):
            enum_type = {"activation": Activation, "normalization": Norm, "positional": Positional}[field]
            value = getattr(self, field)
            try:
                object.__setattr__(self, field, enum_type(value))
            except ValueError:
                raise ValueError(f"{field}={value!r} is not one of {[e.value for e in enum_type]}.") from None
        for field in ("n_layers", "d_model", "n_heads", "d_head", "d_vocab", "n_ctx"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{field} must be positive, got {getattr(self, field)}.")
        if self.d_mlp is not None and self.d_mlp <= 0:
            raise ValueError(f"d_mlp must be positive or None (attention-only), got {self.d_mlp}.")
        if self.tied_embeddings and self.unembed_bias:
            raise ValueError("A tied unembedding has no bias: set unembed_bias=False or tied_embeddings=False.")

    @property
    def attn_only(self) -> bool:
        return self.d_mlp is None

    @classmethod
    def preset(cls, name: str) -> "GPT2Config":
        """``gpt2``, ``gpt2-medium``, ``gpt2-large`` or ``gpt2-xl`` (OpenAI's released shapes)."""
        shapes = {"gpt2": (12, 768, 12), "gpt2-medium": (24, 1024, 16),
                  "gpt2-large": (36, 1280, 20), "gpt2-xl": (48, 1600, 25)}
        if name not in shapes:
            raise ValueError(f"Unknown GPT-2 preset {name!r}; choose from {sorted(shapes)}.")
        n_layers, d_model, n_heads = shapes[name]
        return cls(n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_head=d_model // n_heads,
                   d_mlp=4 * d_model)


@dataclasses.dataclass(frozen=True)
class GPT2(HookedModel):
    """The GPT-2 port: ``model.forward(params, tokens, points)``; use via ``jinterp.run_with_*``."""

    config: GPT2Config

    @property
    def n_layers(self) -> int:
        return self.config.n_layers

    @property
    def d_vocab(self) -> int:
        return self.config.d_vocab

    @property
    def n_ctx(self) -> int | None:
        return self.config.n_ctx if self.config.positional is Positional.LEARNED else None

    @functools.cached_property
    def top_points(self) -> tuple[str, ...]:
        cfg = self.config
        points = ["hook_embed"]
        if cfg.positional is Positional.LEARNED:
            points.append("hook_pos_embed")
        if cfg.normalization is Norm.LAYERNORM:
            points += ["ln_final.hook_scale", "ln_final.hook_normalized"]
        return tuple(points)

    @functools.cached_property
    def block_points(self) -> tuple[str, ...]:
        cfg = self.config
        ln = cfg.normalization is Norm.LAYERNORM
        points = ["hook_resid_pre"] + (["ln1.hook_scale", "ln1.hook_normalized"] if ln else [])
        points += ["attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_attn_scores",
                   "attn.hook_pattern", "attn.hook_z", "attn.hook_result", "hook_attn_out"]
        if not cfg.attn_only:
            points += ["hook_resid_mid"] + (["ln2.hook_scale", "ln2.hook_normalized"] if ln else [])
            points += ["mlp.hook_pre", "mlp.hook_post", "hook_mlp_out"]
        return tuple(points + ["hook_resid_post"])

    # ---------------------------------------------------------------------------------- init
    @functools.cached_property
    def dims(self) -> dict[str, int]:
        """Size of every logical axis of the parameters (see :mod:`jinterp.names`).

        GPT-2 attention is grouped attention with groups of one: ``n_kv_heads == n_heads``.
        """
        cfg = self.config
        dims = {"layer": cfg.n_layers, "d_model": cfg.d_model, "n_heads": cfg.n_heads,
                "n_kv_heads": cfg.n_heads, "d_head": cfg.d_head, "d_vocab": cfg.d_vocab,
                "n_ctx": cfg.n_ctx}
        return dims if cfg.attn_only else dims | {"d_mlp": cfg.d_mlp}

    def param_axes(self) -> dict:
        """The params pytree with each array replaced by its logical axes (a tuple of names)."""
        cfg = self.config
        head = ("layer", "n_heads", "d_model", "d_head")
        kv = ("layer", "n_kv_heads", "d_model", "d_head")
        attn = {"W_Q": head, "W_K": kv, "W_V": kv, "W_O": ("layer", "n_heads", "d_head", "d_model")}
        if cfg.attn_bias:
            attn |= {"b_Q": ("layer", "n_heads", "d_head"), "b_K": ("layer", "n_kv_heads", "d_head"),
                     "b_V": ("layer", "n_kv_heads", "d_head"), "b_O": ("layer", "d_model")}
        ln = {"w": ("layer", "d_model"), "b": ("layer", "d_model")}
        blocks: dict = {"attn": attn}
        if cfg.normalization is Norm.LAYERNORM:
            blocks["ln1"] = ln
        if not cfg.attn_only:
            blocks["mlp"] = {"W_in": ("layer", "d_model", "d_mlp"), "W_out": ("layer", "d_mlp", "d_model")}
            if cfg.mlp_bias:
                blocks["mlp"] |= {"b_in": ("layer", "d_mlp"), "b_out": ("layer", "d_model")}
            if cfg.normalization is Norm.LAYERNORM:
                blocks["ln2"] = dict(ln)
        axes = {"embed": {"W_E": ("d_vocab", "d_model")}, "blocks": blocks}
        if cfg.positional is Positional.LEARNED:
            axes["pos_embed"] = {"W_pos": ("n_ctx", "d_model")}
        if cfg.normalization is Norm.LAYERNORM:
            axes["ln_final"] = {"w": ("d_model",), "b": ("d_model",)}
        if not cfg.tied_embeddings:
            axes["unembed"] = {"W_U": ("d_model", "d_vocab")}
            if cfg.unembed_bias:
                axes["unembed"]["b_U"] = ("d_vocab",)
        return axes

    def param_shapes(self) -> dict:
        """The params pytree as ``jax.ShapeDtypeStruct`` leaves (nothing allocated)."""
        return jax.eval_shape(self.init, jax.random.key(0))

    def init(self, key: jax.Array) -> dict:
        """Random parameters: normal(0, init_range) weights, zero biases, unit norm weights.

        Jitted, so building a model costs one compile instead of one dispatch per tensor.
        """
        return _jit_init(self, key)

    def _init(self, key: jax.Array) -> dict:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        L, D, H, Dh, V = cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_vocab
        keys = iter(jax.random.split(key, 16))

        def normal(*shape):
            return (cfg.init_range * jax.random.normal(next(keys), shape)).astype(dtype)

        zeros = lambda *shape: jnp.zeros(shape, dtype)
        ones = lambda *shape: jnp.ones(shape, dtype)
        attn = {"W_Q": normal(L, H, D, Dh), "W_K": normal(L, H, D, Dh), "W_V": normal(L, H, D, Dh),
                "W_O": normal(L, H, Dh, D)}
        if cfg.attn_bias:
            attn |= {"b_Q": zeros(L, H, Dh), "b_K": zeros(L, H, Dh), "b_V": zeros(L, H, Dh), "b_O": zeros(L, D)}
        blocks: dict = {"attn": attn}
        if cfg.normalization is Norm.LAYERNORM:
            blocks["ln1"] = {"w": ones(L, D), "b": zeros(L, D)}
        if not cfg.attn_only:
            blocks["mlp"] = {"W_in": normal(L, D, cfg.d_mlp), "W_out": normal(L, cfg.d_mlp, D)}
            if cfg.mlp_bias:
                blocks["mlp"] |= {"b_in": zeros(L, cfg.d_mlp), "b_out": zeros(L, D)}
            if cfg.normalization is Norm.LAYERNORM:
                blocks["ln2"] = {"w": ones(L, D), "b": zeros(L, D)}
        params = {"embed": {"W_E": normal(V, D)}, "blocks": blocks}
        if cfg.positional is Positional.LEARNED:
            params["pos_embed"] = {"W_pos": normal(cfg.n_ctx, D)}
        if cfg.normalization is Norm.LAYERNORM:
            params["ln_final"] = {"w": ones(D), "b": zeros(D)}
        if not cfg.tied_embeddings:
            params["unembed"] = {"W_U": normal(D, V)}
            if cfg.unembed_bias:
                params["unembed"]["b_U"] = zeros(V)
        return params

    # ------------------------------------------------------------------------------- forward
    def forward(self, params: dict, tokens: Int[Array, "batch pos"],
                points: HookPoints) -> Float[Array, "batch pos d_vocab"]:
        cfg = self.config
        n_pos = tokens.shape[1]
        resid = points("hook_embed", params["embed"]["W_E"][tokens])  # batch pos d_model
        if cfg.positional is Positional.LEARNED:
            pos = jnp.broadcast_to(params["pos_embed"]["W_pos"][:n_pos], resid.shape)
            resid = resid + points("hook_pos_embed", pos)
        layer = jnp.arange(cfg.n_layers, dtype=jnp.float32)
        attn_scale = jnp.full((cfg.n_layers,), 1.0 / math.sqrt(cfg.d_head))  # layer
        if cfg.attn_scale_by_layer:
            attn_scale = attn_scale / (layer + 1)
        block = functools.partial(self._block, mask=causal_mask(n_pos, n_pos),
                                  want_result=points.wants("attn.hook_result"))
        resid = points.scan(block, resid, (params["blocks"], attn_scale))
        if cfg.normalization is Norm.LAYERNORM:
            resid = layer_norm(resid, params["ln_final"]["w"], params["ln_final"]["b"], cfg.ln_eps,
                               "ln_final", points)
        if cfg.tied_embeddings:
            return jnp.einsum("bpd,vd->bpv", resid, params["embed"]["W_E"])  # batch pos d_vocab
        logits = resid @ params["unembed"]["W_U"]  # batch pos d_vocab
        return logits + params["unembed"]["b_U"] if cfg.unembed_bias else logits

    def _block(self, resid: Float[Array, "batch pos d_model"], layer_inputs, hook: HookFn, *,
               mask, want_result: bool) -> Float[Array, "batch pos d_model"]:
        cfg = self.config
        p, attn_scale = layer_inputs
        resid_pre = hook("hook_resid_pre", resid)
        attn_in = self._norm(p.get("ln1"), resid_pre, "ln1", hook)
        attn_out = hook("hook_attn_out", self._attention(p["attn"], attn_in, attn_scale, mask, hook, want_result))
        if cfg.attn_only:
            return hook("hook_resid_post", resid_pre + attn_out)
        resid_mid = hook("hook_resid_mid", resid_pre + attn_out)
        mlp_in = self._norm(p.get("ln2"), resid_mid, "ln2", hook)
        mlp_out = hook("hook_mlp_out", self._mlp(p["mlp"], mlp_in, hook))
        return hook("hook_resid_post", resid_mid + mlp_out)

    def _norm(self, p, x, name: str, hook: HookFn):
        if self.config.normalization is Norm.NONE:
            return x
        return layer_norm(x, p["w"], p["b"], self.config.ln_eps, name, hook)

    def _attention(self, p: dict, x: Float[Array, "batch pos d_model"], scale, mask, hook: HookFn,
                   want_result: bool) -> Float[Array, "batch pos d_model"]:
        bias = self.config.attn_bias
        q = jnp.einsum("bpd,hde->bphe", x, p["W_Q"]) + (p["b_Q"] if bias else 0)  # batch pos n_heads d_head
        k = jnp.einsum("bpd,hde->bphe", x, p["W_K"]) + (p["b_K"] if bias else 0)
        v = jnp.einsum("bpd,hde->bphe", x, p["W_V"]) + (p["b_V"] if bias else 0)
        q, k, v = hook("attn.hook_q", q), hook("attn.hook_k", k), hook("attn.hook_v", v)
        scores = jnp.einsum("bqhe,bkhe->bhqk", q, k) * scale.astype(q.dtype)  # batch n_heads q_pos k_pos
        scores = hook("attn.hook_attn_scores", apply_mask(scores, mask))
        pattern = hook("attn.hook_pattern", softmax_f32(scores))
        z = hook("attn.hook_z", jnp.einsum("bhqk,bkhe->bqhe", pattern, v))  # batch pos n_heads d_head
        if want_result:
            result = hook("attn.hook_result", jnp.einsum("bqhe,hed->bqhd", z, p["W_O"]))  # batch pos n_heads d_model
            out = result.sum(axis=2)
        else:
            out = jnp.einsum("bqhe,hed->bqd", z, p["W_O"])  # batch pos d_model
        return out + p["b_O"] if bias else out

    def _mlp(self, p: dict, x: Float[Array, "batch pos d_model"], hook: HookFn) -> Float[Array, "batch pos d_model"]:
        bias = self.config.mlp_bias
        pre = hook("mlp.hook_pre", x @ p["W_in"] + (p["b_in"] if bias else 0))  # batch pos d_mlp
        post = hook("mlp.hook_post", self.config.activation(pre))
        return post @ p["W_out"] + (p["b_out"] if bias else 0)  # batch pos d_model


_jit_init = jax.jit(lambda model, key: model._init(key), static_argnums=0)
