"""Attribution patching (AtP, AtP*, IG, EAP) against exact patching on hand-built models.

(a) a model whose every path is linear: AtP and EAP equal exact patching; (b) a saturated
attention head: AtP about 0, AtP*'s QK fix exact; (c) a planted cancellation: GradDrop recovers
the node; (d) IG completeness, the error shrinking with steps; plus a directional-derivative
reference on a GQA model and the bad-input errors.
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from core.families import tokens

import jinterp
from jinterp import At, Steer, models
from jinterp.patching import activation, attribution
from jinterp.patching.attr_graph import Node
from jinterp.patching.attribution import attr_patch
from jinterp.patching.eap import eap, eap_ig
from jinterp.patching.sites import SITES


def metric(logits):
    return logits[:, -1, 3].mean() - logits[:, -1, 5].mean()


def _gpt2(key=0, **overrides):
    config = dict(n_layers=2, d_model=16, n_heads=2, d_head=4, d_mlp=None, d_vocab=12, n_ctx=8,
                  normalization="none", tied_embeddings=False, init_range=0.5)
    model = models.GPT2(models.GPT2Config(**(config | overrides)))
    return model, model.init(jax.random.key(key))


def _set(params, path, value):
    out = jax.tree.map(lambda x: x, params)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def linear_model():
    """Attention-only, no norms, zero queries and keys: uniform causal attention, so the
    logits are an affine function of every activation."""
    model, params = _gpt2()
    for w in ("W_Q", "W_K", "b_Q", "b_K"):
        params = _set(params, ("blocks", "attn", w), jnp.zeros_like(params["blocks"]["attn"][w]))
    return model, params


def saturated_model():
    """One layer, one head, huge queries and keys: attention is one-hot; logits are linear in
    the pattern (no final norm)."""
    model, params = _gpt2(key=3, n_layers=1, n_heads=1, d_head=8, init_range=1.0)
    for w in ("W_Q", "W_K"):
        params = _set(params, ("blocks", "attn", w), 4.0 * params["blocks"]["attn"][w])
    return model, params


def cancellation_model(n_pos):
    """Head 0.0 writes ``h`` on direction e0 at every position; head 1.0 reads e0 under uniform
    attention and writes ``-n_pos`` times the mean back, so at the last position the direct
    (+h) and indirect (-h) effects of head 0.0's output there cancel exactly."""
    model, params = _gpt2(key=5, d_model=8, n_heads=1, d_head=8, positional="none",
                          attn_bias=False, init_range=1.0)
    e0 = jnp.zeros(8).at[0].set(1.0)
    attn = params["blocks"]["attn"]
    read = jax.random.normal(jax.random.key(6), (8,)).at[0].set(0.0)
    w_v = jnp.zeros_like(attn["W_V"]).at[0, 0, :, 0].set(read).at[1, 0, :, 0].set(e0)
    w_o = jnp.zeros_like(attn["W_O"]).at[0, 0, 0].set(e0).at[1, 0, 0].set(-n_pos * e0)
    for name, value in (("W_Q", jnp.zeros_like(attn["W_Q"])), ("W_K", jnp.zeros_like(attn["W_K"])),
                        ("W_V", w_v), ("W_O", w_o)):
        params = _set(params, ("blocks", "attn", name), value)
    params = _set(params, ("embed", "W_E"), params["embed"]["W_E"].at[:, 0].set(0.0))
    params = _set(params, ("unembed", "W_U"), jnp.zeros((8, 12)).at[0, 3].set(1.0))
    return model, params


def exact_patching(model, params, corrupt, cache, site):
    """Exact activation patching, the plain path (every position recomputed: one program a
    layer; ``test_activation_patching.py`` checks it against a loop of single patches)."""
    return activation.act_patch(model, params, corrupt, cache, metric, site, suffix_buckets=None)


def _runs(model, params, pos=6, batch=3, changed=None):
    clean = tokens(batch, pos, seed=0, vocab=model.d_vocab)
    corrupt = tokens(batch, pos, seed=1, vocab=model.d_vocab)
    if changed is not None:  # the prompts differ at these positions only
        keep = np.ones(pos, bool)
        keep[list(changed)] = False
        corrupt[:, keep] = clean[:, keep]
    _, cache = jinterp.run_with_cache(model, params, clean)
    return clean, corrupt, cache


