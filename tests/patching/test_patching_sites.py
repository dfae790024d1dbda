"""The site table: node masks, node sums and the ``*_every`` layout, on shapes alone."""

import jax.numpy as jnp
import numpy as np
import pytest
from core.families import family

from jinterp import models
from jinterp.patching import EVERY, SITES, get_site, stack_every


def test_node_masks_select_one_node_and_to_nodes_inverts_them():
    model, _ = family("llama")
    n_pos = 3
    for site in map(get_site, ("resid_pre", "attn_head_k_by_pos", "attn_head_pattern_by_pos",
                               "attn_head_pattern_dest_src_pos")):
        shape = site.node_shape(model, n_pos)
        axes = site.axes(model)
        full = tuple(2 if a == "batch" else n_pos if "pos" in a else model.dims[a] for a in axes)
        for index in (0, site.n_nodes(model, n_pos) - 1):
            mask = np.broadcast_to(site.node_mask(model, n_pos, index), full)
            counts = np.asarray(site.to_nodes(model, jnp.asarray(mask, jnp.float32)))
            assert counts.shape == shape, site.name
            expected = np.zeros(shape)
            expected[np.unravel_index(index, shape)] = mask.sum()
            np.testing.assert_array_equal(counts, expected)
    assert get_site("attn_head_k_by_pos").node_shape(model, n_pos) == (n_pos, 2)  # kv heads


def test_stack_every_layout():
    model, _ = family("llama")  # 4 query heads, 2 kv heads
    n_layers, n_pos = model.n_layers, 3
    results = [jnp.asarray(np.random.default_rng(i).normal(size=SITES[s].result_shape(
        model, n_pos))) for i, s in enumerate(EVERY["attn_head_by_pos_every"])]
    out = stack_every(model, "attn_head_by_pos_every", results)
    assert out.shape == (5, n_layers, n_pos, 4)
    np.testing.assert_array_equal(out[2][..., 1], results[2][..., 0])  # kv head 0 serves 0, 1
    np.testing.assert_array_equal(out[2][..., 2], results[2][..., 1])
    np.testing.assert_array_equal(out[4], np.swapaxes(results[4], 1, 2))  # [layer, dest, head]


def test_unknown_site_names_the_closest():
    with pytest.raises(ValueError, match="Closest: \\['resid_pre'"):
        get_site("resid_pr")
    attn_only = models.GPT2(models.GPT2Config(n_layers=1, d_model=8, n_heads=2, d_head=4,
                                              d_mlp=None, d_vocab=5, n_ctx=4))
    with pytest.raises(ValueError, match="does not compute"):
        get_site("mlp_out").node_shape(attn_only, 3)
