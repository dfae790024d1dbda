"""Tests of the grokking study: data split, model, loss precision, Fourier metrics, training, CLI.

Metrics are checked against slow references and planted ground truth; training is checked for
exact resume and for vmap-over-seeds == one seed at a time. Whether grokking happens is *not*
tested here (it takes the full 40k-step run); ``experiments/grokking/README.md`` has its numbers.
"""

import json
import math
import os
import random
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jinterp import models
from jinterp.experiments.grokking import cli, fourier, measures
from jinterp.experiments.grokking.analysis import across_seeds
from jinterp.experiments.grokking.config import GrokConfig
from jinterp.experiments.grokking.data import make_data, tokens
from jinterp.experiments.grokking.model import (
    cross_entropy,
    init_params,
    last_logits,
    loss_and_accuracy,
)
from jinterp.experiments.grokking.training import init_state, load_history, make_optimizer, train

TINY = GrokConfig.fast(steps=4, steps_per_call=2, snapshot_every=2)


# ------------------------------------------------------------------------------------- data
def test_split_matches_authors_shuffle_and_sizes():
    data = make_data(113, 0.3, 0)
    assert (len(data.train_idx), len(data.test_idx)) == (3830, 8939)
    pairs = [(i, j, 113) for i in range(113) for j in range(113)]  # the authors' gen_train_test
    random.seed(0)
    random.shuffle(pairs)
    expected = [i * 113 + j for i, j, _ in pairs[:3830]]
    assert data.train_idx.tolist() == expected
    assert sorted(data.train_idx.tolist() + data.test_idx.tolist()) == list(range(113 * 113))
    a, b, y = data.split("train")
    assert np.array_equal(y, (a + b) % 113)
    assert np.array_equal(tokens(a[:2], b[:2], 113)[:, 2], [113, 113])


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="multiple of steps_per_call"):
        GrokConfig(steps=1000, steps_per_call=300)
    with pytest.raises(ValueError, match="frac_train"):
        GrokConfig(frac_train=1.5)
    with pytest.raises(ValueError, match="distinct"):
        GrokConfig(seeds=(1, 1))


