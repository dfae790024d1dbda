"""Activation sources for SAE training: in-memory arrays, memmaps, .npy files, iterators.

SAE training reads billions of activation vectors; they rarely fit in memory and must be
shuffled, because consecutive tokens of one document are strongly correlated. A
:class:`ArraySource` therefore reads a disk-backed array in contiguous *chunks* (cheap
sequential reads), mixes ``buffer_chunks`` randomly chosen chunks into one buffer and
shuffles the rows inside it -- the usual shuffle-buffer compromise between I/O and
randomness.

Every source is *replayable from a step*: ``source.batches(start_step)`` yields exactly the
batches that an uninterrupted run would have seen from that step on. That is what makes
checkpoint resume exact: the data position is a pure function of (seed, step) and need not
be stored in the checkpoint.

Axis names: ``batch`` (tokens in one training batch), ``d_in`` (activation width).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class ActivationSource(Protocol):
    """What :func:`jinterp.sae.train` reads: fixed-size batches, replayable from a step."""

    batch_size: int
    d_in: int

    def batches(self, start_step: int = 0) -> Iterator[np.ndarray]:
        """Yields ``[batch_size, d_in]`` float arrays: batch ``start_step``, then the next..."""
        ...


ArrayLike = np.ndarray | str | os.PathLike


def _open_rows(array: ArrayLike) -> np.ndarray:
    """Opens a .npy path as a read-only memmap (no pickle) and flattens to [rows, d_in]."""
    if isinstance(array, (str, os.PathLike)):
        array = np.load(os.fspath(array), mmap_mode="r", allow_pickle=False)
    array = np.asarray(array) if not isinstance(array, np.ndarray) else array
    if array.ndim < 2:
        raise ValueError(
            f"activation arrays need shape [..., d_in] with at least 2 axes, got {array.shape}"
        )
    return array.reshape(-1, array.shape[-1])


class ArraySource:
    """Shuffled chunked batches from one or more arrays, memmaps or .npy files.

    The files are treated as one virtual array of rows (their concatenation). Each epoch
    permutes the chunk order, groups ``buffer_chunks`` chunks into a buffer, shuffles the
    buffer's rows and cuts batches from the resulting row stream; the partial batch at the
    end of an epoch is dropped. Everything depends only on ``seed`` and the epoch number.

    Args:
        arrays: an array/memmap/.npy path, or a sequence of them (same trailing ``d_in``).
        batch_size: rows per training batch.
        seed: data-order seed.
        chunk_rows: contiguous rows read at once (the unit of disk I/O).
        buffer_chunks: chunks mixed into one shuffle buffer (memory = chunk_rows *
            buffer_chunks rows).
        dtype: dtype of the yielded batches.
    """

    def __init__(self, arrays: ArrayLike | Sequence[ArrayLike], batch_size: int, *,
                 seed: int = 0, chunk_rows: int = 65536, buffer_chunks: int = 8,
                 dtype=np.float32):
        if isinstance(arrays, (np.ndarray, str, os.PathLike)):
            arrays = [arrays]
        self._parts = [_open_rows(a) for a in arrays]
        if not self._parts:
            raise ValueError("ArraySource needs at least one array")
        widths = {p.shape[1] for p in self._parts}
        if len(widths) != 1:
            raise ValueError(f"all activation arrays must share d_in; got widths {sorted(widths)}")
        self.d_in = widths.pop()
        self._offsets = np.cumsum([0] + [p.shape[0] for p in self._parts])
        self.n_rows = int(self._offsets[-1])
        if batch_size <= 0 or chunk_rows <= 0 or buffer_chunks <= 0:
            raise ValueError(f"batch_size, chunk_rows, buffer_chunks must be positive; got "
                             f"{batch_size}, {chunk_rows}, {buffer_chunks}")
        if batch_size > self.n_rows:
            raise ValueError(f"batch_size={batch_size} exceeds the {self.n_rows} rows available")
        self.batch_size = batch_size
        self.seed = seed
        self.chunk_rows = chunk_rows
        self.buffer_chunks = buffer_chunks
        self.dtype = dtype
        self.n_chunks = -(-self.n_rows // chunk_rows)
        self.batches_per_epoch = self.n_rows // batch_size

    def _read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of the virtual concatenation, read from the parts they span."""
        pieces = []
        for part, lo in zip(self._parts, self._offsets[:-1]):
            a, b = max(start - lo, 0), min(stop - lo, part.shape[0])
            if a < b:
                pieces.append(np.asarray(part[a:b], dtype=self.dtype))
        return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]

    def _epoch_buffers(self, epoch: int) -> list[np.ndarray]:
        """The chunk indices of each shuffle buffer of ``epoch`` (chunk order is permuted)."""
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n_chunks)
        step = self.buffer_chunks
        return [order[i:i + step] for i in range(0, self.n_chunks, step)]

    def _load_buffer(self, epoch: int, index: int, chunks: np.ndarray) -> np.ndarray:
        rows = np.concatenate([
            self._read(c * self.chunk_rows, min((c + 1) * self.chunk_rows, self.n_rows))
            for c in chunks.tolist()  # Python ints (numpy's are not ``int``)
        ])
        perm = np.random.default_rng([self.seed, epoch, index + 1]).permutation(len(rows))
        return rows[perm]

    def _epoch_rows(self, epoch: int, skip_rows: int) -> Iterator[np.ndarray]:
        """The shuffled row stream of ``epoch`` from row ``skip_rows`` on, buffer by buffer."""
        seen = 0
        for index, chunks in enumerate(self._epoch_buffers(epoch)):
            size = sum(min((c + 1) * self.chunk_rows, self.n_rows) - c * self.chunk_rows
                       for c in chunks)
            if seen + size <= skip_rows:  # whole buffer already consumed: do not read it
                seen += size
                continue
            rows = self._load_buffer(epoch, index, chunks)
            yield rows[max(skip_rows - seen, 0):]
            seen += size

    def batches(self, start_step: int = 0) -> Iterator[np.ndarray]:
        """Yields batches ``start_step, start_step + 1, ...`` forever (epoch after epoch)."""
        epoch, batch_in_epoch = divmod(start_step, self.batches_per_epoch)
        while True:
            pending = np.empty((0, self.d_in), self.dtype)
            n_left = self.batches_per_epoch - batch_in_epoch
            for rows in self._epoch_rows(epoch, batch_in_epoch * self.batch_size):
                pending = np.concatenate([pending, rows]) if len(pending) else rows
                while len(pending) >= self.batch_size and n_left:
                    yield pending[:self.batch_size]
                    pending = pending[self.batch_size:]
                    n_left -= 1
                if not n_left:
                    break
            epoch, batch_in_epoch = epoch + 1, 0


