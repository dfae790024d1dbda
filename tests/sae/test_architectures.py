"""Architectures: shapes, encode semantics and loss formulas against slow numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jinterp import sae
from jinterp.sae.architectures import jumprelu as jumprelu_mod

D_IN, D_SAE, K = 6, 16, 3
KW = {
    "relu": {},
    "topk": {"k": K},
    "batchtopk": {"k": K},
    "jumprelu": {},
    "gated": {},
    "matryoshka": {"k": K, "matryoshka_prefixes": (4, 8)},
    "switch": {"k": K, "n_experts": 4},
}


def make(arch, seed=0, **extra):
    cfg = sae.SAEConfig(arch, d_in=D_IN, d_sae=D_SAE, **{**KW[arch], **extra})
    params = sae.init(cfg, jax.random.key(seed))
    # Random biases/thresholds so the references exercise every term (init leaves them 0).
    rng = np.random.default_rng(seed + 100)
    params = {name: value + 0.1 * jnp.asarray(rng.normal(size=value.shape), jnp.float32)
              if name.startswith("b_") or name in ("r_mag",) else value
              for name, value in sorted(params.items())}
    if arch == "jumprelu":
        thresholds = np.random.default_rng(7).uniform(0.05, 0.4, D_SAE).astype(np.float32)
        params["log_threshold"] = jnp.log(thresholds)
    if arch in ("batchtopk", "matryoshka"):
        params["threshold"] = jnp.asarray(0.2)
    return cfg, params


# jit everything: eager op-by-op dispatch dominates the run time of these tiny tests.
loss = jax.jit(sae.loss, static_argnums=0)
encode = jax.jit(sae.encode, static_argnums=0)
forward = jax.jit(sae.forward, static_argnums=0)


def grad_of(cfg, x, key="loss", **kw):
    """Jitted gradient of one metric of the loss w.r.t. the params."""
    return jax.jit(jax.grad(lambda q: sae.loss(cfg, q, x, **kw)[1][key]))


def xs(n=10, seed=1, d=D_IN):
    # numpy data: each shape given to jax.random.normal compiles the PRNG (~0.5 s)
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, d)), jnp.float32)


def np_params(params):
    return {k: np.asarray(v, np.float64) for k, v in params.items()}


def enc_in(cfg, p, x):
    return x - p["b_dec"] if cfg.subtract_b_dec else x


# ----------------------------------------------------------------------------- config
def test_config_validation_messages():
    names = "relu, topk, batchtopk, jumprelu, gated, matryoshka, switch"
    with pytest.raises(ValueError, match=names):
        sae.SAEConfig("sparse", d_in=4, d_sae=8)
    with pytest.raises(ValueError, match="needs k"):
        sae.SAEConfig("topk", d_in=4, d_sae=8)
    with pytest.raises(ValueError, match="only used by"):
        sae.SAEConfig("relu", d_in=4, d_sae=8, k=2)
    with pytest.raises(ValueError, match="divisible by n_experts"):
        sae.SAEConfig("switch", d_in=4, d_sae=10, k=2, n_experts=4)
    with pytest.raises(ValueError, match="transcoder"):
        sae.SAEConfig("relu", d_in=4, d_sae=8, d_out=3, apply_b_dec_to_input=True)
    with pytest.raises(ValueError, match="strictly increasing"):
        sae.SAEConfig("matryoshka", d_in=4, d_sae=8, k=2, matryoshka_prefixes=(4, 2))
    cfg = sae.SAEConfig("topk", d_in=4, d_sae=8, k=2)
    assert cfg.architecture == "topk" and hash(cfg) == hash(sae.SAEConfig("topk", 4, 8, k=2))
    assert cfg.aux_k_effective == 4 and cfg.d_target == 4
    assert sae.SAEConfig("matryoshka", 4, 64, k=2).matryoshka_widths == (4, 8, 16, 32, 64)


@pytest.mark.parametrize("arch", list(KW))
def test_shapes_and_metrics(arch):
    cfg, params = make(arch)
    assert sae.param_shapes(cfg) == {k: tuple(v.shape) for k, v in params.items()}
    x = xs(12).reshape(3, 4, D_IN)
    x_hat, f = forward(cfg, params, x)
    assert x_hat.shape == (3, 4, D_IN) and f.shape == (3, 4, D_SAE)
    assert jnp.all(f >= 0)
    np.testing.assert_allclose(sae.decode(cfg, params, f), x_hat, rtol=1e-6)
    ctx = sae.LossContext(dead_mask=jnp.arange(D_SAE) % 3 == 0)
    step = jax.jit(jax.value_and_grad(lambda p: sae.loss(cfg, p, x, ctx=ctx), has_aux=True))
    (value, metrics), grads = step(params)
    assert {"loss", "mse", "l0", "fired"} <= set(metrics)
    assert metrics["fired"].shape == (D_SAE,) and metrics["fired"].dtype == jnp.bool_
    assert all(v.ndim == 0 for k, v in metrics.items() if k != "fired")
    assert np.isfinite(float(value)) and float(metrics["loss"]) == float(value)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))


def test_wrong_input_shape_names_both_shapes():
    cfg, params = make("relu")
    with pytest.raises(ValueError, match=r"\(5, 7\).*\[\.\.\., 6\]"):
        encode(cfg, params, jnp.zeros((5, 7)))
    bad = dict(params, W_dec=jnp.zeros((D_SAE, D_IN + 1)))
    with pytest.raises(ValueError, match="W_dec"):
        sae.check_params(cfg, bad)


def test_loss_vmaps_over_stacked_params():
    cfg, _ = make("topk")
    stacked = jax.jit(jax.vmap(lambda k: sae.init(cfg, k)))(jax.random.split(jax.random.key(0), 3))
    values, metrics = jax.jit(jax.vmap(lambda p: sae.loss(cfg, p, xs())))(stacked)
    assert values.shape == (3,) and metrics["fired"].shape == (3, D_SAE)


# ----------------------------------------------------------------------------- references
def test_relu_loss_matches_numpy():
    cfg, params = make("relu")
    x = xs()
    value, metrics = loss(cfg, params, x, ctx=sae.LossContext(penalty_scale=0.3))
    p, xn = np_params(params), np.asarray(x, np.float64)
    f = np.maximum(enc_in(cfg, p, xn) @ p["W_enc"] + p["b_enc"], 0)
    x_hat = f @ p["W_dec"] + p["b_dec"]
    mse = np.mean(np.sum((xn - x_hat) ** 2, -1))
    l1 = np.mean(f @ np.linalg.norm(p["W_dec"], axis=-1))
    np.testing.assert_allclose(value, mse + 0.3 * cfg.l1_coefficient * l1, rtol=1e-5)
    np.testing.assert_allclose(metrics["l0"], np.mean(np.sum(f > 0, -1)), rtol=1e-6)
    np.testing.assert_array_equal(metrics["fired"], np.any(f > 0, 0))


def _np_topk_codes(pre, k):
    out = np.zeros_like(pre)
    for b in range(pre.shape[0]):
        top = np.argsort(-pre[b])[:k]
        out[b, top] = np.maximum(pre[b, top], 0)
    return out


def test_topk_keeps_exactly_k_and_loss_matches_numpy():
    cfg, params = make("topk")
    x = xs()
    dead = np.arange(D_SAE) % 3 == 0
    p, xn = np_params(params), np.asarray(x, np.float64)
    pre = enc_in(cfg, p, xn) @ p["W_enc"] + p["b_enc"]
    f_ref = _np_topk_codes(pre, K)
    f = np.asarray(encode(cfg, params, x))
    np.testing.assert_allclose(f, f_ref, rtol=1e-5, atol=1e-6)
    assert np.all(np.sum(f != 0, -1) <= K)
    x_hat = f_ref @ p["W_dec"] + p["b_dec"]
    mse = np.mean(np.sum((xn - x_hat) ** 2, -1))
    k_aux = cfg.aux_k_effective
    z = _np_topk_codes(np.where(dead, pre, -np.inf), k_aux)
    z = np.where(np.isfinite(z), z, 0.0)
    aux = np.mean(np.sum((xn - x_hat - z @ p["W_dec"]) ** 2, -1))
    value, metrics = loss(cfg, params, x, ctx=sae.LossContext(dead_mask=jnp.asarray(dead)))
    np.testing.assert_allclose(metrics["aux_k"], aux, rtol=1e-5)
    np.testing.assert_allclose(value, mse + aux / 32, rtol=1e-5)
    no_dead, _ = loss(cfg, params, x, ctx=sae.LossContext(dead_mask=jnp.zeros(D_SAE, bool)))
    np.testing.assert_allclose(no_dead, mse, rtol=1e-5)


def test_batchtopk_selects_k_times_batch_and_threshold():
    cfg, params = make("batchtopk")
    x = xs(8)
    p, xn = np_params(params), np.asarray(x, np.float64)
    acts = np.maximum(enc_in(cfg, p, xn) @ p["W_enc"] + p["b_enc"], 0)
    order = np.argsort(-acts.ravel())[: K * 8]
    f_ref = np.zeros(acts.size)
    f_ref[order] = acts.ravel()[order]
    f_ref = f_ref.reshape(acts.shape)
    value, metrics = loss(cfg, params, x)
    np.testing.assert_allclose(metrics["l0"], K, rtol=1e-6)  # mean L0 is exactly k
    x_hat = f_ref @ p["W_dec"] + p["b_dec"]
    np.testing.assert_allclose(value, np.mean(np.sum((xn - x_hat) ** 2, -1)), rtol=1e-5)
    np.testing.assert_allclose(metrics["min_active"], f_ref[f_ref > 0].min(), rtol=1e-6)
    # Inference: global threshold, batch-independent.
    np.testing.assert_allclose(encode(cfg, params, x), np.where(acts > 0.2, acts, 0), rtol=1e-5,
                               atol=1e-6)
    updated = sae.after_update(cfg, params, metrics)
    np.testing.assert_allclose(updated["threshold"], 0.99 * 0.2 + 0.01 * f_ref[f_ref > 0].min(),
                               rtol=1e-6)
    grads = grad_of(cfg, x)(params)
    assert float(jnp.abs(grads["threshold"])) == 0.0  # not trained by gradient


def jumprelu_numpy(params, x, eps=None):
    """float64 numpy pieces of a JumpReLU forward: params, x, theta, pi, f and the kernel window."""
    p, xn = np_params(params), np.asarray(x, np.float64)
    theta = np.exp(p["log_threshold"])
    pre = xn @ p["W_enc"] + p["b_enc"]  # jumprelu does not subtract b_dec
    f = np.where(pre > theta, pre, 0)
    kern = None if eps is None else (np.abs((pre - theta) / eps) < 0.5).astype(float)
    return p, xn, theta, pre, f, kern


def test_jumprelu_threshold_and_pseudo_gradient():
    cfg, params = make("jumprelu", jumprelu_bandwidth=0.5, l0_coefficient=0.7)
    x, eps = xs(6), 0.5
    p, xn, theta, pre, f, kern = jumprelu_numpy(params, x, eps)
    np.testing.assert_allclose(encode(cfg, params, x), f, rtol=1e-5, atol=1e-6)
    x_hat = f @ p["W_dec"] + p["b_dec"]
    mse = np.mean(np.sum((xn - x_hat) ** 2, -1))
    l0 = np.mean(np.sum(pre > theta, -1))
    value, _ = loss(cfg, params, x)
    np.testing.assert_allclose(value, mse + 0.7 * l0, rtol=1e-5)
    # Hand-written STE: dL/dtheta = mean_b[ dL/df * -(theta/eps) K + lambda * -(1/eps) K ].
    n = x.shape[0]
    dl_df = 2 * (x_hat - xn) @ p["W_dec"].T / n
    dl_dtheta = np.sum(dl_df * -(theta / eps) * kern, 0) + 0.7 * np.sum(-(1 / eps) * kern, 0) / n
    grads = grad_of(cfg, x)(params)
    np.testing.assert_allclose(grads["log_threshold"], dl_dtheta * theta, rtol=1e-4, atol=1e-6)
    assert np.count_nonzero(kern) > 0  # the kernel window is actually hit


def test_jumprelu_tanh_sparsity_matches_numpy():
    """Anthropic's smooth penalty lambda * mean_b sum_i tanh(c f_i): value and encoder gradient."""
    cfg, params = make("jumprelu", l0_coefficient=0.7, jumprelu_tanh_scale=4.0)
    x = xs(6)
    p, xn, theta, pre, f, _ = jumprelu_numpy(params, x)
    mse = np.mean(np.sum((xn - f @ p["W_dec"] - p["b_dec"]) ** 2, -1))
    penalty = np.mean(np.sum(np.tanh(4.0 * f), -1))
    value, metrics = loss(cfg, params, x)
    np.testing.assert_allclose([metrics["l0_penalty"], value], [penalty, mse + 0.7 * penalty],
                               rtol=1e-5)
    # Unlike the L0 step, the smooth penalty reaches the encoder bias of active latents.
    g = grad_of(cfg, x, "l0_penalty")(params)["b_enc"]
    expected = np.sum(4.0 * (1 - np.tanh(4.0 * f) ** 2) * (pre > theta), 0) / len(xn)
    np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-6)
    assert np.abs(expected).sum() > 0
    with pytest.raises(ValueError, match="jumprelu_tanh_scale"):
        sae.SAEConfig("gated", d_in=D_IN, d_sae=D_SAE, jumprelu_tanh_scale=4.0)


