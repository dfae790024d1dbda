"""Gemma 2 (HF ``model_type`` ``gemma2``): presets, config translation.

Deltas from Gemma 1: RMSNorms before *and after* attention and the MLP (the after-norms are
``ln1_post`` / ``ln2_post``, TransformerLens's names); attention scores divided by
``sqrt(query_pre_attn_scalar)`` instead of ``sqrt(d_head)``; ``cap * tanh(x / cap)`` soft-capping of
attention scores (before the mask) and of the final logits; sliding-window attention on
alternating layers (layer 0 local, layer 1 global, ...; HF's ``layer_types`` when the config has
them). Gemma Scope SAEs are trained on this family.
"""

from __future__ import annotations

import dataclasses

from jinterp.models.gemma import gemma_activation
from jinterp.models.layers import Activation
from jinterp.models.llamalike import DecoderShape, LlamaLike, LlamaLikeConfig
from jinterp.models.llamalike_hf import check_causal, rope_from_hf, shape_from_hf
from jinterp.models.rope import Rope

#: Released shapes: (n_layers, d_model, n_heads, n_kv_heads, d_head, d_mlp, query_pre_attn_scalar).
_PRESETS = {
    "gemma-2-2b": (26, 2304, 8, 4, 256, 9216, 256),
    "gemma-2-9b": (42, 3584, 16, 8, 256, 14336, 256),
    "gemma-2-27b": (46, 4608, 32, 16, 128, 36864, 144),
}

LAYER_TYPES = {"sliding_attention": True, "full_attention": False}


def local_layers_from_hf(hf: dict, default_period: int) -> tuple[bool, ...]:
    """Which layers are sliding-window, from HF ``layer_types`` or the periodic default.

    With ``period`` p, layer ``i`` is global when ``(i + 1) % p == 0`` (Gemma 2: p = 2, so layer 0
    is local; Gemma 3: p = 6, five local layers then one global).
    """
    n_layers = hf["num_hidden_layers"]
    types = hf.get("layer_types")
    if types is None:
        return alternating(n_layers, hf.get("sliding_window_pattern") or default_period)
    unknown = sorted(set(types) - set(LAYER_TYPES))
    if unknown:
        raise ValueError(f"Unsupported layer_types {unknown}; the port knows "
                         f"{sorted(LAYER_TYPES)}.")
    if len(types) != n_layers:
        raise ValueError(f"layer_types has {len(types)} entries for num_hidden_layers={n_layers}.")
    return tuple(LAYER_TYPES[t] for t in types)


def sliding_from_hf(hf: dict, default_period: int) -> dict:
    """``sliding_window`` and ``local_layers`` from an HF config (no window: every layer global)."""
    window = hf.get("sliding_window")
    if window is None:
        return dict(sliding_window=None, local_layers=(False,) * hf["num_hidden_layers"])
    return dict(sliding_window=window, local_layers=local_layers_from_hf(hf, default_period))


def alternating(n_layers: int, period: int) -> tuple[bool, ...]:
    """The periodic local/global pattern: layer ``i`` is global iff ``(i + 1) % period == 0``."""
    return tuple(bool((i + 1) % period) for i in range(n_layers))


@dataclasses.dataclass(frozen=True)
class Gemma2Config(DecoderShape):
    """A Gemma 2 model (sizes from :class:`DecoderShape`).

    Attributes:
        local_layers: per layer, whether it is a sliding-window layer; None = alternating,
            starting local.
        attn_softcap / final_softcap: soft-caps on scores / logits (50 / 30 released); None = off.
    """

    n_ctx: int | None = 8192
    rope: Rope = Rope()
    query_pre_attn_scalar: float = 256
    attn_softcap: float | None = 50.0
    final_softcap: float | None = 30.0
    sliding_window: int | None = 4096
    local_layers: tuple[bool, ...] | None = None
    rms_eps: float = 1e-6
    activation: Activation | str = Activation.GELU_TANH
    attn_bias: bool = False
    init_range: float = 0.02
    dtype: str = "float32"

    def __post_init__(self):
        if self.local_layers is None:
            object.__setattr__(self, "local_layers", alternating(self.n_layers, 2))
        object.__setattr__(self, "local_layers", tuple(self.local_layers))
        self.to_core()  # validates

    def to_core(self) -> LlamaLikeConfig:
        return LlamaLikeConfig(
            **self.shape(), n_ctx=self.n_ctx, rope=self.rope, local_layers=self.local_layers,
            sliding_window=self.sliding_window, activation=self.activation, rms_eps=self.rms_eps,
            norm_offset=True, embed_scale=True, post_norms=True,
            query_pre_attn_scalar=self.query_pre_attn_scalar, attn_softcap=self.attn_softcap,
            final_softcap=self.final_softcap, tied_embeddings=True, attn_bias=self.attn_bias,
            init_range=self.init_range, dtype=self.dtype)

    @classmethod
    def preset(cls, name: str, **overrides) -> "Gemma2Config":
        """``gemma-2-2b``, ``gemma-2-9b`` or ``gemma-2-27b``; ``overrides`` replace fields."""
        if name not in _PRESETS:
            raise ValueError(f"Unknown Gemma 2 preset {name!r}; choose from {sorted(_PRESETS)}.")
        L, D, H, K, Dh, M, qpas = _PRESETS[name]
        fields = dict(n_layers=L, d_model=D, n_heads=H, n_kv_heads=K, d_head=Dh, d_mlp=M,
                      d_vocab=256000, query_pre_attn_scalar=qpas)
        return cls(**(fields | overrides))

    @classmethod
    def from_hf(cls, hf: dict) -> "Gemma2Config":
        """From an HF ``config.json`` dict (transformers 4.x or 5 spelling)."""
        check_causal(hf)
        return cls(**shape_from_hf(hf), n_ctx=hf.get("max_position_embeddings"),
                   rope=rope_from_hf(hf),
                   query_pre_attn_scalar=hf.get("query_pre_attn_scalar", 256),
                   attn_softcap=hf.get("attn_logit_softcapping"),
                   final_softcap=hf.get("final_logit_softcapping"),
                   **sliding_from_hf(hf, 2),
                   rms_eps=hf.get("rms_norm_eps", 1e-6),
                   activation=gemma_activation(hf, "hidden_activation"),
                   attn_bias=hf.get("attention_bias", False),
                   init_range=hf.get("initializer_range", 0.02))


@dataclasses.dataclass(frozen=True)
class Gemma2(LlamaLike):
    """The Gemma 2 port: ``Gemma2(Gemma2Config.preset("gemma-2-2b"))``."""

    config: Gemma2Config
