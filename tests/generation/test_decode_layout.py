"""The decode loop's per-layer weights: one buffer per layer, head weights stored transposed.

``jinterp.generate`` runs its steps' blocks as a Python loop over per-layer buffers
(:func:`jinterp.loop.split_layers`) instead of a scan over stacked weights, with the head
weights stored in the order a one-token matmul reads them (so XLA copies no weight per step).
The values must not change: the loop with hooks and captures equals the scan (to float rounding:
the matmuls read the weights in another order), and the
head weights are really stored transposed (else the speed-up is gone silently).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from core.families import family, tokens

import jinterp
from jinterp.loop import Relaid, run_model, split_layers
from jinterp.run import _rebuild, prepare


@pytest.mark.parametrize("name", ["gpt2", "gemma2"])
def test_per_layer_loop_equals_the_scan_with_hooks_and_captures(name):
    model, params = family(name)
    toks = jnp.asarray(tokens(2, 5, 0))
    hooks = {"blocks.1.hook_resid_post": jinterp.Steer(jnp.ones(model.d_model)),
             "blocks.2.attn.hook_z": lambda z, hook: 0.5 * z}
    names = ["blocks.0.mlp.hook_post", "blocks.2.attn.hook_pattern"]
    prep = prepare(model, params, toks, names, hooks, None, None)
    data = _rebuild((prep.treedef, prep.static_leaves), prep.leaves)

    def run(per_layer):
        return run_model(model, prep.plan, params, prep.inputs, data["top"], data["groups"],
                         per_layer=per_layer)

    logits, _, stacked = jax.jit(lambda: run(None))()
    logits_loop, _, stacked_loop = jax.jit(lambda: run(split_layers(model, params)))()
    np.testing.assert_allclose(logits_loop, logits, rtol=1e-5, atol=1e-5)
    for point in stacked:
        np.testing.assert_allclose(stacked_loop[point], stacked[point], rtol=1e-5, atol=1e-5)


def test_head_weights_are_stored_transposed_and_restore_exactly():
    model, params = family("llama")
    layers = split_layers(model, params)
    attn = layers[1]["params"]["attn"]
    for key in ("W_Q", "W_K", "W_V", "W_O"):
        assert isinstance(attn[key], Relaid), key
        np.testing.assert_array_equal(attn[key].restore(), params["blocks"]["attn"][key][1])
    assert not isinstance(layers[1]["params"]["mlp"]["W_in"], Relaid)  # already matmul order