def test_jumprelu_ste_to_input_matches_numpy():
    """Anthropic's variant: the STE term reaches the pre-activations (so b_enc) as well."""
    cfg, params = make("jumprelu", jumprelu_bandwidth=0.5, l0_coefficient=0.7,
                       jumprelu_ste_to_input=True)
    x, eps = xs(6), 0.5
    p, xn, theta, pre, f, kern = jumprelu_numpy(params, x, eps)
    x_hat = f @ p["W_dec"] + p["b_dec"]
    n = x.shape[0]
    dl_df = 2 * (x_hat - xn) @ p["W_dec"].T / n
    # d/dpi: H + (theta/eps) K through the JumpReLU, (1/eps) K through the L0 step.
    dl_dpre = dl_df * ((pre > theta) + (theta / eps) * kern) + 0.7 * (1 / eps) * kern / n
    dl_dtheta = np.sum(dl_df * -(theta / eps) * kern, 0) + 0.7 * np.sum(-(1 / eps) * kern, 0) / n
    grads = grad_of(cfg, x)(params)
    np.testing.assert_allclose(grads["b_enc"], dl_dpre.sum(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads["log_threshold"], dl_dtheta * theta, rtol=1e-4, atol=1e-6)
    plain = grad_of(make("jumprelu", jumprelu_bandwidth=0.5, l0_coefficient=0.7)[0], x)(params)
    assert np.abs(np.asarray(plain["b_enc"]) - dl_dpre.sum(0)).max() > 1e-3  # the flag matters
    with pytest.raises(ValueError, match="jumprelu_ste_to_input"):
        sae.SAEConfig("relu", d_in=D_IN, d_sae=D_SAE, jumprelu_ste_to_input=True)


def test_jumprelu_target_l0_quadratic_matches_numpy():
    """Gemma Scope 2's penalty (2/T)(L0 - T)^2: value, and thresholds pulled DOWN below T."""
    target = 5.0
    cfg, params = make("jumprelu", jumprelu_bandwidth=0.5, l0_coefficient=0.7,
                       jumprelu_target_l0=target)
    x, eps = xs(6), 0.5
    _, _, theta, pre, _, kern = jumprelu_numpy(params, x, eps)
    l0_tok = np.sum(pre > theta, -1)
    penalty = np.mean(2 / target * (l0_tok - target) ** 2)
    _, metrics = loss(cfg, params, x)
    np.testing.assert_allclose(metrics["l0_penalty"], penalty, rtol=1e-5)
    n = x.shape[0]
    dpen_dl0 = 4 / target * (l0_tok - target) / n  # [batch]
    expected = np.sum(dpen_dl0[:, None] * -(1 / eps) * kern, 0) * theta  # d/d log_threshold
    g = grad_of(cfg, x, "l0_penalty")(params)["log_threshold"]
    np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-6)
    assert np.abs(expected).sum() > 0
    for bad in ({"jumprelu_target_l0": 0.0},
                {"jumprelu_target_l0": 4.0, "jumprelu_tanh_scale": 4.0}):
        with pytest.raises(ValueError, match="jumprelu_target_l0"):
            sae.SAEConfig("jumprelu", d_in=D_IN, d_sae=D_SAE, **bad)


