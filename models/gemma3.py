"""Gemma 3 text (HF ``model_type`` ``gemma3_text``, and the text tower of ``gemma3``).

Deltas from Gemma 2: RMSNorm on every query and key head before RoPE (hooks ``attn.q_norm.*`` /
``attn.k_norm.*``); five local (sliding-window) layers to one global (``layer_types`` from the
config when present, else ``sliding_window_pattern``); local layers use their own RoPE base
(``rope_local_base_freq``, 10k) while global layers use ``rope_theta`` (1M) with the config's
scaling (``linear``, factor 8, for 4B and up); no attention soft-cap. HF's Gemma 3 attention
ignores ``attn_logit_softcapping`` whatever its value, and so does this port.

Multimodal ``gemma3`` checkpoints (4B, 12B, 27B) load as their text model: the vision tower and
projector tensors are skipped, the language model's tensors are used, and, as in HF's
``Gemma3ForConditionalGeneration``, no final-logit soft-cap is applied (released configs have none).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jinterp.models.gemma import gemma_activation
from jinterp.models.gemma2 import alternating, sliding_from_hf
from jinterp.models.layers import Activation
from jinterp.models.llamalike import DecoderShape, LlamaLike, LlamaLikeConfig
from jinterp.models.llamalike_hf import check_causal, params_from_hf, shape_from_hf
from jinterp.models.rope import Rope, RopeType

#: Released text shapes: (n_layers, d_model, n_heads, n_kv_heads, d_head, d_mlp, d_vocab, n_ctx,
#: sliding_window, global rope, query_pre_attn_scalar).
_PRESETS = {
    "gemma-3-1b": (26, 1152, 4, 1, 256, 6912, 262144, 32768, 512, Rope(1_000_000.0), 256),
    "gemma-3-4b": (34, 2560, 8, 4, 256, 10240, 262208, 131072, 1024,
                   Rope(1_000_000.0, type=RopeType.LINEAR, factor=8.0), 256),
    # 27B is the size whose query_pre_attn_scalar (168 = d_model / n_heads) is not d_head.
    "gemma-3-27b": (62, 5376, 32, 16, 128, 21504, 262208, 131072, 1024,
                    Rope(1_000_000.0, type=RopeType.LINEAR, factor=8.0), 168),
}

#: HF ``Gemma3TextConfig`` defaults, for fields a multimodal checkpoint's ``text_config`` omits.
HF_TEXT_DEFAULTS = dict(
    vocab_size=262_208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
    num_attention_heads=8, num_key_value_heads=4, head_dim=256,
    hidden_activation="gelu_pytorch_tanh", max_position_embeddings=131_072, rms_norm_eps=1e-6,
    query_pre_attn_scalar=256, sliding_window=4096, final_logit_softcapping=None,
    attention_bias=False, initializer_range=0.02)


@dataclasses.dataclass(frozen=True)
class Gemma3Config(DecoderShape):
    """A Gemma 3 text model (sizes from :class:`DecoderShape`).

    Attributes:
        rope: RoPE of global layers (base 1M, optionally scaled).
        rope_local: RoPE of local layers (base 10k, never scaled in released models).
        local_layers: per layer, whether it is a sliding-window layer; None = 5 local : 1 global.
    """

    n_ctx: int | None = 131072
    rope: Rope = Rope(1_000_000.0)
    rope_local: Rope = Rope(10_000.0)
    query_pre_attn_scalar: float = 256
    final_softcap: float | None = None
    sliding_window: int | None = 4096
    local_layers: tuple[bool, ...] | None = None
    rms_eps: float = 1e-6
    activation: Activation | str = Activation.GELU_TANH
    attn_bias: bool = False
    init_range: float = 0.02
    dtype: str = "float32"

    def __post_init__(self):
        if self.local_layers is None:
            object.__setattr__(self, "local_layers", alternating(self.n_layers, 6))
        object.__setattr__(self, "local_layers", tuple(self.local_layers))
        self.to_core()  # validates

    def to_core(self) -> LlamaLikeConfig:
        return LlamaLikeConfig(
            **self.shape(), n_ctx=self.n_ctx, rope=self.rope, rope_local=self.rope_local,
            local_layers=self.local_layers, sliding_window=self.sliding_window,
            activation=self.activation, rms_eps=self.rms_eps, norm_offset=True, embed_scale=True,
            post_norms=True, qk_norm=True, query_pre_attn_scalar=self.query_pre_attn_scalar,
            final_softcap=self.final_softcap, tied_embeddings=True, attn_bias=self.attn_bias,
            init_range=self.init_range, dtype=self.dtype)

    @classmethod
    def preset(cls, name: str, **overrides) -> "Gemma3Config":
        """``gemma-3-1b``, ``gemma-3-4b`` or ``gemma-3-27b`` (its text model); ``overrides``
        replace fields."""
        if name not in _PRESETS:
            raise ValueError(f"Unknown Gemma 3 preset {name!r}; choose from {sorted(_PRESETS)}.")
        L, D, H, K, Dh, M, V, n_ctx, window, rope, qpas = _PRESETS[name]
        fields = dict(n_layers=L, d_model=D, n_heads=H, n_kv_heads=K, d_head=Dh, d_mlp=M,
                      d_vocab=V, n_ctx=n_ctx, sliding_window=window, rope=rope,
                      query_pre_attn_scalar=qpas)
        return cls(**(fields | overrides))

    @classmethod
    def from_hf(cls, hf: dict) -> "Gemma3Config":
        """From an HF ``gemma3_text`` config dict, or a ``gemma3`` one (its ``text_config``)."""
        multimodal = hf.get("model_type") == "gemma3"
        if multimodal:  # HF's Gemma3ForConditionalGeneration never applies the final soft-cap
            hf = (hf.get("text_config") or {}) | {"final_logit_softcapping": None}
        hf = HF_TEXT_DEFAULTS | hf
        check_causal(hf)
        rope, rope_local = _ropes_from_hf(hf)
        return cls(**shape_from_hf(hf), n_ctx=hf.get("max_position_embeddings"), rope=rope,
                   rope_local=rope_local, query_pre_attn_scalar=hf["query_pre_attn_scalar"],
                   final_softcap=hf["final_logit_softcapping"],
                   **sliding_from_hf(hf, 6), rms_eps=hf["rms_norm_eps"],
                   activation=gemma_activation(hf, "hidden_activation"),
                   attn_bias=hf["attention_bias"], init_range=hf["initializer_range"])


def _ropes_from_hf(hf: dict) -> tuple[Rope, Rope]:
    """(global, local) RoPE from transformers 5's nested ``rope_parameters`` or 4.x's flat ones."""
    n_pos = hf["max_position_embeddings"]
    nested = hf.get("rope_parameters")
    if isinstance(nested, dict) and ("full_attention" in nested or "sliding_attention" in nested):
        return (Rope.from_hf(nested.get("full_attention"), 1_000_000.0, n_pos),
                Rope.from_hf(nested.get("sliding_attention"), 10_000.0, n_pos))
    global_rope = Rope.from_hf(hf.get("rope_scaling") or nested,
                               hf.get("rope_theta") or 1_000_000.0, n_pos)
    return global_rope, Rope(float(hf.get("rope_local_base_freq") or 10_000.0))


@dataclasses.dataclass(frozen=True)
class Gemma3(LlamaLike):
    """The Gemma 3 text port: ``Gemma3(Gemma3Config.preset("gemma-3-1b"))``."""

    config: Gemma3Config


_VISION_PREFIXES = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.",
                    "model.multi_modal_projector.")
_TEXT_PREFIXES = ("model.language_model.", "language_model.model.", "language_model.", "model.")


def multimodal_params_from_hf(model: Gemma3, tensors: dict[str, np.ndarray], dtype=None) -> dict:
    """The text model's params from a multimodal ``gemma3`` checkpoint (vision tensors skipped)."""
    text = {k: v for k, v in tensors.items() if not k.startswith(_VISION_PREFIXES)}
    return params_from_hf(model.core, text, dtype, strip_prefixes=_TEXT_PREFIXES)
