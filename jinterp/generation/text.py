"""Text in, text out: :func:`generate_text` encodes a prompt, streams, decodes as it goes.

The tokenizer is duck-typed (``jinterp`` never imports ``jinterp.models``): anything with
``encode(text) -> ids`` and ``decode(ids) -> str``, such as ``jinterp.models.load_tokenizer``'s
:class:`~jinterp.models.Tokenizer` (whose ``eos_id`` is used to stop). Text is decoded from all
new tokens so far and the callback gets what was added, so a character split over two tokens
(byte-level BPE) arrives whole.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from jinterp.generation.decode import stream
from jinterp.hooks import Hooks
from jinterp.model import HookedModel


def generate_text(model: HookedModel, params, tokenizer, prompt: str, max_new_tokens: int,
                  hooks: Hooks = None, *, on_text: Callable[[str], object] | None = None,
                  chunk: int = 16, stop_at_eos: bool = True, prepend_bos: bool | None = None,
                  **options) -> str:
    """The continuation of ``prompt`` (the new text only).

    Args:
        tokenizer: ``encode`` / ``decode`` (e.g. ``jinterp.models.load_tokenizer(path)``).
        prompt: one string.
        max_new_tokens: at most this many new tokens.
        hooks: as :func:`jinterp.generate` (and ``hooks_on`` among ``options``).
        on_text: called with each new piece of text as it is decoded (every ``chunk`` tokens).
        stop_at_eos: stop at the tokenizer's ``eos_id`` (the EOS is not part of the text);
            generation stops after the chunk that produced it.
        prepend_bos: passed to ``tokenizer.encode`` when given.
        **options: :func:`jinterp.generate`'s keywords (``temperature``, ``top_k``, ``top_p``,
            ``key``, ``hooks_on``).
    """
    if not isinstance(prompt, str):
        raise TypeError(f"generate_text takes one prompt string, got {type(prompt).__name__}; "
                        "for a batch, tokenize with padding and call jinterp.generate.")
    ids = (tokenizer.encode(prompt) if prepend_bos is None
           else tokenizer.encode(prompt, prepend_bos=prepend_bos))
    ids = np.asarray(ids, np.int32)[None]  # 1 pos
    eos = getattr(tokenizer, "eos_id", None) if stop_at_eos else None
    new: list[int] = []
    text = ""
    for piece in stream(model, params, ids, max_new_tokens, hooks, chunk=chunk,
                        eos_token_id=eos, **options):
        piece = [int(t) for t in np.asarray(piece)[0]]
        stop = eos is not None and eos in piece
        new += piece[:piece.index(eos)] if stop else piece
        decoded = tokenizer.decode(np.asarray(new, np.int32))
        if on_text is not None and len(decoded) > len(text):
            on_text(decoded[len(text):])
        text = decoded
        if stop:
            break
    return text