def test_linear_paths_atp_and_eap_equal_exact_patching():
    model, params = linear_model()
    clean, corrupt, cache = _runs(model, params)
    base = metric(model(params, corrupt))
    for site in ("resid_pre", "attn_head_v_all_pos"):
        exact = exact_patching(model, params, corrupt, cache, site)
        atp = attr_patch(model, params, corrupt, cache, metric, site)
        assert np.ptp(exact) > 0.1, site
        np.testing.assert_allclose(atp, exact, atol=1e-4, err_msg=site)
        if site == "attn_head_v_all_pos":
            v_exact = exact
    scores = eap(model, params, corrupt, clean, metric)
    matrix = np.asarray(scores.matrix())
    down = scores.downstream
    total = metric(model(params, clean)) - base
    np.testing.assert_allclose(np.nansum(matrix[:, down.index(Node.final())]), total, atol=1e-4)
    for layer in range(2):  # edges into a value input add up to patching that input
        for g in range(2):
            into = np.nansum(matrix[:, down.index(Node.v(layer, g))])
            np.testing.assert_allclose(into, v_exact[layer, g] - base, atol=1e-4)
    assert np.isnan(matrix[scores.upstream.index(Node.head(1, 0)), down.index(Node.q(1, 0))])
    np.testing.assert_allclose(eap_ig(model, params, corrupt, clean, metric, steps=2).scores,
                               scores.scores, atol=1e-4)  # constant gradients


def test_saturated_head_atp_misses_and_qk_fix_matches():
    model, params = saturated_model()
    clean, corrupt, cache = _runs(model, params, batch=4, changed=(2, 5))
    for site in ("attn_head_q_all_pos", "attn_head_k_by_pos"):
        exact = exact_patching(model, params, corrupt, cache, site)
        atp = attr_patch(model, params, corrupt, cache, metric, site)
        fixed = attr_patch(model, params, corrupt, cache, metric, site, method="atp*")
        base = metric(model(params, corrupt))
        effect = np.abs(exact - base).max()
        assert effect > 0.5, site  # patching moves attention a lot
        assert np.abs(atp - base).max() < 0.02 * effect, site  # the softmax gradient is ~0
        np.testing.assert_allclose(fixed, exact, atol=1e-4 * effect, err_msg=site)


def test_grad_drop_recovers_a_cancelling_node():
    n_pos = 6
    model, params = cancellation_model(n_pos)
    clean, corrupt, cache = _runs(model, params, pos=n_pos)
    site = "attn_head_out_by_pos"  # [layer, pos, head]
    exact = exact_patching(model, params, corrupt, cache, site)
    atp = attr_patch(model, params, corrupt, cache, metric, site)
    drop = attr_patch(model, params, corrupt, cache, metric, site, grad_drop=True)
    base = metric(model(params, corrupt))
    _, corrupt_cache = jinterp.run_with_cache(model, params, corrupt)
    z = "blocks.0.attn.hook_z"
    direct = (cache[z] - corrupt_cache[z])[:, -1, 0, 0].mean()  # head 0.0's e0 write, last pos
    assert abs(direct) > 0.1
    np.testing.assert_allclose([exact[0, -1, 0], atp[0, -1, 0]], [base, base], atol=1e-5)
    np.testing.assert_allclose(drop[0, -1, 0], abs(direct), rtol=1e-4)
    assert np.argmax(drop[0, :, 0]) == n_pos - 1  # ranked first in its layer, plain AtP last
    assert np.argmin(np.abs(atp[0, :, 0] - base)) == n_pos - 1


def test_integrated_gradients_completeness():
    model, params = _gpt2(key=2, n_layers=1, normalization="layernorm", init_range=0.3)
    clean, corrupt, cache = _runs(model, params, pos=6, batch=2)
    total = metric(model(params, clean)) - metric(model(params, corrupt))
    base = metric(model(params, corrupt))
    errors = []
    for steps in (2, 8):
        ig = attr_patch(model, params, corrupt, cache, metric, "resid_pre", method="ig",
                        steps=steps, chunk_size=4)
        errors.append(np.abs((ig - base).sum(-1) - total).max())  # every layer, all positions
    assert errors[1] < errors[0] / 3 and errors[1] < 0.01 * abs(total), errors


