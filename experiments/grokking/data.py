"""Modular-addition data: every pair ``(a, b)``, split exactly as the authors split it.

The authors list the pairs ``(i, j, p)`` for ``i`` then ``j`` in ``range(p)``, call
``random.seed(seed); random.shuffle(pairs)`` and keep the first ``int(frac_train * p^2)`` for
training. Python's Mersenne-Twister shuffle is deterministic across platforms, so doing the same
here reproduces their split pair for pair (3,830 train / 8,939 test for p = 113).

Pairs are kept as index arrays into the row-major ``(a, b)`` grid, because the Fourier progress
measures work on the full p x p grid of logits and need to know which grid cells are training data.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
from jaxtyping import Bool, Int


@dataclasses.dataclass(frozen=True)
class ModAddData:
    """Train/test split of ``c = (a + b) mod p``.

    Attributes:
        p: modulus.
        train_idx / test_idx: indices into the row-major grid ``a * p + b`` (train in shuffled
            order).
    """

    p: int
    train_idx: Int[np.ndarray, " n_train"]
    test_idx: Int[np.ndarray, " n_test"]

    @property
    def is_train(self) -> Bool[np.ndarray, " n_pairs"]:
        mask = np.zeros(self.p * self.p, dtype=bool)
        mask[self.train_idx] = True
        return mask

    def grid(self) -> tuple[Int[np.ndarray, " n_pairs"], Int[np.ndarray, " n_pairs"],
                            Int[np.ndarray, " n_pairs"]]:
        """``(a, b, labels)`` over the whole grid in row-major order."""
        a, b = np.divmod(np.arange(self.p * self.p), self.p)
        return a, b, (a + b) % self.p

    def split(self, which: str) -> tuple[Int[np.ndarray, " n"], Int[np.ndarray, " n"],
                                         Int[np.ndarray, " n"]]:
        """``(a, b, labels)`` of the ``"train"``, ``"test"`` or ``"all"`` pairs."""
        a, b, y = self.grid()
        if which == "all":
            return a, b, y
        if which not in ("train", "test"):
            raise ValueError(f"split must be 'train', 'test' or 'all', got {which!r}.")
        idx = self.train_idx if which == "train" else self.test_idx
        return a[idx], b[idx], y[idx]


def make_data(p: int, frac_train: float, seed: int) -> ModAddData:
    """The authors' split (``gen_train_test``): Python ``random.shuffle`` of the pair list."""
    pairs = [i * p + j for i in range(p) for j in range(p)]  # same order as [(i, j, p) ...]
    random.Random(seed).shuffle(pairs)
    n_train = int(frac_train * len(pairs))
    order = np.asarray(pairs, dtype=np.int32)
    return ModAddData(p=p, train_idx=order[:n_train], test_idx=order[n_train:])


def tokens(a: Int[np.ndarray, " n"], b: Int[np.ndarray, " n"], p: int) -> Int[np.ndarray, "n 3"]:
    """Model inputs ``[a, b, =]`` with ``=`` = token ``p``."""
    return np.stack([a, b, np.full_like(a, p)], axis=1).astype(np.int32)
