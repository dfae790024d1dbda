"""Next-token choice: greedy, or sampling with temperature, top-k and top-p (nucleus).

The order and the rules are HuggingFace's logits warpers (``TemperatureLogitsWarper``, then
``TopKLogitsWarper``, then ``TopPLogitsWarper``): divide by the temperature; keep the ``top_k``
largest logits (ties with the k-th kept too); keep the smallest set of most likely tokens whose
probabilities sum to at least ``top_p`` (always at least one); sample from the softmax of what is
left. HF draws with torch's generator, so sampled tokens can only be compared with HF in
distribution, not token for token; greedy decoding (``temperature=0``) is deterministic and is.

What is static (part of the compiled program): greedy or not, ``top_k`` (``lax.top_k`` needs a
static k), whether ``top_p`` is used. The temperature and ``top_p`` values are data, so a new
value never recompiles.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, ArrayLike, Float, Int


@dataclasses.dataclass(frozen=True)
class Sampler:
    """The static part of a decoding rule.

    Attributes:
        greedy: argmax (``temperature == 0`` and neither ``top_k`` nor ``top_p``).
        top_k: keep this many largest logits, or None.
        top_p: whether nucleus filtering is on (its threshold is data).
    """

    greedy: bool = True
    top_k: int | None = None
    top_p: bool = False


def make_sampler(temperature, top_k, top_p, key, d_vocab: int) -> Sampler:
    """Checks the sampling options together and returns the static rule.

    Raises:
        ValueError / TypeError: naming the option and the fix (a key to sample with, a positive
            temperature for top-k / top-p, values in range).
    """
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a number >= 0 (0 is greedy decoding); got "
                        f"{temperature!r}.")
    if temperature < 0:
        raise ValueError(f"temperature={temperature} is negative; use 0 for greedy decoding or a "
                         "positive value to sample.")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= d_vocab:
            raise ValueError(f"top_k={top_k!r} must be an int in [1, d_vocab={d_vocab}] (or None "
                             "for no top-k filter).")
    if top_p is not None:
        if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
            raise ValueError(f"top_p={top_p!r} must be a number in (0, 1] (or None for no "
                             "nucleus filter).")
    filters = [f"{n}={v}" for n, v in (("top_k", top_k), ("top_p", top_p)) if v is not None]
    if temperature == 0:
        if filters:
            raise ValueError(f"{' and '.join(filters)} filter a sampled distribution, but "
                             "temperature=0 is greedy decoding. To sample, pass temperature=1.0 "
                             "(or another positive value) and key=jax.random.key(seed); for "
                             "greedy decoding drop them.")
        return Sampler()
    if key is None:
        what = ", ".join([f"temperature={temperature}", *filters])
        raise ValueError(f"Sampling ({what}) needs a random key: pass key=jax.random.key(seed) "
                         "(or temperature=0.0 for greedy decoding, which needs none).")
    return Sampler(greedy=False, top_k=top_k, top_p=top_p is not None)


def filter_logits(logits: Float[ArrayLike, "batch d_vocab"], temperature: Float[ArrayLike, ""],
                  top_p: Float[ArrayLike, ""], sampler: Sampler) -> Float[Array, "batch d_vocab"]:
    """The logits a sample is drawn from: scaled, then top-k and top-p filtered (-inf out)."""
    logits = jnp.asarray(logits, jnp.float32) / temperature
    if sampler.top_k is not None:
        kth = lax.top_k(logits, sampler.top_k)[0][:, -1:]  # batch 1
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if sampler.top_p:
        ordered = -jnp.sort(-logits, axis=-1)  # batch d_vocab, descending
        probs = jax.nn.softmax(ordered, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of the strictly likelier tokens
        keep = before < top_p  # the first is always kept (before = 0)
        threshold = jnp.min(jnp.where(keep, ordered, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
    return logits


def sample(logits: Float[ArrayLike, "batch d_vocab"], key: jax.Array | None,
           temperature: Float[ArrayLike, ""], top_p: Float[ArrayLike, ""],
           sampler: Sampler) -> Int[Array, " batch"]:
    """One token per row: the argmax, or a draw from the filtered distribution."""
    if sampler.greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    filtered = filter_logits(logits, temperature, top_p, sampler)
    return jax.random.categorical(key, filtered, axis=-1).astype(jnp.int32)