def test_atp_is_the_directional_derivative_on_kv_heads():
    """AtP of k by position on a GQA model equals d/de M(k + e * delta at the node), computed by
    jax.grad through run_with_hooks, node by node."""
    model = models.Llama(models.LlamaConfig(n_layers=1, d_model=16, n_heads=4, n_kv_heads=2,
                                            d_head=4, d_mlp=24, d_vocab=12))

    @jax.jit  # one program, not one per leaf's draw
    def perturbed_init():
        leaves, treedef = jax.tree.flatten(model.init(jax.random.key(0)))
        keys = jax.random.split(jax.random.key(1), len(leaves))
        return jax.tree.unflatten(treedef, [x + 0.3 * jax.random.normal(k, x.shape)
                                            for x, k in zip(leaves, keys)])

    params = perturbed_init()
    clean, corrupt, cache = _runs(model, params, pos=5, batch=2)
    site = SITES["attn_head_k_by_pos"]
    atp = attr_patch(model, params, corrupt, cache, metric, site)
    _, corrupt_cache = jinterp.run_with_cache(model, params, corrupt)
    delta = cache.stack(site.point) - corrupt_cache.stack(site.point)  # layer b p kv d
    n_nodes = site.n_nodes(model, 5)

    @jax.jit
    def derivative(params, index):
        layer, node = index // n_nodes, index % n_nodes
        vector = jnp.take(delta, layer, axis=0) * site.node_mask(model, 5, node)
        hooks = lambda e: {site.point: At(layer, Steer(vector, scale=e))}
        return jax.grad(lambda e: metric(jinterp.run_with_hooks(model, params, corrupt,
                                                                hooks(e))))(0.0)

    want = jax.vmap(derivative, (None, 0))(params, jnp.arange(n_nodes))
    base = metric(model(params, corrupt))
    assert atp.shape == (1, 5, 2)  # kv heads
    assert np.abs(want).max() > 1e-2
    np.testing.assert_allclose(atp - base, want.reshape(atp.shape), rtol=1e-4, atol=1e-5)


def test_every_act_patch_has_a_twin():
    for name in dir(activation):
        if name.startswith("get_act_patch_"):
            twin = getattr(attribution, name.replace("get_act_", "get_attr_"))
            act = inspect.signature(getattr(activation, name)).parameters
            attr = inspect.signature(twin).parameters
            assert list(attr)[:5] == list(act)[:5] and "method" in attr and "steps" in attr


def test_bad_input():
    model, params = linear_model()
    clean, corrupt, cache = _runs(model, params)
    with pytest.raises(ValueError, match="Unknown attribution method 'exact'"):
        attr_patch(model, params, corrupt, cache, metric, "resid_pre", method="exact")
    with pytest.raises(ValueError, match="steps=0"):
        attr_patch(model, params, corrupt, cache, metric, "resid_pre", method="ig", steps=0)
    with pytest.raises(ValueError, match="Unknown patching site 'resid_pree'.*resid_pre"):
        attr_patch(model, params, corrupt, cache, metric, "resid_pree")
    with pytest.raises(ValueError, match="scalar"):
        attr_patch(model, params, corrupt, cache, lambda lg: lg[:, -1, 0], "resid_pre")
    with pytest.raises(KeyError, match="hook_resid_pre"):
        attr_patch(model, params, corrupt, {}, metric, "resid_pre")
    with pytest.raises(ValueError, match="same"):
        attr_patch(model, params, corrupt[:, :4], cache, metric, "resid_pre")
    with pytest.raises(ValueError, match="grad_drop"):
        attr_patch(model, params, corrupt, cache, metric, "resid_pre", method="ig",
                   grad_drop=True)
    with pytest.raises(ValueError, match="chunk_size=0"):
        attr_patch(model, params, corrupt, cache, metric, "resid_pre", chunk_size=0)
    with pytest.raises(ValueError, match="same shape"):
        eap(model, params, corrupt, clean[:1], metric)
    with pytest.raises(ValueError, match="steps"):
        eap_ig(model, params, corrupt, clean, metric, steps=0)
