"""Configuration and per-step context for sparse autoencoders (SAEs).

Axis vocabulary (shared with the rest of jinterp): ``batch`` is any flattened set of tokens,
``d_in`` the width of the encoded activation, ``d_out`` / ``d_target`` the width of the
reconstructed activation (equal to ``d_in`` for an SAE, different for a transcoder), ``d_sae``
the number of latents (dictionary size), ``k`` the number of active latents of the top-k
family and ``n_experts`` the number of Switch-SAE experts.

`SAEConfig` is frozen and hashable so it can be a static argument of ``jax.jit``; every
architecture-specific default (which encoder subtracts ``b_dec``, how large the decoder rows
start, how many AuxK latents) is derived from it by a property, never stored as a sentinel.
`LossContext` carries the few per-step *array* inputs of a training loss (penalty warm-up,
dead-latent mask), so a training step can pass them through ``jit``/``vmap`` as data.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

_T = TypeVar("_T")


def pytree_dataclass(cls: type[_T]) -> type[_T]:
    """A frozen dataclass registered as a pytree whose *unflatten* does not run ``__init__``.

    Constructing one in code checks its field annotations (jaxtyping under pytest), but JAX
    also rebuilds pytrees with leaves that are not arrays of the annotated per-instance
    shape: shardings (``state_shardings``), ``ShapeDtypeStruct`` (``jax.eval_shape``, orbax
    restore templates), a sweep's stacked ``[instance, ...]`` arrays, ``None``. Rebuilding is
    not construction, so, as equinox modules do, it bypasses ``__init__``. ``replace`` is
    ``dataclasses.replace`` (and so checked).
    """
    cls = dataclasses.dataclass(frozen=True)(cls)
    names = tuple(f.name for f in dataclasses.fields(cls))

    def flatten_with_keys(obj: Any):
        return [(jax.tree_util.GetAttrKey(n), getattr(obj, n)) for n in names], None

    def unflatten(_: None, children: Any) -> Any:
        obj = object.__new__(cls)
        for name, child in zip(names, children):
            object.__setattr__(obj, name, child)
        return obj

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten)
    cls.replace = lambda self, **changes: dataclasses.replace(self, **changes)
    return cls


class Architecture(enum.StrEnum):
    """The SAE architectures jinterp implements (a `str`, so ``cfg.architecture == "topk"``)."""

    RELU = "relu"  # Anthropic April 2024 update: ReLU + L1 weighted by decoder norms.
    TOPK = "topk"  # Gao et al. 2024: per-token top-k + AuxK.
    BATCHTOPK = "batchtopk"  # Bussmann et al. 2024: top k*batch over the batch.
    JUMPRELU = "jumprelu"  # Rajamanoharan et al. 2024b: JumpReLU + L0 with STE.
    GATED = "gated"  # Rajamanoharan et al. 2024a: gate / magnitude paths.
    MATRYOSHKA = "matryoshka"  # Bussmann et al. 2025 / Nabeshima 2024: nested prefixes.
    SWITCH = "switch"  # Mudide et al. 2024: router over expert sub-dictionaries.


ARCHITECTURE_NAMES: tuple[str, ...] = tuple(a.value for a in Architecture)

# Architectures whose latents are chosen by a top-k (they need `k`).
TOPK_FAMILY = frozenset({Architecture.TOPK, Architecture.BATCHTOPK, Architecture.MATRYOSHKA,
                         Architecture.SWITCH})
# Architectures trained with unit-norm decoder rows (renormalised after every update, gradient
# component parallel to each row removed before it). ReLU is the exception: Anthropic's recipe
# puts the decoder norm inside the L1 penalty instead.
UNIT_NORM_DECODER = frozenset(set(Architecture) - {Architecture.RELU})
# Architectures that use the AuxK dead-latent loss of Gao et al.
AUXK_FAMILY = frozenset({Architecture.TOPK, Architecture.BATCHTOPK, Architecture.MATRYOSHKA})


@dataclasses.dataclass(frozen=True)
class SAEConfig:
    """Hyper-parameters of one SAE (or transcoder).

    Attributes:
        architecture: One of ``ARCHITECTURE_NAMES``; a plain string is converted to
            `Architecture`.
        d_in: Width of the encoded activation.
        d_sae: Number of latents.
        d_out: Width of the reconstructed activation for a transcoder; None for an SAE
            (reconstruct the input itself).
        k: Active latents per token for topk / batchtopk (mean) / matryoshka / switch.
        l1_coefficient: L1 weight (relu: times decoder-row norms; gated: on ReLU(pi_gate)).
            Anthropic uses 5 with inputs scaled to E||x||^2 = d_in.
        l0_coefficient: L0 weight of JumpReLU (depends on the input normalisation).
        jumprelu_bandwidth: Width eps of the rectangle kernel of the JumpReLU STE.
        jumprelu_init_threshold: Initial JumpReLU threshold theta (all latents).
        jumprelu_tanh_scale: None = the paper's L0 penalty; c > 0 = Anthropic's January 2025
            sparsity penalty ``sum_i tanh(c * f_i * ||W_dec,i||)`` (SAELens
            ``jumprelu_sparsity_loss_mode='tanh'``, c = 4 there), a smooth L0 whose gradient
            also reaches the encoder of active latents. ``l0_coefficient`` weighs it.
        jumprelu_ste_to_input: False = DeepMind's JumpReLU (the straight-through gradient
            reaches only the threshold); True = Anthropic's (January 2025): it also reaches the
            pre-activations, and so the encoder, so a latent just below its threshold learns
            to fire where firing would lower the loss (SAELens ``jumprelu_ste_to_input``).
        jumprelu_target_l0: None = the paper's linear L0 penalty; a number T = Gemma Scope 2's
            quadratic penalty ``(2 / T) (||f||_0 - T)^2`` per token (SAELens
            ``jumprelu_sparsity_loss_mode='quadratic'``), which also lowers thresholds when
            the SAE is sparser than T instead of always pushing them up.
        pre_act_loss_coefficient: Weight lambda_P of the pre-activation loss on dead latents
            of JumpReLU and Gated SAEs, ``lambda_P sum_{i dead} ReLU(theta_i - pi_i)``
            (Anthropic's January 2025 update; SAELens ``pre_act_loss_coefficient``, also
            restricted to dead latents). Their gates have no gradient once a latent never
            opens, so an L0 / L1 penalty kills latents for good; this term pulls a dead
            latent's pre-activation back up to its threshold. 0 = the papers' recipes.
        aux_k: Latents used by the AuxK loss; None = Gao's 512 capped at d_sae // 2.
        aux_k_coefficient: Weight alpha of the AuxK loss (Gao: 1/32).
        dead_after_tokens: A latent that has not fired for this many training tokens is
            "dead" (Gao, Anthropic: 10M). The trainer turns this into a step count.
        batchtopk_threshold_momentum: EMA rate of the BatchTopK inference threshold.
        matryoshka_prefixes: Strictly increasing nested widths; ``d_sae`` is appended when
            missing. None = (d_sae/16, d_sae/8, d_sae/4, d_sae/2, d_sae) (dropping zeros).
        n_experts: Number of Switch-SAE experts (``d_sae`` must divide evenly).
        switch_load_balance_coefficient: Weight of the Switch load-balancing loss.
        switch_capacity_factor: None = exact Switch training (every expert's pre-activations
            computed, dense cost); c > 0 = dispatch tokens to experts with capacity
            ceil(c * batch / n_experts) each (cost c / n_experts of dense, overflow dropped).
        apply_b_dec_to_input: Encode ``x - b_dec`` (Gao's b_pre, Gated) instead of ``x``
            (Anthropic, Gemma Scope). None = the architecture's paper default; must be False
            for transcoders (b_dec lives in the output space).
        init_decoder_norm: Norm of the decoder rows at init; None = 0.1 for relu
            (Anthropic), 1.0 for unit-norm architectures.
        dtype: Parameter dtype name, e.g. "float32" or "bfloat16".
        skip_connection: A transcoder with a learned linear skip path: ``x_hat = f W_dec +
            b_dec + x W_skip^T`` with ``W_skip [d_out, d_in]`` starting at zero (SAELens's
            ``SkipTranscoder``, Paulo et al. 2025 "Transcoders beat sparse autoencoders for
            interpretability"). Needs ``d_out``.
        n_blocks: A crosscoder over this many activations (layers or models) read together:
            ``d_in`` is ``n_blocks`` concatenated blocks of ``d_block = d_in / n_blocks``
            columns, the encoders of the blocks sum (one matmul on the concatenation), each
            block has its own decoder, and the relu penalty weighs latent ``i`` by
            ``sum_b ||W_dec[i, block b]||`` (Lindsey et al. 2024, "Sparse crosscoders").
            1 = an SAE or transcoder.
    """

    architecture: Architecture | str
    d_in: int
    d_sae: int
    d_out: int | None = None
    k: int | None = None
    l1_coefficient: float = 5.0
    l0_coefficient: float = 1.0
    jumprelu_bandwidth: float = 0.001
    jumprelu_init_threshold: float = 0.001
    jumprelu_tanh_scale: float | None = None
    jumprelu_ste_to_input: bool = False
    jumprelu_target_l0: float | None = None
    pre_act_loss_coefficient: float = 0.0
    aux_k: int | None = None
    aux_k_coefficient: float = 1.0 / 32.0
    dead_after_tokens: int = 10_000_000
    batchtopk_threshold_momentum: float = 0.01
    matryoshka_prefixes: tuple[int, ...] | None = None
    n_experts: int | None = None
    switch_load_balance_coefficient: float = 3.0
    switch_capacity_factor: float | None = None
    apply_b_dec_to_input: bool | None = None
    init_decoder_norm: float | None = None
    dtype: str = "float32"
    skip_connection: bool = False
    n_blocks: int = 1

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURE_NAMES:
            raise ValueError(f"Unknown SAE architecture {self.architecture!r}; valid names are "
                             f"{', '.join(ARCHITECTURE_NAMES)}.")
        object.__setattr__(self, "architecture", Architecture(self.architecture))
        for name in ("d_in", "d_sae"):
            _check_positive_int(name, getattr(self, name))
        if self.d_out is not None:
            _check_positive_int("d_out", self.d_out)
        self._check_k()
        self._check_matryoshka()
        self._check_switch()
        self._check_transcoder_crosscoder()
        if self.apply_b_dec_to_input and self.d_out is not None:
            raise ValueError("apply_b_dec_to_input=True is impossible for a transcoder (d_out "
                             "set): b_dec lives in the d_out space. Leave it None or set it "
                             "False.")
        if self.aux_k is not None:
            _check_positive_int("aux_k", self.aux_k)
        if self.jumprelu_bandwidth <= 0 or self.jumprelu_init_threshold <= 0:
            raise ValueError("jumprelu_bandwidth and jumprelu_init_threshold must be > 0, got "
                             f"{self.jumprelu_bandwidth} and {self.jumprelu_init_threshold}.")
        if self.jumprelu_tanh_scale is not None and (self.jumprelu_tanh_scale <= 0 or
                                                     self.architecture != Architecture.JUMPRELU):
            raise ValueError("jumprelu_tanh_scale must be > 0 and is only used by 'jumprelu'; got "
                             f"{self.jumprelu_tanh_scale} for {self.architecture.value!r}.")
        if self.jumprelu_target_l0 is not None and (
                not self.jumprelu_target_l0 > 0 or self.jumprelu_tanh_scale is not None
                or self.architecture != Architecture.JUMPRELU):
            raise ValueError("jumprelu_target_l0 must be > 0, is only used by 'jumprelu', and "
                             "excludes jumprelu_tanh_scale (pick one sparsity penalty); got "
                             f"{self.jumprelu_target_l0} for {self.architecture.value!r} with "
                             f"jumprelu_tanh_scale={self.jumprelu_tanh_scale}.")
        if self.jumprelu_ste_to_input and self.architecture != Architecture.JUMPRELU:
            raise ValueError("jumprelu_ste_to_input is only used by 'jumprelu', got "
                             f"{self.architecture.value!r}.")
        if self.pre_act_loss_coefficient < 0:
            raise ValueError(f"pre_act_loss_coefficient must be >= 0, got "
                             f"{self.pre_act_loss_coefficient}.")
        if self.pre_act_loss_coefficient and self.architecture not in (Architecture.JUMPRELU,
                                                                       Architecture.GATED):
            raise ValueError("pre_act_loss_coefficient is only used by 'jumprelu' and 'gated' "
                             f"(got architecture {self.architecture.value!r}); the top-k family "
                             "revives dead latents with AuxK instead.")
        if not 0.0 < self.batchtopk_threshold_momentum <= 1.0:
            raise ValueError("batchtopk_threshold_momentum must be in (0, 1], got "
                             f"{self.batchtopk_threshold_momentum}.")
        try:
            jnp.dtype(self.dtype)
        except TypeError as err:
            raise ValueError(f"dtype {self.dtype!r} is not a dtype name (use e.g. "
                             "'float32').") from err

    def _check_k(self) -> None:
        if self.architecture in TOPK_FAMILY:
            if self.k is None:
                raise ValueError(f"architecture {self.architecture.value!r} needs k (active "
                                 "latents per token); pass e.g. k=32.")
            _check_positive_int("k", self.k)
            limit = self.d_sae // (self.n_experts or 1)
            if self.k > limit:
                raise ValueError(f"k={self.k} exceeds the {limit} latents it selects from "
                                 f"(d_sae={self.d_sae}, n_experts={self.n_experts}).")
        elif self.k is not None:
            raise ValueError(f"k is only used by {sorted(a.value for a in TOPK_FAMILY)}; "
                             f"architecture {self.architecture.value!r} got k={self.k}. Drop it.")

    def _check_matryoshka(self) -> None:
        if self.matryoshka_prefixes is None:
            return
        if self.architecture != Architecture.MATRYOSHKA:
            raise ValueError("matryoshka_prefixes is only used by architecture 'matryoshka'.")
        widths = tuple(self.matryoshka_prefixes)
        if any(not isinstance(w, int) or w <= 0 for w in widths) or any(
                b <= a for a, b in zip(widths, widths[1:])) or widths[-1] > self.d_sae:
            raise ValueError(f"matryoshka_prefixes must be strictly increasing positive ints <= "
                             f"d_sae={self.d_sae}; got {widths}.")
        object.__setattr__(self, "matryoshka_prefixes", widths)

    def _check_switch(self) -> None:
        if self.architecture == Architecture.SWITCH:
            if self.n_experts is None:
                raise ValueError("architecture 'switch' needs n_experts (e.g. n_experts=8).")
            _check_positive_int("n_experts", self.n_experts)
            if self.d_sae % self.n_experts:
                raise ValueError(f"d_sae={self.d_sae} must be divisible by n_experts="
                                 f"{self.n_experts} (experts own equal contiguous latent blocks).")
            if self.switch_capacity_factor is not None and self.switch_capacity_factor <= 0:
                raise ValueError(f"switch_capacity_factor must be > 0 (or None), got "
                                 f"{self.switch_capacity_factor}.")
        elif self.n_experts is not None or self.switch_capacity_factor is not None:
            raise ValueError("n_experts / switch_capacity_factor are only used by architecture "
                             "'switch'.")

    def _check_transcoder_crosscoder(self) -> None:
        if self.skip_connection and self.d_out is None:
            raise ValueError("skip_connection=True is a transcoder's skip path W_skip [d_out, "
                             "d_in]: set d_out (the target's width) too.")
        _check_positive_int("n_blocks", self.n_blocks)
        if self.n_blocks > 1 and self.d_out is not None:
            raise ValueError(f"n_blocks={self.n_blocks} (a crosscoder) reconstructs its own "
                             f"inputs, so d_out={self.d_out} (a transcoder) cannot be set too.")
        if self.d_in % self.n_blocks:
            raise ValueError(f"d_in={self.d_in} must be n_blocks={self.n_blocks} equal blocks "
                             "(a crosscoder's input is the concatenation of its blocks).")

    # ----- derived values -----
    @property
    def d_target(self) -> int:
        """Width of the reconstruction: d_out for a transcoder, else d_in."""
        return self.d_in if self.d_out is None else self.d_out

    @property
    def is_transcoder(self) -> bool:
        return self.d_out is not None

    @property
    def is_crosscoder(self) -> bool:
        return self.n_blocks > 1

    @property
    def d_block(self) -> int:
        """Width of one block of a crosscoder's input (d_in for an SAE)."""
        return self.d_in // self.n_blocks

    @property
    def subtract_b_dec(self) -> bool:
        """Whether the encoder sees ``x - b_dec`` (the paper default when not set)."""
        if self.apply_b_dec_to_input is not None:
            return self.apply_b_dec_to_input
        if self.is_transcoder:
            return False
        return self.architecture not in (Architecture.RELU, Architecture.JUMPRELU)

    @property
    def unit_norm_decoder(self) -> bool:
        return self.architecture in UNIT_NORM_DECODER

    @property
    def decoder_init_norm(self) -> float:
        if self.init_decoder_norm is not None:
            return self.init_decoder_norm
        return 1.0 if self.unit_norm_decoder else 0.1

    @property
    def aux_k_effective(self) -> int:
        """AuxK latents: `aux_k`, or Gao's 512 capped at half the dictionary."""
        return min(self.aux_k if self.aux_k is not None else 512, max(self.d_sae // 2, 1))

    @property
    def uses_aux_k(self) -> bool:
        return self.architecture in AUXK_FAMILY

    @property
    def matryoshka_widths(self) -> tuple[int, ...]:
        """Nested prefix widths ending with d_sae (only meaningful for matryoshka)."""
        if self.matryoshka_prefixes is None:
            widths = sorted({self.d_sae // d for d in (16, 8, 4, 2) if self.d_sae // d > 0})
        else:
            widths = list(self.matryoshka_prefixes)
        if not widths or widths[-1] != self.d_sae:
            widths.append(self.d_sae)
        return tuple(widths)

    @property
    def expert_size(self) -> int:
        """Latents per Switch expert."""
        return self.d_sae // (self.n_experts or 1)

    @property
    def param_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)


def _check_positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")


@pytree_dataclass
class LossContext:
    """Per-step array inputs of a training loss (a pytree, so it passes through jit / vmap).

    Attributes:
        penalty_scale: Multiplies the sparsity penalty (L1 / L0); the trainer ramps it from 0
            to 1 for the warm-up of Anthropic's and the JumpReLU recipe.
        dead_mask: True for latents considered dead (no activation for `dead_after_tokens`);
            the AuxK loss reconstructs the residual from them. None = no AuxK term.
    """

    penalty_scale: Float[Array, ""] | float = 1.0
    dead_mask: Bool[Array, " d_sae"] | None = None
