"""``(x, y)`` activation streams for transcoders: the same rows of two activations, together.

A transcoder reads one activation (an MLP's input, ``x``) and predicts another (its output,
``y``) of the *same token*, so its training batches are pairs whose rows correspond.
:func:`jinterp.sae.train` takes them as ``data=(x_data, y_data)`` (each an array, memmap or
``.npy`` path(s), e.g. two hooks of :func:`jinterp.sae.cache_activations`) or as an iterator
of ``(x, y)`` array pairs; :func:`paired_source` turns either into a :class:`PairedSource`.

Two :class:`~jinterp.sae.data.ArraySource` s over arrays of the same number of rows, with the
same seed and chunking, draw the same permutation of rows (their order is a function of the
seed, the epoch and the row count alone), so zipping their batches pairs row ``i`` of ``x``
with row ``i`` of ``y``, and a resumed run replays the same pairs from any step.

Axis names: ``batch`` (rows of one batch), ``d_in`` (``x``), ``d_target`` (``y``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from jinterp.sae.data import ArraySource

Pair = tuple[np.ndarray, np.ndarray]


class PairedSource:
    """``(x, y)`` batches from two row-aligned array sources.

    Args:
        x / y: :class:`~jinterp.sae.data.ArraySource` s over the same rows (same row count,
            seed, chunk size and buffer): the input and the target activations.
    """

    def __init__(self, x: ArraySource, y: ArraySource):
        same = ("n_rows", "batch_size", "seed", "chunk_rows", "buffer_chunks")
        diff = [f"{k}: {getattr(x, k)} vs {getattr(y, k)}" for k in same
                if getattr(x, k) != getattr(y, k)]
        if diff:
            raise ValueError(f"a transcoder's (x, y) arrays must hold the same tokens row for "
                             f"row, read the same way; they differ in {'; '.join(diff)}. Pass "
                             "activations of the same tokens (e.g. two hooks of one "
                             "cache_activations run).")
        self.x, self.y = x, y
        self.batch_size, self.d_in, self.d_target = x.batch_size, x.d_in, y.d_in

    def batches(self, start_step: int = 0) -> Iterator[Pair]:
        """Yields ``(x [batch, d_in], y [batch, d_target])`` from batch ``start_step`` on."""
        return zip(self.x.batches(start_step), self.y.batches(start_step))


class PairedIteratorSource:
    """Re-batches an iterator of ``(x, y)`` array pairs (any leading token axes) to fixed
    batches, in order and without shuffling (as :class:`~jinterp.sae.data.IteratorSource`).

    Args:
        make_iterator: a zero-argument callable returning a fresh iterator of pairs (replayed
            on resume), or an iterable.
        batch_size: rows per batch.
        d_in / d_target: widths of ``x`` and ``y`` (checked on every pair).
    """

    def __init__(self, make_iterator: Callable[[], Iterable[Pair]] | Iterable[Pair],
                 batch_size: int, d_in: int, d_target: int, *, dtype=np.float32):
        self._make = make_iterator if callable(make_iterator) else (lambda: make_iterator)
        self.batch_size, self.d_in, self.d_target, self.dtype = batch_size, d_in, d_target, dtype

    def batches(self, start_step: int = 0) -> Iterator[Pair]:
        xs = np.empty((0, self.d_in), self.dtype)
        ys = np.empty((0, self.d_target), self.dtype)
        skipped = 0
        for item in self._make():
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise ValueError(f"a transcoder's data iterator must yield (x, y) pairs, got "
                                 f"{type(item).__name__}.")
            x, y = (np.asarray(a, self.dtype) for a in item)
            if x.shape[-1] != self.d_in or y.shape[-1] != self.d_target or \
                    x.shape[:-1] != y.shape[:-1]:
                raise ValueError(f"an (x, y) pair has shapes {x.shape} and {y.shape}; expected "
                                 f"[..., {self.d_in}] and [..., {self.d_target}] with the same "
                                 "leading (token) axes.")
            xs = np.concatenate([xs, x.reshape(-1, self.d_in)])
            ys = np.concatenate([ys, y.reshape(-1, self.d_target)])
            while len(xs) >= self.batch_size:
                bx, by = xs[:self.batch_size], ys[:self.batch_size]
                xs, ys = xs[self.batch_size:], ys[self.batch_size:]
                if skipped < start_step:
                    skipped += 1
                    continue
                yield bx, by


def _is_arrays(d) -> bool:
    if isinstance(d, (np.ndarray, str, os.PathLike)):
        return True
    return isinstance(d, (list, tuple)) and bool(d) and all(
        isinstance(p, (np.ndarray, str, os.PathLike)) for p in d)


def paired_source(data, batch_size: int, *, seed: int = 0, d_in: int, d_target: int,
                  **array_kwargs) -> PairedSource | PairedIteratorSource:
    """A transcoder's ``(x, y)`` source from what :func:`jinterp.sae.train` was given.

    Accepts a source (returned unchanged), a pair ``(x_data, y_data)`` of arrays / memmaps /
    ``.npy`` path(s), or an iterator / iterable / zero-argument callable of ``(x, y)`` pairs.
    """
    if hasattr(data, "batches") and hasattr(data, "batch_size"):
        if data.batch_size != batch_size:
            raise ValueError(f"source batch_size={data.batch_size} != requested {batch_size}")
        return data
    if isinstance(data, tuple) and len(data) == 2 and all(_is_arrays(d) for d in data):
        src = PairedSource(*(ArraySource(d, batch_size, seed=seed, **array_kwargs)
                             for d in data))
        if (src.d_in, src.d_target) != (d_in, d_target):
            raise ValueError(f"the (x, y) arrays have widths ({src.d_in}, {src.d_target}); the "
                             f"transcoder reads d_in={d_in} and predicts d_out={d_target}.")
        return src
    if callable(data) or (isinstance(data, Iterable) and not isinstance(data, (tuple, str))):
        return PairedIteratorSource(data, batch_size, d_in, d_target)
    raise TypeError(f"a transcoder trains on (x, y) pairs: pass data=(x_data, y_data) (arrays, "
                    f"memmaps or .npy paths of the same tokens) or an iterator of (x, y) pairs; "
                    f"got {type(data).__name__}.")
