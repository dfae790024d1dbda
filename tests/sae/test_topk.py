"""Fast TopK: sparse VJPs equal jax.grad of the dense implementations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jinterp import sae
from jinterp.sae import topk

B, D_IN, D_SAE, D, K = 9, 7, 24, 5, 4


@pytest.fixture(params=["loop", "dense"])
def slot_path(request, monkeypatch):
    """Run every test through both implementations of the sparse helpers (the k-slot loop and
    the dense fallback used when k is a large fraction of d_sae)."""
    monkeypatch.setattr(topk, "DENSE_SLOT_FRACTION", 1.0 if request.param == "loop" else 0.0)
    return request.param


def rand(seed, shape):
    # numpy data: each shape given to jax.random.normal compiles the PRNG (~0.5 s)
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


@pytest.mark.usefixtures("slot_path")
def test_sparse_decode_matches_dense_value_and_grads():
    vals = rand(0, (B, K))
    rng = np.random.default_rng(1)
    idx = jnp.asarray(np.stack([rng.permutation(D_SAE)[:K] for _ in range(B)]))  # [B, K]
    w = rand(2, (D_SAE, D))
    cot = rand(3, (B, D))

    def obj(fn):
        objective = lambda v, w: jnp.sum(fn(v, idx, w) * cot)
        return jax.jit(jax.value_and_grad(objective, argnums=(0, 1)))

    v_s, (gv_s, gw_s) = obj(topk.sparse_decode)(vals, w)
    v_d, (gv_d, gw_d) = obj(topk.dense_decode)(vals, w)
    np.testing.assert_allclose(v_s, v_d, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gv_s, gv_d, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gw_s, gw_d, rtol=1e-5, atol=1e-5)
    untouched = np.setdiff1d(np.arange(D_SAE), np.asarray(idx).ravel())
    assert untouched.size and np.all(np.asarray(gw_s)[untouched] == 0)


@pytest.mark.usefixtures("slot_path")
@pytest.mark.parametrize("with_aux", [False, True])
def test_topk_encode_matches_dense_value_and_grads(with_aux):
    x, w, b = rand(4, (B, D_IN)), rand(5, (D_IN, D_SAE)), rand(6, (D_SAE,))
    mask = (jnp.arange(D_SAE) % 3 == 0) if with_aux else None
    n_aux = 3 if with_aux else 0
    width = K + n_aux
    cot = rand(7, (B, width))

    def dense(x, w, b):
        pre = x @ w + b[None, :]
        v, i = jax.lax.top_k(pre, K)
        if with_aux:
            va, ia = jax.lax.top_k(jnp.where(mask[None, :], pre, -jnp.inf), n_aux)
            v, i = jnp.concatenate([v, va], -1), jnp.concatenate([i, ia], -1)
        return v, i

    def obj(fn):
        def f(x, w, b):
            v, i = fn(x, w, b)
            return jnp.sum(jax.nn.relu(v) * cot), i
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))

    (v_s, i_s), g_s = obj(lambda x, w, b: topk.topk_encode(x, w, b, K, mask, n_aux))(x, w, b)
    (v_d, i_d), g_d = obj(dense)(x, w, b)
    np.testing.assert_array_equal(i_s, i_d)
    np.testing.assert_allclose(v_s, v_d, rtol=1e-5)
    for a, c in zip(g_s, g_d):
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)


def _dense_topk_loss(cfg, params, x, dead):
    """The obvious TopK + AuxK loss: dense codes, dense matmuls, autodiff through top_k."""
    pre = (x - params["b_dec"][None, :]) @ params["W_enc"] + params["b_enc"][None, :]
    v, i = jax.lax.top_k(pre, cfg.k)
    f = jnp.zeros_like(pre).at[jnp.arange(x.shape[0])[:, None], i].set(jax.nn.relu(v))
    x_hat = f @ params["W_dec"] + params["b_dec"][None, :]
    mse = jnp.mean(jnp.sum((x - x_hat) ** 2, -1))
    va, ia = jax.lax.top_k(jnp.where(dead[None, :], pre, -jnp.inf), cfg.aux_k_effective)
    z = jnp.zeros_like(pre).at[jnp.arange(x.shape[0])[:, None], ia].set(jax.nn.relu(va))
    e = jax.lax.stop_gradient(x - x_hat)
    aux = jnp.mean(jnp.sum((e - z @ params["W_dec"]) ** 2, -1))
    return mse + cfg.aux_k_coefficient * aux


@pytest.mark.usefixtures("slot_path")
def test_topk_architecture_gradients_equal_dense_reference():
    cfg = sae.SAEConfig("topk", d_in=D_IN, d_sae=D_SAE, k=K, aux_k=5)
    params = sae.init(cfg, jax.random.key(0))
    params = dict(params, b_dec=rand(8, (D_IN,)) * 0.1, b_enc=rand(9, (D_SAE,)) * 0.1)
    x = rand(10, (B, D_IN))
    dead = jnp.arange(D_SAE) % 2 == 1
    ctx = sae.LossContext(dead_mask=dead)
    fast = jax.jit(jax.value_and_grad(lambda p: sae.loss(cfg, p, x, ctx=ctx)[0]))(params)
    ref = jax.jit(jax.value_and_grad(lambda p: _dense_topk_loss(cfg, p, x, dead)))(params)
    np.testing.assert_allclose(fast[0], ref[0], rtol=1e-5)
    for name in params:
        np.testing.assert_allclose(fast[1][name], ref[1][name], rtol=1e-5, atol=1e-5, err_msg=name)


def test_sparse_paths_contain_no_dense_matmul_over_d_sae():
    """The backward of the fast path must not multiply a [batch, d_sae] matrix by W_enc^T/W_dec."""
    b, d_sae, d, k = 64, 4096, 32, 4  # k << d_sae / 64: the default picks the k-slot loop
    assert not topk._prefer_dense(k, d_sae)
    vals = jnp.ones((b, k))
    idx = jnp.tile(jnp.arange(k), (b, 1))
    w = jnp.ones((d_sae, d))
    hlo = jax.jit(jax.grad(lambda v, w: jnp.sum(topk.sparse_decode(v, idx, w)), argnums=(0, 1))
                  ).lower(vals, w).as_text()
    assert f"{b}x{d_sae}" not in hlo
    x, w_enc, b_enc = jnp.ones((b, d)), jnp.ones((d, d_sae)), jnp.zeros(d_sae)
    objective = lambda x, w: jnp.sum(topk.topk_encode(x, w, b_enc, k)[0])
    hlo = jax.jit(jax.grad(objective, argnums=(0, 1))).lower(x, w_enc).as_text()
    # The forward has one [b, d_sae] pre-activation; no other matmul may touch a [b, d_sae] array.
    dots = [line for line in hlo.splitlines() if "dot_general" in line]
    assert len(dots) == 1 and f"tensor<{b}x{d_sae}x" in dots[0]  # the forward x @ W_enc only
