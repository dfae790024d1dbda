"""What the figure modules share: the Agg backend, shape checks, token labels, saving.

Every figure function takes host or device arrays, checks their shape itself (the error names
the shape it expected and how to get there), writes one PNG and returns its path. Matplotlib
is put on the non-interactive Agg backend before pyplot is imported, so figures render on a
headless machine and inside tests.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from jaxtyping import ArrayLike, Float  # noqa: E402

DPI = 110


def as_array(values: Float[ArrayLike, "..."], axes: Sequence[str], what: str,
             hint: str = "") -> np.ndarray:
    """``values`` as a float64 numpy array of rank ``len(axes)``, or an error naming ``axes``.

    Args:
        axes: the expected axis names (``("layer", "pos")``); an entry that is a number (``"3"``)
            is a fixed size.
        what: the function (or argument) the error is about.
        hint: how to get the right shape, appended to the error.
    """
    x = np.asarray(values, dtype=np.float64)
    sizes_ok = all(not a.isdigit() or x.shape[i] == int(a)
                   for i, a in enumerate(axes)) if x.ndim == len(axes) else False
    if not sizes_ok:
        raise ValueError(f"{what} takes values of shape [{', '.join(axes)}]; got shape "
                         f"{tuple(x.shape)}.{' ' + hint if hint else ''}")
    return x


def token_labels(tokens, n_pos: int, tokenizer=None, what: str = "tokens") -> list[str]:
    """Axis labels for ``n_pos`` positions: ``"{token} {i}"`` (or ``"{i}"`` without tokens).

    Args:
        tokens: None, ``n_pos`` strings, or ``n_pos`` token ids (decoded with ``tokenizer``
            when given: its ``to_str_tokens`` (jinterp's and TransformerLens's) or ``decode``).
        tokenizer: turns ids into strings; without one, ids are shown as numbers.
    """
    if tokens is None:
        return [str(i) for i in range(n_pos)]
    strings = token_strings(tokens, tokenizer)
    if len(strings) != n_pos:
        raise ValueError(f"{what} has {len(strings)} entries but the values have {n_pos} "
                         "positions; pass the tokens of the one prompt the values are about.")
    return [f"{s} {i}" for i, s in enumerate(strings)]


def token_strings(tokens, tokenizer=None) -> list[str]:
    """Printable strings for ``tokens`` (strings, or ids decoded by ``tokenizer``)."""
    if isinstance(tokens, str):
        raise TypeError("tokens must be a sequence of token strings or ids, not one string; "
                        "split it with the tokenizer (tokenizer.to_str_tokens(text)).")
    items = list(np.asarray(tokens).reshape(-1)) if not isinstance(tokens, list) else tokens
    if items and not isinstance(items[0], str):
        ids = [int(t) for t in items]
        if tokenizer is None:
            items = [str(i) for i in ids]
        elif hasattr(tokenizer, "to_str_tokens"):
            items = list(tokenizer.to_str_tokens(np.asarray(ids)))
        else:
            items = [tokenizer.decode([i]) for i in ids]
    return [printable(str(s)) for s in items]


def printable(text: str) -> str:
    """Whitespace made visible (a leading space is a separate token in BPE vocabularies)."""
    return text.replace("\n", "\\n").replace("\t", "\\t").replace(" ", "\u00b7")


def symmetric_limits(values: np.ndarray, center: float | None) -> dict:
    """``vmin`` / ``vmax`` for a diverging colour map centred on ``center`` (None: min..max)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"vmin": 0.0, "vmax": 1.0}
    if center is None:
        lo, hi = float(finite.min()), float(finite.max())
        return {"vmin": lo, "vmax": hi if hi > lo else lo + 1e-9}
    half = max(float(np.abs(finite - center).max()), 1e-9)
    return {"vmin": center - half, "vmax": center + half}


def save(fig, out: str | os.PathLike) -> Path:
    """Writes ``fig`` as a PNG to ``out`` (parent folders created) and closes it."""
    path = Path(out)
    if path.suffix.lower() != ".png":
        raise ValueError(f"Figures are written as PNG; give a path ending in .png, got {out!r}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path
