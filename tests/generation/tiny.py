"""A tiny byte-level BPE tokenizer and a random GPT-2 of its vocabulary (no HF model needed).

Shared by the sampling and text tests so they compile the same generation programs (same
model, prompt shape and sampling rule).
"""

import functools

import jax
import numpy as np
from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
from tokenizers import models as tok_models

from jinterp import models

CORPUS = ["the cat sat on the mat", "a dog ran after the cat", "attention is all you need",
          "sparse autoencoders find features", "héllo wörld ✓"]
PROMPT = "the cat sat"
SAMPLING = dict(temperature=0.8, top_k=6, top_p=0.9)
N_NEW = 9


@functools.cache
def raw_tokenizer() -> Tokenizer:
    tok = Tokenizer(tok_models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<eos>", "<bos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def tokenizer(eos_id: int | None = 1) -> models.Tokenizer:
    """The project's tokenizer wrapper around :func:`raw_tokenizer` (no BOS)."""
    return models.Tokenizer(raw_tokenizer(), bos_id=2, eos_id=eos_id, pad_id=0,
                            prepend_bos=False)


@functools.cache
def gpt2():
    """A random 2-layer GPT-2 over the tokenizer's vocabulary; weights scaled so its
    next-token distributions are far from uniform."""
    vocab = raw_tokenizer().get_vocab_size(with_added_tokens=True)
    model = models.GPT2(models.GPT2Config(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64,
                                          d_vocab=vocab, n_ctx=32, tied_embeddings=False))
    params = jax.tree.map(lambda x: 6 * x if x.ndim >= 2 else x, model.init(jax.random.key(3)))
    return model, params


def prompt_tokens() -> np.ndarray:
    """``[1, pos]`` ids of :data:`PROMPT`."""
    return tokenizer().encode(PROMPT)[None]
