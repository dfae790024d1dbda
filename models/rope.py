"""Rotary position embeddings (RoPE) and the frequency scalings Llama and Gemma checkpoints use.

RoPE (Su et al. 2021, "RoFormer") rotates each pair of query/key features by an angle
``position * inv_freq[i]``, so a query-key dot product depends on relative position only. We use
the "rotate half" pairing of HuggingFace Llama/Gemma (feature ``i`` pairs with ``i + d_head/2``),
not GPT-J's adjacent pairs.

Scalings change only the inverse frequencies, computed once per model on the host in float32:

- ``default``: ``inv_freq[i] = theta ** (-2i / d_head)``.
- ``linear`` (position interpolation, Chen et al. 2023): every frequency divided by ``factor``
  (Gemma 3 global layers).
- ``llama3`` (Llama 3.1 / 3.2): low frequencies (wavelength above
  ``original_max_position_embeddings / low_freq_factor``) divided by ``factor``, high frequencies
  kept, a smooth interpolation between.

The angles and their cos/sin are computed in float32 and cast to the activation dtype before
the rotation, exactly as HF does, so a bfloat16 run rounds where HF rounds.
"""

from __future__ import annotations

import dataclasses
import enum
import math

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int


class RopeType(str, enum.Enum):
    """Frequency scalings understood by the ports (HF's ``rope_type`` strings)."""

    DEFAULT = "default"
    LINEAR = "linear"
    LLAMA3 = "llama3"


_LLAMA3_FIELDS = ("factor", "low_freq_factor", "high_freq_factor",
                  "original_max_position_embeddings")


@dataclasses.dataclass(frozen=True)
class Rope:
    """One RoPE setting: base ``theta`` and an optional frequency scaling.

    Attributes:
        theta: the base wavelength (HF ``rope_theta``).
        type: ``default`` (no scaling), ``linear`` or ``llama3``.
        factor: frequency divisor (``linear`` and ``llama3``; None for ``default``).
        low_freq_factor / high_freq_factor / original_max_position_embeddings: ``llama3`` only.
    """

    theta: float = 10_000.0
    type: RopeType | str = RopeType.DEFAULT
    factor: float | None = None
    low_freq_factor: float | None = None
    high_freq_factor: float | None = None
    original_max_position_embeddings: int | None = None

    def __post_init__(self):
        try:
            object.__setattr__(self, "type", RopeType(self.type))
        except ValueError:
            raise ValueError(
                f"Unsupported RoPE scaling type {self.type!r}; jinterp supports "
                f"{[t.value for t in RopeType]}. Other types (yarn, dynamic, longrope) are not "
                "ported."
            ) from None
        if self.theta <= 0:
            raise ValueError(f"RoPE theta must be positive, got {self.theta}.")
        llama3_set = [f for f in _LLAMA3_FIELDS[1:] if getattr(self, f) is not None]
        if self.type is RopeType.DEFAULT and (self.factor is not None or llama3_set):
            raise ValueError("RoPE type 'default' takes no scaling parameters; set type='linear' "
                             "or 'llama3'.")
        if self.type is not RopeType.DEFAULT and (self.factor is None or self.factor <= 0):
            raise ValueError(f"RoPE type {self.type.value!r} needs a positive `factor`, got "
                             f"{self.factor}.")
        if self.type is RopeType.LINEAR and llama3_set:
            raise ValueError(f"RoPE type 'linear' takes only `factor`; got llama3 fields "
                             f"{llama3_set}.")
        if self.type is RopeType.LLAMA3:
            missing = [f for f in _LLAMA3_FIELDS if getattr(self, f) is None]
            if missing:
                raise ValueError(f"RoPE type 'llama3' needs {list(_LLAMA3_FIELDS)}; missing "
                                 f"{missing}.")
            if self.high_freq_factor <= self.low_freq_factor:
                raise ValueError(f"llama3 RoPE needs high_freq_factor > low_freq_factor, got "
                                 f"{self.high_freq_factor} <= {self.low_freq_factor}.")

    @classmethod
    def from_hf(cls, params: dict | None, theta: float,
                max_position_embeddings: int | None) -> Rope:
        """A :class:`Rope` from HF's ``rope_parameters`` (transformers 5) or ``rope_scaling`` (4.x).

        Args:
            params: the dict (``rope_type`` or the older ``type`` key), or None for no scaling.
            theta: the base to use when ``params`` has no ``rope_theta``.
            max_position_embeddings: llama3's ``original_max_position_embeddings`` default, as HF.
        """
        params = dict(params or {})
        kind = params.pop("rope_type", params.pop("type", "default"))
        theta = params.pop("rope_theta", theta)
        partial = params.pop("partial_rotary_factor", None)
        if partial not in (None, 1.0):
            raise ValueError(f"partial_rotary_factor={partial} (RoPE on part of each head) is not "
                             "supported.")
        if kind == RopeType.LLAMA3.value:
            params.setdefault("original_max_position_embeddings", max_position_embeddings)
        known = {"factor", *_LLAMA3_FIELDS} if kind == RopeType.LLAMA3.value else {"factor"}
        fields = {k: v for k, v in params.items() if k in known}
        return cls(theta=float(theta), type=kind, **fields)

    def to_hf(self) -> dict:
        """HF's ``rope_parameters`` dict for this setting (transformers 5 spelling)."""
        out = {"rope_type": self.type.value, "rope_theta": self.theta}
        for f in _LLAMA3_FIELDS:
            if getattr(self, f) is not None:
                out[f] = getattr(self, f)
        return out

    def inverse_frequencies(self, d_head: int) -> np.ndarray:
        """``inv_freq`` ``[d_head // 2]`` in float32, as HF's rope init functions compute it."""
        if d_head % 2:
            raise ValueError(f"RoPE needs an even head dimension, got d_head={d_head}.")
        exponent = np.arange(0, d_head, 2).astype(np.float32) / np.float32(d_head)
        inv_freq = (np.float32(1.0) / np.power(np.float32(self.theta), exponent)).astype(np.float32)
        if self.type is RopeType.LINEAR:
            return (inv_freq / np.float32(self.factor)).astype(np.float32)
        if self.type is RopeType.LLAMA3:
            return _llama3_scale(inv_freq, self)
        return inv_freq