def test_jumprelu_step_has_no_gradient_to_pre():
    pre = jnp.array([0.1, 0.3, 0.5])
    thr = jnp.array([0.2, 0.2, 0.2])
    g_pre = jax.grad(lambda z: jnp.sum(jumprelu_mod.step(z, thr, 0.1)))(pre)
    np.testing.assert_array_equal(g_pre, 0.0)
    g_jr = jax.grad(lambda z: jnp.sum(jumprelu_mod.jumprelu(z, thr, 0.1)))(pre)
    np.testing.assert_array_equal(g_jr, [0.0, 1.0, 1.0])


def test_gated_loss_and_stop_gradient_on_decoder():
    cfg, params = make("gated", l1_coefficient=0.5)
    x = xs()
    p, xn = np_params(params), np.asarray(x, np.float64)
    h = (xn - p["b_dec"]) @ p["W_enc"]
    gate, mag = h + p["b_gate"], h * np.exp(p["r_mag"]) + p["b_mag"]
    f = np.where(gate > 0, np.maximum(mag, 0), 0)
    np.testing.assert_allclose(encode(cfg, params, x), f, rtol=1e-5, atol=1e-6)
    x_hat = f @ p["W_dec"] + p["b_dec"]
    mse = np.mean(np.sum((xn - x_hat) ** 2, -1))
    l1 = np.mean(np.sum(np.maximum(gate, 0), -1))
    aux = np.mean(np.sum((xn - np.maximum(gate, 0) @ p["W_dec"] - p["b_dec"]) ** 2, -1))
    value, metrics = loss(cfg, params, x)
    np.testing.assert_allclose([metrics["l1"], metrics["aux"], value],
                               [l1, aux, mse + 0.5 * l1 + aux], rtol=1e-5)

    g_aux = grad_of(cfg, x, "aux")(params)
    g_mse = grad_of(cfg, x, "mse")(params)
    g_all = grad_of(cfg, x)(params)
    # The aux reconstruction decodes with a frozen decoder: no W_dec gradient from it, and
    # its b_dec gradient is only the encoder-input path, -(dL/dh) W_enc^T, never the decoder
    # path (which would be -2 mean(x - x_hat_frozen)).
    np.testing.assert_array_equal(g_aux["W_dec"], 0.0)
    np.testing.assert_allclose(g_all["W_dec"], g_mse["W_dec"], rtol=1e-5, atol=1e-7)
    r = xn - np.maximum(gate, 0) @ p["W_dec"] - p["b_dec"]  # aux residual
    dl_dgate = (-2 * r @ p["W_dec"].T / len(xn)) * (gate > 0)  # d aux / d pi_gate
    np.testing.assert_allclose(g_aux["b_gate"], dl_dgate.sum(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(g_aux["b_dec"], -(dl_dgate.sum(0) @ p["W_enc"].T), rtol=1e-4,
                               atol=1e-6)
    assert np.abs(dl_dgate).sum() > 0


@pytest.mark.parametrize("arch", ["jumprelu", "gated"])
def test_pre_act_loss_on_dead_latents_matches_numpy(arch):
    """lambda_P * mean_b sum_{i dead} ReLU(theta_i - pi_i); only dead latents get its gradient."""
    cfg, params = make(arch, pre_act_loss_coefficient=0.3)
    x = xs()
    dead = np.zeros(D_SAE, bool)
    dead[[1, 4, 9, 15]] = True
    p, xn = np_params(params), np.asarray(x, np.float64)
    if arch == "jumprelu":
        pre, theta = xn @ p["W_enc"] + p["b_enc"], np.exp(p["log_threshold"])
        bias = "b_enc"
    else:
        pre, theta, bias = (xn - p["b_dec"]) @ p["W_enc"] + p["b_gate"], 0.0, "b_gate"
    expected = np.mean(np.sum(np.where(dead, np.maximum(theta - pre, 0), 0), -1))
    ctx = sae.LossContext(dead_mask=jnp.asarray(dead))
    plain = sae.SAEConfig(arch, d_in=D_IN, d_sae=D_SAE, **KW[arch])
    value, metrics = loss(cfg, params, x, ctx=ctx)
    base, _ = loss(plain, params, x, ctx=ctx)
    np.testing.assert_allclose(metrics["pre_act_loss"], expected, rtol=1e-5)
    np.testing.assert_allclose(value, base + 0.3 * expected, rtol=1e-5)
    assert expected > 0
    g = jax.grad(lambda q: sae.loss(cfg, q, x, ctx=ctx)[1]["pre_act_loss"])(params)[bias]
    np.testing.assert_array_equal(np.asarray(g)[~dead], 0.0)  # live latents: untouched
    np.testing.assert_allclose(g, -np.mean(np.where(dead, theta - pre > 0, 0), 0), rtol=1e-5)
    with pytest.raises(ValueError, match="pre_act_loss_coefficient is only used by"):
        sae.SAEConfig("topk", d_in=D_IN, d_sae=D_SAE, k=K, pre_act_loss_coefficient=1.0)


def test_matryoshka_loss_is_sum_of_prefix_losses():
    cfg, params = make("matryoshka")
    x = xs(8)
    p, xn = np_params(params), np.asarray(x, np.float64)
    acts = np.maximum((xn - p["b_dec"]) @ p["W_enc"] + p["b_enc"], 0)
    order = np.argsort(-acts.ravel())[: K * 8]
    f = np.zeros(acts.size)
    f[order] = acts.ravel()[order]
    f = f.reshape(acts.shape)
    total = 0.0
    for width in (4, 8, D_SAE):
        x_hat = f[:, :width] @ p["W_dec"][:width] + p["b_dec"]
        total += np.mean(np.sum((xn - x_hat) ** 2, -1))
    value, metrics = loss(cfg, params, x)
    np.testing.assert_allclose(value, total, rtol=1e-5)
    np.testing.assert_allclose(metrics["prefix_mse_sum"], total, rtol=1e-5)


def test_switch_routes_to_argmax_expert_only():
    cfg, params = make("switch", switch_load_balance_coefficient=0.0)
    x = xs(5)
    p, xn = np_params(params), np.asarray(x, np.float64)
    xc = xn - p["b_dec"]
    logits = xc @ p["W_router"] + p["b_router"]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    m = D_SAE // 4
    pre = xc @ p["W_enc"] + p["b_enc"]
    f_ref = np.zeros_like(pre)
    for b in range(5):
        e = int(np.argmax(probs[b]))
        block = pre[b, e * m:(e + 1) * m]
        top = np.argsort(-block)[:K]
        f_ref[b, e * m + top] = np.maximum(block[top], 0) * probs[b, e]
    np.testing.assert_allclose(encode(cfg, params, x), f_ref, rtol=1e-5, atol=1e-6)
    x_hat = f_ref @ p["W_dec"] + p["b_dec"]
    value, _ = loss(cfg, params, x)
    np.testing.assert_allclose(value, np.mean(np.sum((xn - x_hat) ** 2, -1)), rtol=1e-5)
    # One token: encoder columns of the other experts get exactly zero gradient.
    g = grad_of(cfg, x[:1])(params)
    e0 = int(np.argmax(probs[0]))
    col_norms = np.linalg.norm(np.asarray(g["W_enc"]), axis=0).reshape(4, m)
    assert np.all(col_norms[np.arange(4) != e0] == 0) and col_norms[e0].sum() > 0


def test_switch_load_balance_formula():
    from jinterp.sae.architectures.switch import load_balance

    probs = jnp.array([[0.7, 0.3], [0.6, 0.4], [0.2, 0.8], [0.9, 0.1]])
    expert = jnp.argmax(probs, -1)
    frac = np.array([3 / 4, 1 / 4])
    mean_p = np.asarray(probs).mean(0)
    np.testing.assert_allclose(load_balance(probs, expert), 2 * np.sum(frac * mean_p), rtol=1e-6)


@pytest.mark.parametrize("arch", ["relu", "topk", "jumprelu", "gated"])
def test_transcoder_flag(arch):
    cfg, params = make(arch, d_out=4)
    assert params["W_dec"].shape == (D_SAE, 4) and params["b_dec"].shape == (4,)
    x, target = xs(7), xs(7, seed=5, d=4)
    x_hat, f = forward(cfg, params, x)
    assert x_hat.shape == (7, 4)
    value, metrics = loss(cfg, params, x, target=target)
    # For these architectures the training code equals the inference code, so the loss's MSE
    # is the MSE of forward()'s reconstruction against the d_out-wide target.
    np.testing.assert_allclose(metrics["mse"], np.mean(np.sum((np.asarray(target) - np.asarray(
        x_hat)) ** 2, -1)), rtol=1e-5)
    with pytest.raises(ValueError, match="needs target"):
        loss(cfg, params, x)
    with pytest.raises(ValueError, match="last axis must be 4"):
        loss(cfg, params, x, target=xs(7))


# ----------------------------------------------------------------------------- constraints
@pytest.mark.parametrize("arch", ["topk", "jumprelu", "gated", "batchtopk"])
def test_unit_norm_constraint(arch):
    cfg, params = make(arch)
    grads = grad_of(cfg, xs())(params)
    fixed = sae.after_grad(cfg, params, grads)
    dots = np.sum(np.asarray(fixed["W_dec"]) * np.asarray(params["W_dec"]), -1)
    np.testing.assert_allclose(dots, 0, atol=1e-6)
    stepped = dict(params, W_dec=params["W_dec"] * 1.7 + 0.01)
    renorm = sae.after_update(cfg, stepped, {"min_active": jnp.asarray(jnp.inf)})
    np.testing.assert_allclose(np.linalg.norm(renorm["W_dec"], axis=-1), 1, rtol=1e-6)


def test_relu_decoder_is_free():
    cfg, params = make("relu")
    np.testing.assert_allclose(np.linalg.norm(params["W_dec"], axis=-1), 0.1, rtol=1e-5)
    np.testing.assert_allclose(params["W_enc"], params["W_dec"].T)
    grads = grad_of(cfg, xs())(params)
    assert sae.after_grad(cfg, params, grads) is grads
    assert sae.after_update(cfg, params, {}) is params


def test_switch_dispatch_matches_exact_path_and_drops_overflow():
    cfg_exact, params = make("switch")
    x = xs(12)
    big = sae.SAEConfig("switch", d_in=D_IN, d_sae=D_SAE, k=K, n_experts=4,
                        switch_capacity_factor=4.0)
    # Capacity = batch: nothing dropped, so value and gradients equal the exact path.
    def value_and_grad(c):
        return jax.jit(jax.value_and_grad(lambda q: sae.loss(c, q, x), has_aux=True))(params)

    (v_e, m_e), g_e = value_and_grad(cfg_exact)
    (v_d, m_d), g_d = value_and_grad(big)
    np.testing.assert_allclose(v_d, v_e, rtol=1e-5)
    assert float(m_d["dropped_fraction"]) == 0.0
    for name in params:
        np.testing.assert_allclose(g_d[name], g_e[name], rtol=1e-4, atol=1e-6, err_msg=name)
    # Capacity 1 token per expert: the first token routed to each expert is kept, later ones
    # are dropped and reconstructed by b_dec alone.
    from jinterp.sae.architectures import switch

    tiny = sae.SAEConfig("switch", d_in=D_IN, d_sae=D_SAE, k=K, n_experts=4,
                         switch_capacity_factor=4 / 12)
    values, _, _, expert, kept = jax.jit(switch.dispatch_topk, static_argnums=0)(tiny, params, x)
    expert = np.asarray(expert)
    first = np.array([e not in expert[:i] for i, e in enumerate(expert)])
    np.testing.assert_array_equal(kept, first)
    assert np.all(np.asarray(values)[~first] == 0)
    exact = jax.jit(switch.expert_topk, static_argnums=0)(cfg_exact, params, x)
    exact_values = np.asarray(exact[0])
    np.testing.assert_allclose(np.asarray(values)[first], exact_values[first], rtol=1e-5)
