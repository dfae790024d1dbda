"""Gemma 1 (HF ``model_type`` ``gemma``): presets, config translation.

Gemma's deltas from Llama: embeddings multiplied by ``sqrt(d_model)`` rounded to the model dtype
(so bfloat16 Gemma 2B uses 45.25, not 45.2548); RMSNorm with scale ``1 + w`` computed in float32;
GeGLU with tanh-approximate GELU (configs that say ``"gelu"`` mean the tanh form, as HF decides);
``d_head`` = 256 independent of ``d_model / n_heads``; multi-query attention in 2B; tied
embeddings.
"""

from __future__ import annotations

import dataclasses

from jinterp.models.layers import Activation
from jinterp.models.llamalike import DecoderShape, LlamaLike, LlamaLikeConfig
from jinterp.models.llamalike_hf import check_causal, rope_from_hf, shape_from_hf
from jinterp.models.rope import Rope

#: Released shapes: (n_layers, d_model, n_heads, n_kv_heads, d_head, d_mlp, d_vocab).
_PRESETS = {
    "gemma-2b": (18, 2048, 8, 1, 256, 16384, 256000),
    "gemma-7b": (28, 3072, 16, 16, 256, 24576, 256000),
}


def gemma_activation(hf: dict, key: str) -> Activation:
    """Gemma's MLP activation; the legacy ``"gelu"`` means the tanh approximation (HF's rule)."""
    return Activation.from_hf(hf.get(key) or "gelu_pytorch_tanh", gelu_means_tanh=True)


@dataclasses.dataclass(frozen=True)
class GemmaConfig(DecoderShape):
    """A Gemma 1 model (sizes from :class:`DecoderShape`)."""

    n_ctx: int | None = 8192
    rope: Rope = Rope()
    rms_eps: float = 1e-6
    activation: Activation | str = Activation.GELU_TANH
    attn_bias: bool = False
    init_range: float = 0.02
    dtype: str = "float32"

    def __post_init__(self):
        self.to_core()  # validates

    def to_core(self) -> LlamaLikeConfig:
        return LlamaLikeConfig(
            **self.shape(), n_ctx=self.n_ctx, rope=self.rope, activation=self.activation,
            rms_eps=self.rms_eps, norm_offset=True, embed_scale=True, tied_embeddings=True,
            attn_bias=self.attn_bias, init_range=self.init_range, dtype=self.dtype)

    @classmethod
    def preset(cls, name: str, **overrides) -> "GemmaConfig":
        """``gemma-2b`` or ``gemma-7b``; ``overrides`` replace fields."""
        if name not in _PRESETS:
            raise ValueError(f"Unknown Gemma preset {name!r}; choose from {sorted(_PRESETS)}.")
        L, D, H, K, Dh, M, V = _PRESETS[name]
        fields = dict(n_layers=L, d_model=D, n_heads=H, n_kv_heads=K, d_head=Dh, d_mlp=M, d_vocab=V)
        return cls(**(fields | overrides))

    @classmethod
    def from_hf(cls, hf: dict) -> "GemmaConfig":
        """From an HF ``config.json`` dict (transformers 4.x or 5 spelling)."""
        check_causal(hf)
        if not hf.get("tie_word_embeddings", True):
            raise ValueError("Gemma ties its unembedding to the embedding; "
                             "tie_word_embeddings=False is not a Gemma checkpoint (use model_type "
                             "'llama' for an untied model).")
        return cls(**shape_from_hf(hf), n_ctx=hf.get("max_position_embeddings"),
                   rope=rope_from_hf(hf), rms_eps=hf.get("rms_norm_eps", 1e-6),
                   activation=gemma_activation(hf, "hidden_act"),
                   attn_bias=hf.get("attention_bias", False),
                   init_range=hf.get("initializer_range", 0.02))


@dataclasses.dataclass(frozen=True)
class Gemma(LlamaLike):
    """The Gemma 1 port: ``Gemma(GemmaConfig.preset("gemma-2b"))``."""

    config: GemmaConfig
