"""Bad input gets a clear error naming the problem and the fix."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from helpers import small_model, tokens

import jinterp
from jinterp import Patch, Steer, models


def test_token_ids_out_of_range():
    model, params = small_model()
    with pytest.raises(ValueError, match=r"\[0, 50\).*\[0, 50\]"):
        model(params, np.array([[0, 1, 50]]))
    with pytest.raises(ValueError, match=r"\[-1, 3\]"):
        jinterp.run_with_cache(model, params, np.array([[-1, 3]]))


def test_sequence_longer_than_context():
    model, params = small_model()
    with pytest.raises(ValueError, match="exceeds the model's context n_ctx=16"):
        model(params, tokens(1, 17))


def test_wrong_rank_and_dtype():
    model, params = small_model()
    with pytest.raises(ValueError, match=r"\[batch, pos\].*tokens\[None\]"):
        model(params, np.arange(5))
    with pytest.raises(TypeError, match="integer token ids; got dtype float32"):
        model(params, np.zeros((1, 4), np.float32))


def test_unknown_hook_name_lists_closest_names():
    model, params = small_model()
    with pytest.raises(KeyError, match=r"Closest valid names: \['blocks.1.attn.hook_z'"):
        jinterp.run_with_hooks(model, params, tokens(), {"blocks.1.attn.hook_zz": lambda x: x})
    with pytest.raises(KeyError, match="blocks.2.hook_resid_post"):
        jinterp.run_with_cache(model, params, tokens(), names=["blocks.2.hook_resid_pots"])
    with pytest.raises(KeyError, match="Unknown activation name 'blocks.9.hook_resid_pre'"):
        jinterp.run_with_cache(model, params, tokens(), names="blocks.9.hook_resid_pre")


def test_intervention_shape_mismatch_names_both_shapes():
    model, params = small_model()
    with pytest.raises(ValueError, match=r"shape \(7,\) does not broadcast to the activation's "
                                         r"shape \(2, 10, 32\)"):
        jinterp.run_with_hooks(model, params, tokens(),
                               {"blocks.0.hook_resid_pre": Steer(jnp.ones(7))})
    with pytest.raises(ValueError, match=r"`head` mask has shape \(3,\).*size 4"):
        jinterp.run_with_hooks(
            model, params, tokens(),
            {"blocks.0.attn.hook_z": Patch(jnp.zeros(()), head=jnp.ones(3, bool))})
    with pytest.raises(ValueError, match="no head axis"):
        jinterp.run_with_hooks(model, params, tokens(),
                               {"blocks.0.hook_resid_pre": Patch(jnp.zeros(()), head=1)})
    with pytest.raises(ValueError, match=r"returned shape \(2, 10\).*\(2, 10, 32\)"):
        jinterp.run_with_hooks(model, params, tokens(),
                               {"blocks.1.hook_resid_pre": lambda x: x.sum(-1)})
    with pytest.raises(TypeError, match="must be a function"):
        jinterp.run_with_hooks(model, params, tokens(), {"blocks.1.hook_resid_pre": 3})


def _saved_gpt2(tmp_path):
    cfg = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=20, n_positions=8,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path)
    return tmp_path


def test_checkpoint_tensor_shape_mismatch_names_tensor_and_shapes(tmp_path):
    path = _saved_gpt2(tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["n_inner"] = 48  # weights were saved with d_mlp 64
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"'h.0.mlp.c_fc.weight' has shape \(16, 64\).*\(16, 48\)"):
        models.load_pretrained(path)


def test_checkpoint_missing_tensor_and_unsupported_model_type(tmp_path):
    from safetensors.numpy import load_file, save_file

    path = _saved_gpt2(tmp_path)
    tensors = load_file(path / "model.safetensors")
    del tensors["transformer.ln_f.bias"]
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(KeyError, match="missing tensor 'ln_f.bias'"):
        models.load_pretrained(path)
    config = json.loads((path / "config.json").read_text())
    config["model_type"] = "mamba"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="Unsupported model_type 'mamba'; supported: .*'gpt2'"):
        models.load_pretrained(path)


def test_pickle_only_checkpoint_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ValueError, match="never unpickles"):
        models.load_pretrained(tmp_path)


def test_bad_config_values():
    with pytest.raises(ValueError, match="activation='swish' is not one of"):
        models.GPT2Config(activation="swish")
    with pytest.raises(ValueError, match="tied unembedding has no bias"):
        models.GPT2Config(unembed_bias=True)
    with pytest.raises(ValueError, match="Unknown GPT-2 preset 'gpt3'"):
        models.GPT2Config.preset("gpt3")
