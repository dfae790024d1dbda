"""The activation store and token sources: rows are the model's activations, each kept token
once, mixed across forwards; sources replay by index; bad input names the fix."""

import json
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from families import family  # noqa: E402

import jinterp  # noqa: E402
from jinterp.sae.sources import SyntheticTokenSource, TokenArraySource, text_source  # noqa: E402
from jinterp.sae.store import ActivationStore  # noqa: E402

RESID, Z = "blocks.1.hook_resid_post", "blocks.0.attn.hook_z"


def test_store_serves_every_kept_token_once_across_hooks_and_heads():
    model, params = family("gpt2")
    tokens = np.random.default_rng(0).integers(1, 61, (24, 8))
    tokens[:, 0], tokens[:, 1] = 0, np.arange(1, 25)  # BOS, then distinct prefixes
    src = TokenArraySource(tokens, 2, shuffle=False)  # distinct rows: each matches one token
    store = ActivationStore(model, [RESID, Z, Z + ":1"], src, batch_size=8, buffer_batches=3,
                            exclude_ids=(0,), seed=1)
    assert store.stop_at_layer == 2 and store.widths == {RESID: 32, Z: 32, Z + ":1": 8}
    state, fill, nb, popped = store.init(), 0, 0, []
    for _ in range(6):
        batch, state, fill, nb = store.next_batch(params, state, fill, nb)
        popped.append({k: np.asarray(v) for k, v in batch.items()})
    assert (fill, nb) == (int(state.fill), int(state.next_batch))  # host mirror == device
    # reference: the whole forward of every token batch read, BOS positions dropped
    _, cache = jinterp.run_with_cache(model, params, np.concatenate(
        [src.batch(i) for i in range(nb)]), names=[RESID, Z])
    ref = np.asarray(cache[RESID])[:, 1:].reshape(-1, 32)
    ref_z = np.asarray(cache[Z])[:, 1:].reshape(-1, 4, 8)
    got = np.concatenate([p[RESID] for p in popped])
    dist = np.square(got[:, None] - ref[None]).sum(-1)
    idx = dist.argmin(1)
    assert dist.min(1).max() < 1e-9 and len(set(idx.tolist())) == len(idx)  # each token once
    np.testing.assert_allclose(np.concatenate([p[Z] for p in popped]),
                               ref_z[idx].reshape(-1, 32), atol=1e-6)  # same token, all heads
    np.testing.assert_allclose(np.concatenate([p[Z + ":1"] for p in popped]), ref_z[idx, 1],
                               atol=1e-6)
    forward_of = idx // 14  # 2 sequences x 7 kept positions per forward
    assert max(len(set(forward_of[i:i + 8])) for i in range(0, len(idx), 8)) >= 3  # mixed


def test_token_array_source_replays_covers_epochs_and_holds_out(tmp_path):
    tokens = np.arange(60, dtype=np.int32) % 50
    np.save(tmp_path / "t.npy", tokens)
    src = TokenArraySource(tmp_path / "t.npy", 2, seq_len=6, seed=3, d_vocab=50, held_out=2)
    assert src.batches_per_epoch == 4  # 10 windows, 2 held out, batches of 2
    epoch = np.concatenate([src.batch(i) for i in range(4)])
    windows = tokens.reshape(10, 6)
    assert sorted(map(tuple, epoch)) == sorted(map(tuple, windows[:8]))  # each once
    np.testing.assert_array_equal(src.batch(2), src.batch(2))  # pure in the index
    assert not np.array_equal(src.batch(4), src.batch(0))  # next epoch, new order
    np.testing.assert_array_equal(src.held_out_tokens(), windows[8:])
    for index, rows in ((1, slice(0, 1)), (1, slice(1, 2)), (5, slice(0, 2))):
        np.testing.assert_array_equal(src.batch_rows(index, rows), src.batch(index)[rows])
    with pytest.raises(ValueError, match=r"ids in \[0, 49\].*vocabulary \[0, 40\).*re-tokenise"):
        TokenArraySource(tmp_path / "t.npy", 2, seq_len=6, d_vocab=40)
    with pytest.raises(ValueError, match="seq_len"):
        TokenArraySource(tokens, 2)


def test_text_source_packs_documents_with_bos(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    words = ["<bos>", "<eos>", "a", "b", "c", "d"]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)},
                                                           unk_token="a"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<bos>", "eos_token": "<eos>", "add_bos_token": True}))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "1.txt").write_text("a b c d a b")
    (tmp_path / "docs" / "2.txt").write_text("d d c")
    load_tokenizer = __import__("jinterp.models", fromlist=["load_tokenizer"]).load_tokenizer
    src = text_source(tmp_path / "docs", load_tokenizer(tmp_path), 2, 4, shuffle=False)
    # stream a b c d a b <eos> d d c <eos> -> windows of 3 after BOS
    np.testing.assert_array_equal(src.batch(0), [[0, 2, 3, 4], [0, 5, 2, 3]])
    np.testing.assert_array_equal(src.batch(1), [[0, 2, 3, 4], [0, 5, 2, 3]])  # 1 batch/epoch


def test_store_bad_input_names_the_fix():
    model, params = family("gpt2")
    src = SyntheticTokenSource(61, 2, 8)
    with pytest.raises(KeyError, match="closest names.*blocks.1.hook_resid_post"):
        ActivationStore(model, "blocks.1.hook_resid_pots", src, batch_size=4)
    with pytest.raises(ValueError, match="no head axis"):
        ActivationStore(model, RESID + ":2", src, batch_size=4)
    with pytest.raises(ValueError, match=r"head=7 is outside \[0, 4\)"):
        ActivationStore(model, Z + ":7", src, batch_size=4)
    store = ActivationStore(model, RESID, src, batch_size=4)
    with pytest.raises(ValueError, match=r"shape \(1, 8\).*\(2, 8\)"):
        store.push(params, store.init(), jnp.zeros((1, 8), jnp.int32))