# ------------------------------------------------------------------------------------ model
def test_last_logits_and_grads_equal_gpt2_port():
    cfg = TINY
    model = models.GPT2(cfg.model_config())
    params = init_params(cfg, jax.random.key(1))
    # any tokens, not only '='
    toks = jax.random.randint(jax.random.key(2), (64, 3), 0, cfg.d_vocab)
    ref = model(params, toks)[:, -1]
    assert jnp.allclose(jax.jit(last_logits)(params, toks), ref, atol=1e-5, rtol=1e-5)
    loss_port = lambda p: jnp.sum(jnp.sin(model(p, toks)[:, -1]))
    loss_fast = lambda p: jnp.sum(jnp.sin(last_logits(p, toks)))
    # jitted: one program each instead of one compile per eager op (the same maths)
    g_port, g_fast = jax.jit(jax.grad(loss_port))(params), jax.jit(jax.grad(loss_fast))(params)
    for a, b in zip(jax.tree.leaves(g_port), jax.tree.leaves(g_fast)):
        assert jnp.allclose(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("eq_logit", [False, True])
def test_training_loss_classes_match_a_float64_reference(eq_logit):
    cfg = GrokConfig.fast(eq_logit_in_loss=eq_logit)
    assert cfg.loss_classes == (cfg.p + 1 if eq_logit else cfg.p)
    params = init_params(cfg, jax.random.key(4))
    data = make_data(cfg.p, cfg.frac_train, cfg.data_seed)
    a, b, y = data.split("train")
    toks = tokens(a, b, cfg.p)
    loss, acc = loss_and_accuracy(params, jnp.asarray(toks), jnp.asarray(y), cfg.loss_classes)
    logits = models.GPT2(cfg.model_config())(params, jnp.asarray(toks))[:, -1]
    logits = np.asarray(logits, np.float64)
    kept = logits if eq_logit else logits[:, :cfg.p]  # the authors' full_loss keeps the '=' logit
    top = kept.max(1, keepdims=True)
    log_probs = kept - np.log(np.exp(kept - top).sum(1, keepdims=True)) - top
    assert float(loss) == pytest.approx(-log_probs[np.arange(len(y)), y].mean(), rel=1e-5)
    assert float(acc) == pytest.approx(np.mean(kept.argmax(1) == y))
    other = GrokConfig.fast(eq_logit_in_loss=not eq_logit)
    other_loss, _ = loss_and_accuracy(params, jnp.asarray(toks), jnp.asarray(y), other.loss_classes)
    assert float(other_loss) != pytest.approx(float(loss), rel=1e-5)  # the '=' logit really matters


def test_init_matches_port_layout_and_paper_scales():
    cfg = GrokConfig()
    params = jax.jit(init_params, static_argnums=0)(cfg, jax.random.key(0))  # the same draws
    port = jax.eval_shape(models.GPT2(cfg.model_config()).init, jax.random.key(0))
    shapes = lambda t: jax.tree.map(lambda x: x.shape, t)
    assert shapes(params) == shapes(port)
    assert abs(float(params["blocks"]["mlp"]["W_in"].std()) * math.sqrt(128) - 1) < 0.02
    assert abs(float(params["unembed"]["W_U"].std()) * math.sqrt(114) - 1) < 0.05
    assert float(jnp.abs(params["blocks"]["mlp"]["b_in"]).max()) == 0.0


def test_cross_entropy_resolves_tiny_losses_where_float32_log_softmax_cannot():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 113))
    labels = rng.integers(0, 113, 50)
    rows = np.arange(50)
    logits[rows, labels] += rng.uniform(20, 27, 50)  # confident and correct: loss 1e-10..1e-6
    exact = np.log(np.exp(logits - logits[rows, labels][:, None]).sum(1))  # float64 reference
    assert np.median(exact) < 1e-7 and exact.max() < 1e-5
    ours = np.asarray(cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(labels)))
    assert np.allclose(ours, exact, rtol=1e-4, atol=0)
    logits32 = jnp.asarray(logits, jnp.float32)
    naive = -np.asarray(jax.nn.log_softmax(logits32))[rows, labels]
    assert np.mean(np.abs(naive - exact) / exact) > 0.5  # quantised to 0 or multiples of ~1e-7
    # wrong answers and their gradient, against float64
    bad = rng.normal(size=(8, 113)) * 10
    lab = rng.integers(0, 113, 8)
    exact_bad = np.log(np.exp(bad).sum(1)) - bad[np.arange(8), lab]
    bad32 = jnp.asarray(bad, jnp.float32)
    assert np.allclose(cross_entropy(bad32, jnp.asarray(lab)), exact_bad, rtol=1e-5)
    grad = jax.grad(lambda l: cross_entropy(l, jnp.asarray(labels)).sum())(logits32)
    soft = np.exp(logits - logits.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    ref_grad = soft - np.eye(113)[labels]
    # incl. the -1e-9 correct-class terms
    assert np.allclose(np.asarray(grad), ref_grad, rtol=1e-4, atol=1e-30)
    naive_grad = jax.grad(lambda l: -jax.nn.log_softmax(l)[rows, labels].sum())(logits32)
    assert not np.allclose(np.asarray(naive_grad)[rows, labels], ref_grad[rows, labels], rtol=0.1)
    bad_grad = jax.grad(lambda l: cross_entropy(l, jnp.asarray(lab)).sum())(bad32)
    soft_bad = np.exp(bad - bad.max(1, keepdims=True))
    soft_bad /= soft_bad.sum(1, keepdims=True)
    assert np.allclose(np.asarray(bad_grad), soft_bad - np.eye(113)[lab], atol=1e-6)


def test_optimizer_matches_torch_adamw_with_lambda_warmup():
    torch = pytest.importorskip("torch")
    cfg = GrokConfig()
    rng = np.random.default_rng(0)
    w0, grads = rng.normal(size=(5,)), rng.normal(size=(15, 5))
    w = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    opt = torch.optim.AdamW([w], lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(step / 10, 1))
    tx, params = make_optimizer(cfg), jnp.asarray(w0, jnp.float32)
    state = tx.init(params)
    for g in grads:
        w.grad = torch.tensor(g)
        opt.step()
        sched.step()
        updates, state = tx.update(jnp.asarray(g, jnp.float32), state, params)
        params = params + updates
    assert np.allclose(np.asarray(params), w.detach().numpy(), atol=1e-6)


# ---------------------------------------------------------------------------------- fourier
def test_fourier_basis_orthonormal_and_sum_directions_match_product_form():
    p = 13
    F = fourier.fourier_basis(p)
    assert np.allclose(F @ F.T, np.eye(p), atol=1e-12)
    dirs = fourier.sum_directions(p, [2, 5])
    assert np.allclose(dirs @ dirs.T, np.eye(4), atol=1e-12)
    for i, k in enumerate([2, 5]):  # the authors' outer-product construction
        c, s = F[2 * k - 1], F[2 * k]
        cos_dir = (np.outer(c, c) - np.outer(s, s)).ravel() / np.sqrt(2)
        sin_dir = (np.outer(s, c) + np.outer(c, s)).ravel() / np.sqrt(2)
        assert np.allclose(dirs[2 * i], cos_dir) and np.allclose(dirs[2 * i + 1], sin_dir)
    values = np.random.default_rng(0).normal(size=(p * p, 3))
    coeffs = fourier.fourier_2d(values, p)
    slow = np.array([[np.sum(np.outer(F[f], F[g]).ravel()[:, None] * values, axis=0)
                      for g in range(p)] for f in range(p)])
    assert np.allclose(coeffs, slow)


def test_restricted_and_excluded_loss_on_planted_logits():
    p, keys, other = 13, [2, 5], 3
    data = make_data(p, 0.3, 0)
    a, b, _ = data.grid()
    c = np.arange(p)
    w = lambda k: 2 * np.pi * k / p
    circuit = sum(4.0 * np.cos(w(k) * (a[:, None] + b[:, None] - c[None])) for k in keys)
    # orthogonal to the key directions
    distractor = 3.0 * np.cos(w(other) * (a[:, None] - 2 * b[:, None] + c[None]))
    offset = np.linspace(-1, 1, p)[None]  # a constant per class, kept by the bias correction
    logits = circuit + distractor + offset
    restricted, excluded = measures.restricted_and_excluded(logits, data, keys)
    labels = (a + b) % p
    ce = lambda l, y: measures.mean_loss(l, y)
    assert restricted == pytest.approx(ce(circuit + offset, labels), rel=1e-5)
    train = data.train_idx
    assert excluded == pytest.approx(ce((distractor + offset)[train], labels[train]), rel=1e-5)
    # projection against a least-squares reference
    dirs = fourier.sum_directions(p, keys)
    coef = np.linalg.lstsq(dirs.T, logits, rcond=None)[0]
    assert np.allclose(fourier.project(logits, dirs), dirs.T @ coef)


def test_neuron_frequencies_and_key_frequency_rule():
    p = 13
    a, b = np.divmod(np.arange(p * p), p)
    w = lambda k: 2 * np.pi * k / p
    pure = [np.cos(w(k) * a) * np.cos(w(k) * b) + 0.5 * np.sin(w(k) * a)
            for k in (2, 2, 2, 4, 4, 4)]
    mixed = np.cos(w(1) * a) + np.cos(w(6) * b)  # half its variance in k=1, half in k=6
    acts = np.stack(pure + [mixed, np.zeros(p * p)], axis=1)
    frac = fourier.neuron_frequency_fractions(acts, p)
    assert np.allclose(frac[1, :3], 1) and np.allclose(frac[3, 3:6], 1)
    assert np.allclose(frac[[0, 5], 6], 0.5) and np.allclose(frac[:, 7], 0)
    keys, cluster = fourier.key_frequencies(frac, min_share=0.2)
    assert keys == [2, 4] and cluster.tolist() == [2, 2, 2, 4, 4, 4, 0, 0]


def test_neuron_diagnostics_match_a_loop_over_neurons():
    cfg = GrokConfig.fast()
    data = make_data(cfg.p, cfg.frac_train, cfg.data_seed)
    model = models.GPT2(cfg.model_config())
    params = init_params(cfg, jax.random.key(1))
    # a large positive bias keeps the first five neurons' ReLU open on every input: near-linear
    params["blocks"]["mlp"]["b_in"] = params["blocks"]["mlp"]["b_in"].at[0, :5].set(100.0)
    found = measures.analyse_neurons(model, params, data)
    _, acts = measures.grid_logits_and_neurons(model, params, data)
    W_out = np.asarray(params["blocks"]["mlp"]["W_out"][0], np.float64)
    rate, energy = [], []
    for i in range(cfg.d_mlp):
        column = [float(v) for v in acts[:, i]]
        mean = sum(column) / len(column)
        rate.append(sum(v > 0 for v in column) / len(column))
        variance = sum((v - mean) ** 2 for v in column) / len(column)
        energy.append(sum(w * w for w in W_out[i]) * variance)
    assert np.allclose(found.firing_rate, rate)
    assert np.allclose(found.output_energy, energy, rtol=1e-6)
    linear = [r > measures.NEAR_LINEAR_FIRING_RATE for r in rate]
    assert all(linear[:5]) and not all(linear)
    single = [c > 0 for c in found.cluster]
    clipping_single = [s for s, l in zip(single, linear) if not l]
    diag = found.diagnostics()
    assert diag["near_linear_neurons"] == sum(linear)
    assert diag["near_linear_single_frequency"] == sum(s and l for s, l in zip(single, linear))
    assert diag["single_frequency_fraction_of_clipping_neurons"] == pytest.approx(
        sum(clipping_single) / len(clipping_single))
    assert diag["multi_frequency_output_share"] == pytest.approx(
        sum(e for e, s in zip(energy, single) if not s) / sum(energy), rel=1e-6)


def test_gini_matches_mean_absolute_difference_form():
    x = np.random.default_rng(1).random(40)
    slow = np.abs(x[:, None] - x[None]).sum() / (2 * x.size * x.sum())
    assert fourier.gini(x) == pytest.approx(slow)
    assert fourier.gini(np.ones(10)) == pytest.approx(0)
    assert fourier.gini(np.eye(10)[3]) == pytest.approx(0.9)


# --------------------------------------------------------------------------------- training
def _params(state):
    return jax.tree.map(np.asarray, state["params"])


# Two seeds, two chunks of two steps: trained once for the resume and the vmap tests.
TWO_SEEDS = GrokConfig.fast(steps=4, steps_per_call=2, snapshot_every=2, seeds=(0, 3))


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    """Final params of ``TWO_SEEDS`` trained straight through, without interruption."""
    return _params(train(TWO_SEEDS, str(tmp_path_factory.mktemp("straight")), progress=False))


def test_resume_after_interruption_is_bitwise_identical(tmp_path, two_seeds):
    train(TWO_SEEDS, str(tmp_path / "cut"), progress=False, max_chunks=1)
    resumed = train(TWO_SEEDS, str(tmp_path / "cut"), progress=False)
    for x, y in zip(jax.tree.leaves(two_seeds), jax.tree.leaves(_params(resumed))):
        assert np.array_equal(x, y)
    assert int(resumed["step"][0]) == TWO_SEEDS.steps
    with pytest.raises(ValueError, match="different config"):
        longer = GrokConfig.fast(steps=6, steps_per_call=2, snapshot_every=2, seeds=(0, 3))
        train(longer, str(tmp_path / "cut"))


def test_vmapped_seeds_equal_seeds_trained_alone(tmp_path, two_seeds):
    alone_cfg = GrokConfig.fast(steps=4, steps_per_call=2, snapshot_every=2, seeds=(3,))
    alone = _params(train(alone_cfg, str(tmp_path / "alone"), progress=False))
    init = jax.tree.map(np.asarray, init_state(TWO_SEEDS)["params"])
    for x, y, x0 in zip(jax.tree.leaves(two_seeds), jax.tree.leaves(alone),
                        jax.tree.leaves(init)):
        assert np.allclose(x[1], y[0], atol=1e-6, rtol=1e-5)
        assert not np.allclose(x[0], x[1])  # different seeds really differ
        # and really trained (biases may stay at their zero init)
        assert not np.array_equal(x[1], x0[1]) or x.ndim == 2


# Each process owns one fake CPU device and so one of the two seeds: the state is a global array
# neither process holds whole, the orbax checkpoint is written by both, process 0 writes the
# history. Equal to one process within float rounding, the vmap test's tolerance: the
# per-device program has another batch of seeds, so XLA may fuse it differently (bitwise
# equality fails: 5e-7 after 50 steps grows to 0.35 by step 400 of the chaotic fast setting).
PROCESS_WORKER = r"""
import os, sys
pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=1")
from jinterp import distributed
distributed.initialize(f"127.0.0.1:{port}", 2, pid, timeout_s=60)
import jax
from jinterp.experiments.grokking.config import GrokConfig
from jinterp.experiments.grokking.training import train
state = train(GrokConfig.fast(steps=4, steps_per_call=2, snapshot_every=2, seeds=(0, 3)), out,
              progress=False)
leaf = jax.tree.leaves(state["params"])[0]
print("GLOBAL", jax.device_count(), not leaf.is_fully_addressable,
      [s.index[0] for s in leaf.addressable_shards])
distributed.shutdown()
"""


def test_seeds_split_over_two_processes_equal_one_process(tmp_path, two_seeds):
    out, port = str(tmp_path / "two"), str(_free_port())
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JINTERP_COMPILATION_CACHE": "0",
           "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [subprocess.Popen([sys.executable, "-c", PROCESS_WORKER, str(i), port, out],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=240)
            assert proc.returncode == 0, stderr[-3000:]
            outs.append(stdout)
    finally:
        for proc in procs:
            proc.kill()
    for i, stdout in enumerate(outs):  # each process holds its own seed of a global array
        assert f"GLOBAL 2 True [slice({i}, {i + 1}, None)]" in stdout, stdout
    history = load_history(out)
    np.testing.assert_array_equal(history["snapshot_steps"], [0, 2, 4])
    assert history["train_loss"].shape == (2, 4)
    final = jax.tree.map(lambda x: x[-1], history["snapshots"])
    for got, want in zip(jax.tree.leaves(final), jax.tree.leaves(two_seeds)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(jax.tree.leaves(final)[0][0], jax.tree.leaves(final)[0][1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_seed_and_loss_options():
    parse = lambda *argv: cli.config_from_args(cli.build_parser().parse_args(["--out", "x", *argv]))
    assert parse().seeds == (0,) and not parse().eq_logit_in_loss
    assert parse("--seeds", "3").seeds == (0, 1, 2)
    assert parse("--seeds", "4,5,7").seeds == (4, 5, 7)
    assert parse("--loss", "all").eq_logit_in_loss
    assert not parse("--loss", "answers").eq_logit_in_loss
    for bad in ("0", "a", "3,3", "-1,2"):
        with pytest.raises(SystemExit, match="--seeds"):
            parse(f"--seeds={bad}")


def test_across_seeds_counts_checks_and_spread():
    fractions = [0.793, 0.895, 0.703, 0.816]
    per_seed = [{"single_frequency_neuron_fraction": f,
                 "checks": {"ge_80pct_single_frequency_neurons": f >= 0.8,
                            "test_loss_lt_1e-5": True}}
                for f in fractions]
    spread = across_seeds(per_seed)
    assert spread["n_seeds"] == 4
    assert spread["single_frequency_neuron_fraction"] == {
        "median": pytest.approx((0.793 + 0.816) / 2), "min": 0.703, "max": 0.895}
    assert spread["checks_passed"] == {"ge_80pct_single_frequency_neurons": 2,
                                       "test_loss_lt_1e-5": 4}


def test_cli_end_to_end_fast(tmp_path):
    out = str(tmp_path / "run")
    # TWO_SEEDS's settings: its compiled training chunk is reused (make_chunk_fn's cache)
    argv = ["--out", out, "--fast", "--steps", "4", "--steps-per-call", "2",
            "--snapshot-every", "2", "--seeds", "0,3", "--no-progress"]
    cli.main(argv)
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    for key in ("steps", "wall_time_s", "train_accuracy", "test_accuracy", "test_loss",
                "memorization_step", "grok_step", "key_frequencies",
                "single_frequency_neuron_fraction", "restricted_loss_drop_step",
                "test_loss_drop_step"):
        assert key in summary
    assert summary["steps"] == 4 and len(summary["seeds"]) == 2
    assert summary["across_seeds"]["n_seeds"] == 2
    assert summary["across_seeds"]["checks_passed"] == {
        name: sum(s["checks"][name] for s in summary["seeds"]) for name in summary["checks"]}
    assert set(summary["neuron_diagnostics"]) == {
        "near_linear_neurons", "near_linear_single_frequency",
        "single_frequency_fraction_of_clipping_neurons", "multi_frequency_output_share"}
    for name in ("loss_curves.png", "fourier_spectra.png", "neurons.png", "progress_measures.png",
                 "seeds.png"):
        assert os.path.getsize(os.path.join(out, name)) > 1000
    history = load_history(out)
    assert history["train_loss"].shape == (2, 4) and list(history["snapshot_steps"]) == [0, 2, 4]
    # the summary's final test loss is the port's loss on the test split at the last snapshot
    assert summary["final_test_loss"] == pytest.approx(summary["test_loss"], rel=1e-4)
    cli.main(argv)  # finished run: resumes with nothing to train, same numbers
    with open(os.path.join(out, "summary.json")) as f:
        again = json.load(f)
    assert again["test_loss"] == summary["test_loss"]
    assert again["train_wall_time_s"] == summary["train_wall_time_s"]
    # training time still counts after a re-analysis
    assert again["wall_time_s"] >= again["train_wall_time_s"]