class IteratorSource:
    """Re-batches an iterator of activation arrays (any leading shape) to fixed batches.

    Arrays of shape ``[..., d_in]`` (e.g. ``[batch, pos, d_model]`` straight from a model) are
    flattened to rows and cut into ``[batch_size, d_in]`` batches, in order, *without
    shuffling*: consecutive rows of one document stay together in a batch. To train on a
    model's activations, use :func:`jinterp.sae.train_on_model`, whose
    :class:`~jinterp.sae.store.ActivationStore` mixes rows of many forward passes in a
    shuffle buffer on the device; or shuffle the arrays before they reach this source.

    Resuming from step ``s`` re-creates the iterator (when ``make_iterator`` is a callable)
    and skips the first ``s`` batches, which is exact when the callable replays the same
    stream. A bare iterator is consumed once; resuming then assumes it is fresh.

    Args:
        make_iterator: a zero-argument callable returning a fresh iterator, or an iterable.
        batch_size: rows per training batch.
        d_in: activation width (checked against every array).
    """

    def __init__(self, make_iterator: Callable[[], Iterable[np.ndarray]] | Iterable[np.ndarray],
                 batch_size: int, d_in: int, *, dtype=np.float32):
        self._make = make_iterator if callable(make_iterator) else (lambda: make_iterator)
        self.batch_size, self.d_in, self.dtype = batch_size, d_in, dtype

    def batches(self, start_step: int = 0) -> Iterator[np.ndarray]:
        pending, skipped = np.empty((0, self.d_in), self.dtype), 0
        for array in self._make():
            array = np.asarray(array, dtype=self.dtype)
            if array.shape[-1] != self.d_in:
                raise ValueError(f"activation array has shape {array.shape}; expected trailing "
                                 f"axis d_in={self.d_in}")
            pending = np.concatenate([pending, array.reshape(-1, self.d_in)])
            while len(pending) >= self.batch_size:
                batch, pending = pending[:self.batch_size], pending[self.batch_size:]
                if skipped < start_step:
                    skipped += 1
                    continue
                yield batch


def as_source(data, batch_size: int, *, seed: int = 0, d_in: int | None = None,
              **array_kwargs) -> ActivationSource:
    """Turns what the user passed as ``data`` into an :class:`ActivationSource`.

    Accepts a source (returned unchanged), an array / memmap / .npy path / list of paths
    (-> :class:`ArraySource`), or an iterator / iterable / zero-argument callable of arrays
    (-> :class:`IteratorSource`, which then needs ``d_in``).
    """
    if hasattr(data, "batches") and hasattr(data, "batch_size"):
        if data.batch_size != batch_size:
            raise ValueError(f"source batch_size={data.batch_size} != requested {batch_size}")
        return data
    is_paths = isinstance(data, (list, tuple)) and all(
        isinstance(d, (np.ndarray, str, os.PathLike)) for d in data)
    if isinstance(data, (np.ndarray, str, os.PathLike)) or (is_paths and data):
        return ArraySource(data, batch_size, seed=seed, **array_kwargs)
    if callable(data) or isinstance(data, Iterable):
        if d_in is None:
            raise ValueError("an iterator data source needs d_in (pass the SAE's d_in)")
        return IteratorSource(data, batch_size, d_in)
    raise TypeError(f"cannot read activations from {type(data).__name__}: pass an array, a "
                    f"memmap, .npy path(s), an iterator of arrays, or an ActivationSource")
