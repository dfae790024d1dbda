"""load_tokenizer: local tokenizer.json + special tokens, BOS handled explicitly, batches padded."""

import json

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, pre_tokenizers, processors, trainers
from tokenizers import models as tok_models

from jinterp import models

CORPUS = ["the cat sat on the mat", "a dog ran after the cat", "attention is all you need",
          "sparse autoencoders find features", "héllo wörld ✓"]


def build(directory, post_processor: bool, tokenizer_config: dict | None,
          config: dict | None = None):
    tok = Tokenizer(tok_models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<eos>", "<bos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    if post_processor:  # as Llama 3's and Gemma's tokenizer.json: BOS added by the file itself
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A",
                                                           special_tokens=[("<bos>", 2)])
    directory.mkdir()
    tok.save(str(directory / "tokenizer.json"))
    if tokenizer_config is not None:
        (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    if config is not None:
        (directory / "config.json").write_text(json.dumps(config))
    return tok


SPECIALS = {"bos_token": "<bos>", "eos_token": {"content": "<eos>"}, "pad_token": "<pad>"}


def test_bos_matches_the_files_own_post_processor(tmp_path):
    raw = build(tmp_path / "t", post_processor=True, tokenizer_config=SPECIALS)
    tok = models.load_tokenizer(tmp_path / "t")
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.prepend_bos) == (2, 1, 0, True)
    for text in CORPUS:
        ids = tok.encode(text)
        assert ids.dtype == np.int32
        np.testing.assert_array_equal(ids, raw.encode(text, add_special_tokens=True).ids)
        np.testing.assert_array_equal(tok.encode(text, prepend_bos=False),
                                      raw.encode(text, add_special_tokens=False).ids)
        assert tok.decode(ids, skip_special_tokens=True) == text
    assert "".join(tok.to_str_tokens("the cat", prepend_bos=False)) == "the cat"


def test_bos_prepended_even_without_a_post_processor(tmp_path):
    raw = build(tmp_path / "t", post_processor=False, tokenizer_config=None,
                config={"bos_token_id": 2, "eos_token_id": [1]})
    tok = models.load_tokenizer(tmp_path / "t")
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (2, 1, None)
    np.testing.assert_array_equal(tok.encode("the mat"), [2] + raw.encode("the mat").ids)


def test_add_bos_token_false_is_respected_and_overridable(tmp_path):
    build(tmp_path / "t", post_processor=False,
          tokenizer_config=SPECIALS | {"add_bos_token": False})
    tok = models.load_tokenizer(tmp_path / "t")
    assert not tok.prepend_bos and tok.encode("a dog")[0] != 2
    assert tok.encode("a dog", prepend_bos=True)[0] == 2
    assert models.load_tokenizer(tmp_path / "t", prepend_bos=True).encode("a dog")[0] == 2


def test_batches_are_right_padded_with_lengths(tmp_path):
    build(tmp_path / "t", post_processor=False, tokenizer_config=SPECIALS)
    tok = models.load_tokenizer(tmp_path / "t")
    texts = ["the cat", "attention is all you need", "a"]
    tokens, lengths = tok.to_tokens(texts, return_lengths=True)
    assert tokens.shape == (3, lengths.max()) and tokens.dtype == np.int32
    for row, n, text in zip(tokens, lengths, texts):
        np.testing.assert_array_equal(row[:n], tok.encode(text))
        assert np.all(row[n:] == tok.pad_id)
    assert tok.batch_decode(tokens, skip_special_tokens=True) == texts
    assert tok.to_tokens("the cat").shape == (1, len(tok.encode("the cat")))


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        models.load_tokenizer(tmp_path)
    build(tmp_path / "t", post_processor=False, tokenizer_config={})
    tok = models.load_tokenizer(tmp_path / "t")
    assert tok.bos_id is None and not tok.prepend_bos
    with pytest.raises(ValueError, match="no BOS"):
        tok.encode("the", prepend_bos=True)
    with pytest.raises(ValueError, match="no BOS"):
        models.load_tokenizer(tmp_path / "t", prepend_bos=True)
    with pytest.raises(ValueError, match=r"\[batch, pos\]"):
        tok.decode(np.zeros((2, 3), np.int32))
