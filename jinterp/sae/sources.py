"""Token sources for the activation store: a numpy token file, local text files, synthetic ids.

A token source hands out fixed-shape ``[batch, pos]`` int32 batches, and batch ``i`` is a pure
function of the source's arguments and ``i``: ``source.batch(i)``. The store keeps only the
index of the next batch in its (checkpointed) state, so a resumed run reads exactly the tokens
the uninterrupted one would have read, with no hidden iterator position to lose.

* :class:`TokenArraySource`: a ``.npy`` token file (memory-mapped, never unpickled) or an
  array, either ``[n_seq, pos]`` sequences or a flat ``[n_tokens]`` stream cut into windows;
  sequences are visited in a seeded permutation per epoch. Ids are checked against the
  vocabulary once, when the source is opened.
* :func:`text_source`: local ``.txt`` files tokenised with a local tokenizer
  (``jinterp.models.load_tokenizer``), packed into windows, each starting with BOS when the
  tokenizer prepends one (as SAELens's ``prepend_bos``).
* :class:`SyntheticTokenSource`: uniform random ids (tests, benchmarks).

``held_out`` sequences (the last ones of a file) are kept out of training for evaluation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from jaxtyping import Int

_SCAN_ROWS = 1 << 20  # tokens read at once when checking a token file's ids


@runtime_checkable
class TokenSource(Protocol):
    """What :class:`jinterp.sae.store.ActivationStore` reads: ``batch(i)`` for any ``i >= 0``."""

    batch_size: int
    seq_len: int

    def batch(self, index: int) -> Int[np.ndarray, "batch pos"]:
        """Token batch ``index`` (int32 ``[batch_size, seq_len]``), the same on every call."""
        ...


def _check_ids(tokens: np.ndarray, d_vocab: int | None, where: str) -> None:
    """Raises when any id lies outside ``[0, d_vocab)`` (read in chunks: memmaps stay lazy)."""
    if d_vocab is None:
        return
    flat = tokens.reshape(-1)
    for start in range(0, flat.size, _SCAN_ROWS):
        chunk = np.asarray(flat[start:start + _SCAN_ROWS])
        lo, hi = int(chunk.min()), int(chunk.max())
        if lo < 0 or hi >= d_vocab:
            raise ValueError(f"{where} holds token ids in [{lo}, {hi}] (first bad chunk at token "
                             f"{start}), outside the model's vocabulary [0, {d_vocab}): it was "
                             "tokenised for another model; re-tokenise it with this model's "
                             "tokenizer.")


class TokenArraySource:
    """Batches of sequences from a token array or ``.npy`` token file.

    Args:
        tokens: an integer array or ``.npy`` path, ``[n_seq, pos]`` or a flat ``[n_tokens]``
            stream (cut into consecutive windows of ``seq_len``; the tail is dropped).
        batch_size: sequences per batch.
        seq_len: tokens per sequence (default: the array's ``pos``); longer rows are cut.
        seed: seeds the per-epoch order of the sequences.
        d_vocab: the model's vocabulary size; ids outside ``[0, d_vocab)`` raise here.
        held_out: the last this-many sequences are not trained on (see :meth:`held_out_tokens`).
        shuffle: visit sequences in a seeded permutation per epoch (else in file order).
        prepend_bos: whether every sequence starts with BOS (recorded in the SAE's SAELens
            metadata; None: unknown, not recorded).
    """

    def __init__(self, tokens: np.ndarray | str | os.PathLike, batch_size: int, *,
                 seq_len: int | None = None, seed: int = 0, d_vocab: int | None = None,
                 held_out: int = 0, shuffle: bool = True, prepend_bos: bool | None = None):
        self.prepend_bos = prepend_bos
        where = "the token array"
        if isinstance(tokens, (str, os.PathLike)):
            where = f"token file {os.fspath(tokens)!r}"
            tokens = np.load(os.fspath(tokens), mmap_mode="r", allow_pickle=False)
        if tokens.ndim not in (1, 2) or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"{where} must hold integer ids, [n_seq, pos] or [n_tokens]; got "
                             f"dtype {tokens.dtype} and shape {tokens.shape}.")
        if tokens.ndim == 1:
            if seq_len is None:
                raise ValueError(f"{where} is a flat token stream: pass seq_len= to cut it into "
                                 "sequences.")
            n_seq = tokens.shape[0] // seq_len
            tokens = tokens[:n_seq * seq_len].reshape(n_seq, seq_len)
        seq_len = tokens.shape[1] if seq_len is None else seq_len
        if not 0 < seq_len <= tokens.shape[1]:
            raise ValueError(f"seq_len={seq_len} must lie in [1, {tokens.shape[1]}] for {where}.")
        _check_ids(tokens, d_vocab, where)
        n_train = tokens.shape[0] - held_out
        if batch_size <= 0 or held_out < 0 or n_train < batch_size:
            raise ValueError(f"{where} has {tokens.shape[0]} sequences: too few for batch_size="
                             f"{batch_size} after holding out {held_out}.")
        self._tokens, self._n_train, self._held_out = tokens, n_train, held_out
        self.batch_size, self.seq_len, self.seed, self.shuffle = batch_size, seq_len, seed, shuffle
        self.batches_per_epoch = n_train // batch_size

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self._n_train)
        return np.random.default_rng([self.seed, epoch]).permutation(self._n_train)

    def _rows(self, index: int) -> np.ndarray:
        epoch, i = divmod(int(index), self.batches_per_epoch)
        return np.sort(self._order(epoch)[i * self.batch_size:(i + 1) * self.batch_size])

    def batch(self, index: int) -> Int[np.ndarray, "batch pos"]:
        return np.asarray(self._tokens[self._rows(index), :self.seq_len], np.int32)

    def batch_rows(self, index: int, rows: slice) -> Int[np.ndarray, "n pos"]:
        """``batch(index)[rows]``, reading only those sequences (a memmapped file stays on
        disk): how each process of a multi-process run loads its share of a batch."""
        return np.asarray(self._tokens[self._rows(index)[rows], :self.seq_len], np.int32)

    def held_out_tokens(self) -> Int[np.ndarray, "batch pos"]:
        """The held-out sequences ``[held_out, seq_len]`` (for evaluation; never trained on)."""
        if not self._held_out:
            raise ValueError("this source holds nothing out; pass held_out=<n sequences>.")
        return np.asarray(self._tokens[self._n_train:, :self.seq_len], np.int32)


class SyntheticTokenSource:
    """Uniform random ids in ``[low, d_vocab)``; batch ``i`` is seeded by ``(seed, i)``.

    Args:
        d_vocab: vocabulary size.
        batch_size / seq_len: the batch shape.
        seed: the stream's seed.
        bos_id: put this id at position 0 of every sequence (None: no BOS).
        low: smallest id drawn (e.g. 1 to keep a pad id 0 out of the text).
    """

    def __init__(self, d_vocab: int, batch_size: int, seq_len: int, *, seed: int = 0,
                 bos_id: int | None = None, low: int = 0):
        if not 0 <= low < d_vocab:
            raise ValueError(f"low={low} must lie in [0, d_vocab={d_vocab}).")
        self.d_vocab, self.batch_size, self.seq_len = d_vocab, batch_size, seq_len
        self.seed, self.bos_id, self.low = seed, bos_id, low
        self.prepend_bos = bos_id is not None

    def batch(self, index: int) -> Int[np.ndarray, "batch pos"]:
        rng = np.random.default_rng([self.seed, int(index)])
        out = rng.integers(self.low, self.d_vocab, (self.batch_size, self.seq_len), np.int32)
        if self.bos_id is not None:
            out[:, 0] = self.bos_id
        return out


def pack_texts(tokenizer, texts: Sequence[str], seq_len: int) -> Int[np.ndarray, "n pos"]:
    """Token windows ``[n, seq_len]`` of concatenated documents (EOS between them when the
    tokenizer has one), each window starting with BOS when ``tokenizer.prepend_bos``."""
    bos = [tokenizer.bos_id] if tokenizer.prepend_bos else []
    body = seq_len - len(bos)
    if body <= 0:
        raise ValueError(f"seq_len={seq_len} leaves no room for text after BOS.")
    stream: list[int] = []
    for text in texts:
        stream.extend(tokenizer.encode(text, prepend_bos=False).tolist())
        if tokenizer.eos_id is not None:
            stream.append(tokenizer.eos_id)
    n = len(stream) // body
    if n == 0:
        raise ValueError(f"the texts give {len(stream)} tokens: not one window of {body}.")
    windows = np.asarray(stream[:n * body], np.int32).reshape(n, body)
    return np.concatenate([np.full((n, len(bos)), bos, np.int32).reshape(n, len(bos)), windows],
                          axis=1)


def text_source(paths: str | os.PathLike | Sequence[str | os.PathLike], tokenizer,
                batch_size: int, seq_len: int, **kwargs) -> TokenArraySource:
    """A :class:`TokenArraySource` over local text files, tokenised once, packed in windows.

    Args:
        paths: ``.txt`` files (or one directory: its ``*.txt`` files, sorted); one document each.
        tokenizer: a ``jinterp.models.Tokenizer`` (from ``load_tokenizer(model_dir)``).
        batch_size / seq_len: the batch shape.
        **kwargs: :class:`TokenArraySource` options (``seed``, ``d_vocab``, ``held_out``).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[str] = []
    for p in map(os.fspath, paths):
        files += (sorted(os.path.join(p, f) for f in os.listdir(p) if f.endswith(".txt"))
                  if os.path.isdir(p) else [p])
    if not files:
        raise ValueError(f"no .txt files in {list(map(os.fspath, paths))}.")
    texts = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            texts.append(fh.read())
    return TokenArraySource(pack_texts(tokenizer, texts, seq_len), batch_size,
                            prepend_bos=bool(tokenizer.prepend_bos), **kwargs)
