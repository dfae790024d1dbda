"""GPT-2 as a pure function of ``(params, tokens)``, and the research variants toy studies use.

One frozen config covers GPT-2 small to XL and the small transformers of the toy-model papers
(attention-only, no LayerNorm, no positional embedding, ReLU, untied unembedding, no biases)
and Tracr's compiled transformers (:mod:`jinterp.models.tracr`: no LayerNorm, ReLU, attention
that sees the whole sequence).
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
from jax import lax
from jaxtyping import Array, Float, Int

from jinterp.model import AttnContext, HookedModel
from jinterp.models.dtypes import canonical_dtype
from jinterp.models.layers import NO_WINDOW, Activation, attention, causal_mask, layer_norm, mlp
from jinterp.names import BLOCK_POINTS, TOP_POINTS, Axes, standard


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
        causal: each query sees only earlier keys (GPT-2). False lets every position attend to
            the whole sequence, as Tracr's non-causal compiled programs need (``length``,
            ``reverse`` and ``sort`` read later tokens); padding is still masked.
    """

    n_layers: int = 12
    d_model: int = 768
    n_heads: int = 12
    d_head: int = 64
    d_mlp: int | None = 3072
    d_vocab: int = 50257
    n_ctx: int = 1024
    activation: Activation | str = Activation.GELU_TANH
    normalization: Norm | str = Norm.LAYERNORM
    positional: Positional | str = Positional.LEARNED
    tied_embeddings: bool = True
    attn_bias: bool = True
    mlp_bias: bool = True
    unembed_bias: bool = False
    ln_eps: float = 1e-5
    attn_scale_by_layer: bool = False
    causal: bool = True
    init_range: float = 0.02
    dtype: str | object = "float32"

    def __post_init__(self):
        object.__setattr__(self, "dtype", canonical_dtype(self.dtype))
        for field in ("activation", "normalization", "positional"):
            enum_type = {"activation": Activation, "normalization": Norm,
                         "positional": Positional}[field]
            value = getattr(self, field)
            try:
                object.__setattr__(self, field, enum_type(value))
            except ValueError:
                raise ValueError(f"{field}={value!r} is not one of "
                                 f"{[e.value for e in enum_type]}.") from None
        for field in ("n_layers", "d_model", "n_heads", "d_head", "d_vocab", "n_ctx"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{field} must be positive, got {getattr(self, field)}.")
        if self.d_mlp is not None and self.d_mlp <= 0:
            raise ValueError(f"d_mlp must be positive or None (attention-only), got {self.d_mlp}.")
        if self.tied_embeddings and self.unembed_bias:
            raise ValueError("A tied unembedding has no bias: set unembed_bias=False or "
                             "tied_embeddings=False.")

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
    """The GPT-2 port; run it with ``model(params, tokens)`` or ``jinterp.run_with_*``."""

    config: GPT2Config
    accepts_context = True  # embed / block take an AttnContext (padding, KV cache)

    @property
    def n_layers(self) -> int:
        return self.config.n_layers

    @property
    def d_model(self) -> int:
        return self.config.d_model

    @property
    def d_vocab(self) -> int:
        return self.config.d_vocab

    @property
    def n_ctx(self) -> int | None:
        return self.config.n_ctx if self.config.positional is Positional.LEARNED else None

    @functools.cached_property
    def top_point_axes(self) -> dict[str, Axes]:
        cfg = self.config
        points = ["hook_embed"]
        if cfg.positional is Positional.LEARNED:
            points.append("hook_pos_embed")
        if cfg.normalization is Norm.LAYERNORM:
            points += ["ln_final.hook_scale", "ln_final.hook_normalized"]
        return standard(points, TOP_POINTS)

    @functools.cached_property
    def block_point_axes(self) -> dict[str, Axes]:
        cfg = self.config
        ln = cfg.normalization is Norm.LAYERNORM
        points = ["hook_resid_pre"] + (["ln1.hook_scale", "ln1.hook_normalized"] if ln else [])
        points += ["attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_attn_scores",
                   "attn.hook_pattern", "attn.hook_z", "attn.hook_result", "hook_attn_out"]
        if not cfg.attn_only:
            points += ["hook_resid_mid"] + (["ln2.hook_scale", "ln2.hook_normalized"] if ln else [])
            points += ["mlp.hook_pre", "mlp.hook_post", "hook_mlp_out"]
        return standard(points + ["hook_resid_post"], BLOCK_POINTS)

    # ---------------------------------------------------------------------------- params
    @functools.cached_property
    def dims(self) -> dict[str, int]:
        """Size of every logical axis (see :mod:`jinterp.names`).

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
            attn |= {"b_Q": ("layer", "n_heads", "d_head"),
                     "b_K": ("layer", "n_kv_heads", "d_head"),
                     "b_V": ("layer", "n_kv_heads", "d_head"), "b_O": ("layer", "d_model")}
        ln = {"w": ("layer", "d_model"), "b": ("layer", "d_model")}
        blocks: dict = {"attn": attn}
        if cfg.normalization is Norm.LAYERNORM:
            blocks["ln1"] = ln
        if not cfg.attn_only:
            blocks["mlp"] = {"W_in": ("layer", "d_model", "d_mlp"),
                             "W_out": ("layer", "d_mlp", "d_model")}
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

    def init(self, key: jax.Array) -> dict:
        """Random parameters: normal(0, init_range) matrices, zero biases, unit norm weights.

        Shapes come from :meth:`param_axes`. Jitted, so building a model costs one compile
        instead of one dispatch per tensor.
        """
        return _jit_init(self, key)

    def _init(self, key: jax.Array) -> dict:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        keys = iter(jax.random.split(key, 16))
        paths = {jax.tree_util.keystr(path, simple=True, separator="."): axes for path, axes
                 in jax.tree_util.tree_flatten_with_path(self.param_axes(), is_leaf=_is_axes)[0]}
        drawn = {name: cfg.init_range * jax.random.normal(next(keys), self._shape(paths[name]))
                 for name in _DRAW_ORDER if name in paths}

        def make(path, axes):
            name = jax.tree_util.keystr(path, simple=True, separator=".")
            leaf = name.rsplit(".", 1)[-1]
            if name in drawn:
                return drawn[name].astype(dtype)
            fill = 1.0 if leaf == "w" else 0.0  # norm weights 1, biases 0
            return jnp.full(self._shape(axes), fill, dtype)

        return jax.tree_util.tree_map_with_path(make, self.param_axes(), is_leaf=_is_axes)

    def _shape(self, axes: tuple[str, ...]) -> tuple[int, ...]:
        return tuple(self.dims[a] for a in axes)

    # ---------------------------------------------------------------------------- forward
    def embed(self, params: dict, tokens: Int[Array, "batch pos"], hook,
              ctx: AttnContext | None = None) -> Float[Array, "batch pos d_model"]:
        """Token plus learned positional embeddings; ``ctx`` gives each row's positions."""
        resid = hook("hook_embed", params["embed"]["W_E"][tokens])  # batch pos d_model
        if self.config.positional is Positional.LEARNED:
            if ctx is None:
                pos = params["pos_embed"]["W_pos"][: tokens.shape[1]]  # pos d_model
                pos = jnp.broadcast_to(pos[None], resid.shape)  # batch pos d_model
            else:  # padded rows or a decode step: each row's own positions
                pos = params["pos_embed"]["W_pos"][ctx.query_positions(tokens.shape[1])]
            resid = resid + hook("hook_pos_embed", pos)
        return resid

    def layer_inputs(self, params: dict) -> dict:
        """Stacked block weights and each layer's attention scale (``1 / sqrt(d_head)``, and
        ``/ (layer + 1)`` with ``scale_attn_by_inverse_layer_idx``)."""
        cfg = self.config
        scale = jnp.full((cfg.n_layers,), 1.0 / math.sqrt(cfg.d_head))  # layer
        if cfg.attn_scale_by_layer:
            scale = scale / (jnp.arange(cfg.n_layers, dtype=jnp.float32) + 1)
        return {"params": params["blocks"], "attn_scale": scale}

    def block(self, resid: Float[Array, "batch pos d_model"], layer_inputs: dict, hook,
              ctx: AttnContext | None = None):
        """One block; with ``ctx.return_kv`` also this call's keys and values (the cache's)."""
        cfg = self.config
        p = layer_inputs["params"]
        n_pos = resid.shape[1]
        mask = self._mask(n_pos, ctx)
        resid_pre = hook("hook_resid_pre", resid)
        attn_in = self._norm(p.get("ln1"), resid_pre, "ln1", hook)
        attn_out = attention(p["attn"], attn_in, hook, scale=layer_inputs["attn_scale"],
                             mask=mask, ctx=ctx)
        attn_out, kv = attn_out if ctx is not None and ctx.return_kv else (attn_out, None)
        attn_out = hook("hook_attn_out", attn_out)
        if cfg.attn_only:
            resid_post = hook("hook_resid_post", resid_pre + attn_out)
        else:
            resid_mid = hook("hook_resid_mid", resid_pre + attn_out)
            mlp_in = self._norm(p.get("ln2"), resid_mid, "ln2", hook)
            mlp_out = hook("hook_mlp_out", mlp(p["mlp"], mlp_in, cfg.activation, hook))
            resid_post = hook("hook_resid_post", resid_mid + mlp_out)
        return resid_post if kv is None else (resid_post, kv)

    def unembed(self, params: dict, resid: Float[Array, "batch pos d_model"],
                hook) -> Float[Array, "batch pos d_vocab"]:
        resid = self._norm(params.get("ln_final"), resid, "ln_final", hook)
        if self.config.tied_embeddings:
            return jnp.einsum("bpd,vd->bpv", resid, params["embed"]["W_E"])  # batch pos d_vocab
        logits = resid @ params["unembed"]["W_U"]  # batch pos d_vocab
        b_U = params["unembed"].get("b_U")
        return logits if b_U is None else logits + b_U[None, None]

    # ---------------------------------------------------------------------------- reading
    # What jinterp's readers (jinterp.readout, jinterp.weights, cache decompositions) need to
    # know about the port without importing it; documented in docs/reading.md.
    norm_offset = False  # the norm scale is w itself (Gemma's is 1 + w)
    final_softcap = None  # no soft-cap on the logits

    @property
    def normalization(self) -> str | None:
        """What ln1 / ln2 / ln_final compute: ``"layernorm"``, or None for no norms."""
        return "layernorm" if self.config.normalization is Norm.LAYERNORM else None

    def unembed_weights(self, params: dict) -> tuple[Array, Array | None]:
        """``(W_U [d_model, d_vocab], b_U [d_vocab] or None)``; tied models read ``W_E.T``."""
        if self.config.tied_embeddings:
            return params["embed"]["W_E"].T, None
        return params["unembed"]["W_U"], params["unembed"].get("b_U")

    def final_norm(self, params: dict, resid: Float[Array, "batch pos d_model"]
                   ) -> Float[Array, "batch pos d_model"]:
        """``ln_final`` with its weight and bias (the identity without norms)."""
        return self._norm(params.get("ln_final"), resid, "ln_final", lambda _, x: x)

    def untied(self, bias: bool = False) -> GPT2:
        """This model with its own ``unembed.W_U`` (and ``unembed.b_U`` with ``bias``).

        Weight processing needs it: centring ``W_E`` or folding ``ln_final`` into the
        unembedding breaks the tie.
        """
        config = dataclasses.replace(self.config, tied_embeddings=False,
                                     unembed_bias=bias or self.config.unembed_bias)
        return dataclasses.replace(self, config=config)

    @property
    def causal(self) -> bool:
        return self.config.causal

    def _mask(self, n_pos: int, ctx: AttnContext | None):
        """Where each query may attend: causal (and the context's padding), or, for a
        non-causal model, every real key and the query itself."""
        if self.config.causal:
            return causal_mask(n_pos, n_pos) if ctx is None else ctx.mask(n_pos, NO_WINDOW)
        if ctx is None:
            return jnp.ones((n_pos, n_pos), dtype=bool)  # q_pos k_pos
        if ctx.kv is not None:
            raise ValueError("A non-causal model (causal=False) cannot decode with a KV cache: "
                             "earlier positions would need to see the new tokens. Run the "
                             "whole sequence at once instead.")
        valid = lax.dynamic_slice_in_dim(ctx.valid, ctx.offset, n_pos, axis=1)  # batch k_pos
        own = jnp.eye(n_pos, dtype=bool)[None]  # 1 q_pos k_pos
        return valid[:, None, :] | own  # batch q_pos k_pos

    def _norm(self, p: dict | None, x: Float[Array, "batch pos d_model"], name: str, hook):
        if self.config.normalization is Norm.NONE:
            return x
        return layer_norm(x, p["w"], p["b"], self.config.ln_eps, name, hook)


#: The order random matrices are drawn in (kept so seeds give the same models as before).
_DRAW_ORDER = ("blocks.attn.W_Q", "blocks.attn.W_K", "blocks.attn.W_V", "blocks.attn.W_O",
               "blocks.mlp.W_in", "blocks.mlp.W_out", "embed.W_E", "pos_embed.W_pos",
               "unembed.W_U")


def _is_axes(x) -> bool:
    return isinstance(x, tuple)


_jit_init = jax.jit(lambda model, key: model._init(key), static_argnums=0)
