"""Tokenizers for local checkpoint directories, with explicit BOS handling.

``load_tokenizer(path)`` reads ``tokenizer.json`` with the ``tokenizers`` library (Rust, no
network, no ``transformers``), and the special tokens from ``tokenizer_config.json`` /
``special_tokens_map.json`` / ``config.json`` in the same directory.

BOS matters: Llama and Gemma were trained with a beginning-of-sequence token at position 0 and
behave oddly without it (the first position is an attention sink). The helper never relies on a
``tokenizer.json`` post-processor to add it (Llama 3's and Gemma's have one, Llama 2's GPT-2's do
not): it encodes without special tokens and prepends BOS itself when ``prepend_bos`` is true, so
the result is the same whichever way the file was written. The default is the checkpoint's own
``add_bos_token`` when it states one, else "prepend if the model has a BOS token".
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
from jaxtyping import Int

_NAMES = ("bos", "eos", "pad")


class Tokenizer:
    """A ``tokenizers.Tokenizer`` plus the special-token ids and the BOS convention of its model.

    Args:
        tokenizer: the loaded ``tokenizers.Tokenizer``.
        bos_id / eos_id / pad_id: special token ids (None where the model has none).
        prepend_bos: the default for :meth:`encode` / :meth:`to_tokens`.
    """

    def __init__(self, tokenizer, bos_id: int | None, eos_id: int | None, pad_id: int | None,
                 prepend_bos: bool):
        self.tokenizer = tokenizer
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        if prepend_bos and bos_id is None:
            raise ValueError("prepend_bos=True but the tokenizer has no BOS token; pass "
                             "prepend_bos=False.")
        self.prepend_bos = prepend_bos

    def __repr__(self) -> str:
        return (f"Tokenizer(vocab={self.vocab_size}, bos_id={self.bos_id}, eos_id={self.eos_id}, "
                f"pad_id={self.pad_id}, prepend_bos={self.prepend_bos})")

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def _bos(self, prepend_bos: bool | None) -> list[int]:
        prepend = self.prepend_bos if prepend_bos is None else prepend_bos
        if prepend and self.bos_id is None:
            raise ValueError("This tokenizer has no BOS token; call with prepend_bos=False.")
        return [self.bos_id] if prepend else []

    def encode(self, text: str, prepend_bos: bool | None = None) -> Int[np.ndarray, " pos"]:
        """Token ids of one string, ``[pos]`` int32, with BOS first when ``prepend_bos``."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes one string, got {type(text).__name__}; use to_tokens "
                            "for a batch.")
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        return np.asarray(self._bos(prepend_bos) + ids, dtype=np.int32)

    def to_tokens(self, texts: str | Sequence[str], prepend_bos: bool | None = None,
                  return_lengths: bool = False):
        """A ``[batch, pos]`` int32 array of a string or list of strings (TransformerLens's name).

        Shorter sequences are right-padded with the pad id (EOS, then 0, when there is none): with
        causal attention the padding never influences the real positions. With
        ``return_lengths=True`` also returns each sequence's true length ``[batch]``.
        """
        batch = [texts] if isinstance(texts, str) else list(texts)
        if not batch:
            raise ValueError("to_tokens got an empty list of strings.")
        rows = [self.encode(t, prepend_bos) for t in batch]
        lengths = np.asarray([len(r) for r in rows], np.int32)
        pad = next(i for i in (self.pad_id, self.eos_id, 0) if i is not None)
        tokens = np.full((len(rows), int(lengths.max())), pad, np.int32)
        for i, row in enumerate(rows):
            tokens[i, :len(row)] = row
        return (tokens, lengths) if return_lengths else tokens

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """The string of a ``[pos]`` sequence of ids."""
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise ValueError(f"decode takes one sequence of ids [pos], got shape {ids.shape}; "
                             "use batch_decode for [batch, pos].")
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def batch_decode(self, ids, skip_special_tokens: bool = False) -> list[str]:
        """One string per row of a ``[batch, pos]`` array."""
        return [self.decode(row, skip_special_tokens) for row in np.asarray(ids)]

    def to_str_tokens(self, text_or_ids, prepend_bos: bool | None = None) -> list[str]:
        """Each token as its own decoded string (for plots and tables)."""
        ids = (self.encode(text_or_ids, prepend_bos) if isinstance(text_or_ids, str)
               else np.asarray(text_or_ids))
        return [self.tokenizer.decode([int(i)], skip_special_tokens=False) for i in ids]


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _token_text(value) -> str | None:
    """A special token entry: a string, or (older files) a dict with ``content``."""
    if isinstance(value, dict):
        return value.get("content")
    return value


def load_tokenizer(path: str | os.PathLike, prepend_bos: bool | None = None) -> Tokenizer:
    """The tokenizer of a checkpoint directory (``tokenizer.json`` plus its config files).

    Args:
        path: the directory (as written by ``save_pretrained`` / downloaded from the Hub).
        prepend_bos: default BOS behaviour; None = the checkpoint's ``add_bos_token`` if stated,
            else True when the model has a BOS token.

    Raises:
        FileNotFoundError: no ``tokenizer.json`` (sentencepiece-only ``tokenizer.model``
            directories need converting once with ``transformers``:
            ``AutoTokenizer.from_pretrained(p).save_pretrained(p)``).
    """
    from tokenizers import Tokenizer as RustTokenizer

    path = os.fspath(path)
    file = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(file):
        present = sorted(os.listdir(path)) if os.path.isdir(path) else "no such directory"
        raise FileNotFoundError(
            f"{path} has no tokenizer.json (found: {present}). If it has only a sentencepiece "
            "tokenizer.model, convert it once: "
            "transformers.AutoTokenizer.from_pretrained(path).save_pretrained(path).")
    tok = RustTokenizer.from_file(file)
    tok_config = _read_json(os.path.join(path, "tokenizer_config.json"))
    special_map = _read_json(os.path.join(path, "special_tokens_map.json"))
    model_config = _read_json(os.path.join(path, "config.json"))
    ids = {}
    for name in _NAMES:
        text = (_token_text(tok_config.get(f"{name}_token"))
                or _token_text(special_map.get(f"{name}_token")))
        token_id = tok.token_to_id(text) if text else None
        if token_id is None:
            token_id = model_config.get(f"{name}_token_id")
            token_id = token_id[0] if isinstance(token_id, list) else token_id
        ids[name] = token_id
    if prepend_bos is None:
        has_bos = ids["bos"] is not None
        prepend_bos = bool(tok_config.get("add_bos_token", has_bos)) and has_bos
    return Tokenizer(tok, ids["bos"], ids["eos"], ids["pad"], prepend_bos)