def _llama3_scale(inv_freq: np.ndarray, rope: Rope) -> np.ndarray:
    """Llama 3.1's piecewise scaling: long wavelengths / factor, short kept, smooth between."""
    f32 = np.float32
    old_len = rope.original_max_position_embeddings
    low_wavelen = old_len / rope.low_freq_factor
    high_wavelen = old_len / rope.high_freq_factor
    wavelen = (f32(2 * math.pi) / inv_freq).astype(f32)
    scaled = np.where(wavelen > low_wavelen, inv_freq / f32(rope.factor), inv_freq).astype(f32)
    smooth = ((f32(old_len) / wavelen - f32(rope.low_freq_factor))
              / f32(rope.high_freq_factor - rope.low_freq_factor)).astype(f32)
    smoothed = ((1 - smooth) * scaled / f32(rope.factor) + smooth * scaled).astype(f32)
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(f32)


def cos_sin(positions: Int[Array, " pos"], inv_freq: Float[Array, " half"],
            dtype) -> tuple[Float[Array, "pos d_head"], Float[Array, "pos d_head"]]:
    """cos and sin of the rotation angles ``[pos, d_head]``, in float32, cast to ``dtype``."""
    angles = (positions.astype(jnp.float32)[:, None]
              * inv_freq.astype(jnp.float32)[None, :])  # pos half
    angles = jnp.concatenate([angles, angles], axis=-1)  # pos d_head
    return jnp.cos(angles).astype(dtype), jnp.sin(angles).astype(dtype)


def rotate(x: Float[Array, "batch pos heads d_head"], cos: Float[Array, "pos d_head"],
           sin: Float[Array, "pos d_head"]) -> Float[Array, "batch pos heads d_head"]:
    """Applies the rotation: ``x * cos + rotate_half(x) * sin`` (HF's "rotate half" pairing)."""
    half = x.shape[-1] // 2
    # batch pos heads d_head
    rotated_half = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[None, :, None, :] + rotated_half * sin[None, :, None, :]
