"""Streaming and text: chunks equal one-shot generation; text decodes them and stops at EOS."""

import jax
import numpy as np
from tiny import N_NEW, PROMPT, SAMPLING, gpt2, prompt_tokens, tokenizer

import jinterp
from jinterp.generation import stream


def test_stream_chunks_equal_generate_and_text_stops_at_eos():
    model, params = gpt2()
    tokens = prompt_tokens()
    n_prompt = tokens.shape[1]
    key = jax.random.key(7)
    full = np.asarray(jinterp.generate(model, params, tokens, N_NEW, key=key, **SAMPLING))
    new = full[0, n_prompt:]
    pieces = list(stream(model, params, tokens, N_NEW, chunk=4, key=key, **SAMPLING))
    assert [p.shape[1] for p in pieces] == [1, 4, 4]
    np.testing.assert_array_equal(np.concatenate([np.asarray(p) for p in pieces], 1)[0], new)
    # Text with an EOS that the continuation produces at its fourth token: the text is what
    # comes before it, and the streamed pieces add up to it.
    eos = int(new[3])
    stop = int(np.argmax(new == eos))
    tok = tokenizer(eos_id=eos)
    seen: list[str] = []
    text = jinterp.generate_text(model, params, tok, PROMPT, N_NEW, on_text=seen.append, chunk=4,
                                 key=key, **SAMPLING)
    assert text == tok.decode(new[:stop])
    assert "".join(seen) == text and len(text) > 0
    # No EOS: the whole continuation.
    text = jinterp.generate_text(model, params, tokenizer(eos_id=None), PROMPT, N_NEW, chunk=4,
                                 key=key, **SAMPLING)
    assert text == tokenizer().decode(new)
