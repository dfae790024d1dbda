"""Parameter dtypes: the one place that says which are valid and how they are spelled.

A port's parameters are ``float32``, ``bfloat16`` or ``float16``. Users spell these many ways
(``"bf16"`` from HuggingFace and PyTorch habits, ``jnp.bfloat16``, ``np.dtype("float16")``),
and ``numpy.dtype("fp16")`` fails with a message that lists no valid choice, so every entry
point (``load_pretrained``, ``from_hf``, the model configs) turns what it was given into one
canonical name here and gets one clear error for anything else.

Accepted spellings: the names ``"float32"``, ``"bfloat16"``, ``"float16"`` (any case), their
short aliases ``"fp32"``, ``"bf16"``, ``"fp16"``, and numpy / JAX dtypes and scalar types
(``np.float32``, ``jnp.bfloat16``, ``np.dtype("float16")``).
"""

from __future__ import annotations

import numpy as np

#: The canonical parameter dtype names, in order of precision.
DTYPES = ("float32", "bfloat16", "float16")

_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def canonical_dtype(value) -> str:
    """The canonical name (one of :data:`DTYPES`) of a dtype given as a string or dtype.

    Args:
        value: ``"float32"``, ``"bf16"``, ``jnp.bfloat16``, ``np.dtype("float16")``, ...

    Returns:
        ``"float32"``, ``"bfloat16"`` or ``"float16"``, accepted by ``jnp.dtype`` and
        ``jnp.asarray(..., dtype=...)``.

    Raises:
        ValueError: for anything else, listing the valid dtypes and aliases.
    """
    if isinstance(value, str):
        key = value.strip().lower()
        name = _ALIASES.get(key, key)
    else:
        try:
            name = np.dtype(value).name  # jnp.bfloat16 and ml_dtypes register with numpy
        except TypeError:
            name = None
    if name in DTYPES:
        return name
    aliases = ", ".join(f"{a!r} ({n})" for a, n in _ALIASES.items())
    raise ValueError(f"dtype={value!r} is not a supported parameter dtype; use one of "
                     f"{', '.join(repr(d) for d in DTYPES)} (aliases: {aliases}) or the matching "
                     "numpy/JAX dtype.")
