"""Llama 2 / Llama 3 (HF ``model_type`` ``llama``): presets, config translation, registration.

Llama is the plain member of the family: Llama RMSNorm (``w * normalised``), RoPE (optionally with
Llama 3.1's ``llama3`` scaling or ``linear`` scaling), SwiGLU, grouped-query attention, an untied
unembedding (tied for Llama 3.2 1B/3B) and optional attention / MLP biases. The forward is the
shared :class:`jinterp.models.llamalike.LlamaLike`.
"""

from __future__ import annotations

import dataclasses

from jinterp.models.layers import Activation
from jinterp.models.llamalike import DecoderShape, LlamaLike, LlamaLikeConfig
from jinterp.models.llamalike_hf import check_causal, rope_from_hf, shape_from_hf
from jinterp.models.rope import Rope, RopeType

_LLAMA31_ROPE = dict(type=RopeType.LLAMA3, low_freq_factor=1.0, high_freq_factor=4.0,
                     original_max_position_embeddings=8192)

#: Released shapes: (n_layers, d_model, n_heads, n_kv_heads, d_head, d_mlp, d_vocab, n_ctx, rope,
#: tied).
_PRESETS = {
    "llama-2-7b": (32, 4096, 32, 32, 128, 11008, 32000, 4096, Rope(10_000.0), False),
    "llama-2-13b": (40, 5120, 40, 40, 128, 13824, 32000, 4096, Rope(10_000.0), False),
    "llama-3-8b": (32, 4096, 32, 8, 128, 14336, 128256, 8192, Rope(500_000.0), False),
    "llama-3-70b": (80, 8192, 64, 8, 128, 28672, 128256, 8192, Rope(500_000.0), False),
    "llama-3.1-8b": (32, 4096, 32, 8, 128, 14336, 128256, 131072,
                     Rope(500_000.0, factor=8.0, **_LLAMA31_ROPE), False),
    "llama-3.2-1b": (16, 2048, 32, 8, 64, 8192, 128256, 131072,
                     Rope(500_000.0, factor=32.0, **_LLAMA31_ROPE), True),
    "llama-3.2-3b": (28, 3072, 24, 8, 128, 8192, 128256, 131072,
                     Rope(500_000.0, factor=32.0, **_LLAMA31_ROPE), True),
}


@dataclasses.dataclass(frozen=True)
class LlamaConfig(DecoderShape):
    """A Llama-family model (sizes from :class:`DecoderShape`).

    Attributes:
        n_ctx: longest accepted sequence (HF ``max_position_embeddings``); None for no limit.
        rope: base and scaling (``Rope(500_000.0, type="llama3", factor=8.0, ...)`` for Llama 3.1).
        rms_eps: RMSNorm epsilon (1e-5 for the released Llama 2/3 checkpoints).
        attn_bias / mlp_bias: biases on q/k/v/o and gate/up/down projections.
    """

    n_ctx: int | None = 4096
    rope: Rope = Rope()
    rms_eps: float = 1e-5
    tied_embeddings: bool = False
    attn_bias: bool = False
    mlp_bias: bool = False
    activation: Activation | str = Activation.SILU
    init_range: float = 0.02
    dtype: str = "float32"

    def __post_init__(self):
        self.to_core()  # validates

    def to_core(self) -> LlamaLikeConfig:
        return LlamaLikeConfig(
            **self.shape(), n_ctx=self.n_ctx, rope=self.rope, activation=self.activation,
            rms_eps=self.rms_eps, tied_embeddings=self.tied_embeddings, attn_bias=self.attn_bias,
            mlp_bias=self.mlp_bias, init_range=self.init_range, dtype=self.dtype)

    @classmethod
    def preset(cls, name: str, **overrides) -> "LlamaConfig":
        """A released shape: ``llama-2-7b``, ``llama-2-13b``, ``llama-3-8b``, ``llama-3-70b``,
        ``llama-3.1-8b``, ``llama-3.2-1b`` or ``llama-3.2-3b``; ``overrides`` replace fields
        (e.g. ``n_layers=2``)."""
        if name not in _PRESETS:
            raise ValueError(f"Unknown Llama preset {name!r}; choose from {sorted(_PRESETS)}.")
        L, D, H, K, Dh, M, V, n_ctx, rope, tied = _PRESETS[name]
        fields = dict(n_layers=L, d_model=D, n_heads=H, n_kv_heads=K, d_head=Dh, d_mlp=M, d_vocab=V,
                      n_ctx=n_ctx, rope=rope, tied_embeddings=tied)
        return cls(**(fields | overrides))

    @classmethod
    def from_hf(cls, hf: dict) -> "LlamaConfig":
        """From an HF ``config.json`` dict (transformers 4.x or 5 spelling)."""
        check_causal(hf)
        return cls(**shape_from_hf(hf), n_ctx=hf.get("max_position_embeddings"),
                   rope=rope_from_hf(hf), rms_eps=hf.get("rms_norm_eps", 1e-6),
                   tied_embeddings=hf.get("tie_word_embeddings", False),
                   attn_bias=hf.get("attention_bias", False), mlp_bias=hf.get("mlp_bias", False),
                   activation=Activation.from_hf(hf.get("hidden_act", "silu")),
                   init_range=hf.get("initializer_range", 0.02))


@dataclasses.dataclass(frozen=True)
class Llama(LlamaLike):
    """Llama port: ``Llama(LlamaConfig.preset("llama-3.2-1b"))``; use via ``jinterp.run_with_*``."""

    config: LlamaConfig
