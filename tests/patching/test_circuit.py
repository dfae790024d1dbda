"""Circuits run as interventions, against the clean / corrupted runs, a slow per-node reference
built from plain hooks, and path patching (an independent three-pass implementation)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from core.families import CONFIGS as FAMILIES
from core.families import tokens

import jinterp
from jinterp import Patch, models
from jinterp.patching import Circuit, Node, acdc, faithfulness, learn_edge_mask, run_circuit
from jinterp.patching.attr_graph import downstream_nodes, is_edge, upstream_nodes
from jinterp.patching.circuit import check_circuit
from jinterp.patching.eap import edge_index
from jinterp.patching.path import path_patch

CONFIGS = {  # 2 layers: LayerNorm + MLP + biases; RMSNorm + RoPE + GQA + gated MLP + biases
    "gpt2": lambda: models.GPT2(models.GPT2Config(
        n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=48, d_vocab=61, n_ctx=16)),
    "llama": lambda: models.Llama(models.LlamaConfig(
        n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, d_head=8, d_mlp=40, d_vocab=61,
        attn_bias=True)),
}


@functools.lru_cache(maxsize=None)
def two_layer(name):
    model = CONFIGS[name]()
    rng = np.random.default_rng(1)  # numpy noise: no small program compiled per leaf shape
    params = jax.tree.map(lambda x: jnp.asarray(x + 0.1 * rng.standard_normal(x.shape),
                                                jnp.float32), model.init(jax.random.key(0)))
    return model, params  # every bias and norm weight non-trivial


def reference_logits(model, params, circuit, clean, corrupt):
    """Each downstream input built explicitly as ``sum_u m * out_u(run) + (1 - m) *
    out_u(corrupted)`` plus the attention biases, one head slot at a time, with plain hooks.

    Full-model runs with every layer's inputs patched, repeated until nothing changes: a pass
    makes one more stage exact (the heads of a layer, then its MLP, read only earlier stages),
    so ``2 n_layers + 1`` passes give the circuit run (and every pass reuses the same programs).
    """
    n, heads, kv = model.n_layers, model.dims["n_heads"], model.dims["n_kv_heads"]
    outputs = lambda s: s.endswith(("hook_resid_pre", "attn.hook_result", "hook_attn_out",
                                    "hook_mlp_out"))
    _, kc = jinterp.run_with_cache(model, params, corrupt, names=outputs)
    _, cc = jinterp.run_with_cache(model, params, clean, names=outputs)
    corr = {Node.embed(): kc["blocks.0.hook_resid_pre"]}
    bias = []  # the attention output bias of each layer: attn_out - sum of heads (both runs)
    for l in range(n):
        result = np.asarray(kc[f"blocks.{l}.attn.hook_result"])
        corr |= {Node.head(l, h): result[:, :, h] for h in range(heads)}
        bias.append(kc[f"blocks.{l}.hook_attn_out"] - result.sum(2))
        if f"blocks.{l}.hook_mlp_out" in kc:
            corr[Node.mlp(l)] = kc[f"blocks.{l}.hook_mlp_out"]
    run = dict(corr) | {Node.embed(): cc["blocks.0.hook_resid_pre"]}
    pairs = [(upstream_nodes(model)[i], downstream_nodes(model)[j]) for i, j in edge_index(model)]
    weight = dict(zip(pairs, np.asarray(circuit.mask).tolist()))

    def input_of(d):
        below = n if d.layer is None else d.layer + (d.kind == "mlp_in")
        total = sum(bias[l] for l in range(below))
        for u in upstream_nodes(model):
            if is_edge(model, u, d):
                total = total + weight[(u, d)] * run[u] + (1 - weight[(u, d)]) * corr[u]
        return jnp.asarray(total, jnp.float32)

    slots = [(kind, i) for kind, count in (("q", heads), ("k", kv), ("v", kv))
             for i in range(count)]
    qkv = [f"blocks.{l}.attn.hook_{kind}" for l in range(n) for kind in "qkv"]
    for _ in range(2 * n + 1):
        values = {}
        for kind, i in slots:  # this slot's input at every layer, its q / k / v read off
            hooks = {f"blocks.{l}.hook_resid_pre": Patch(input_of(Node(kind, l, i)))
                     for l in range(n)}
            _, c = jinterp.run_with_cache(model, params, clean, names=qkv, hooks=hooks)
            values |= {(kind, l, i): c[f"blocks.{l}.attn.hook_{kind}"][:, :, i]
                       for l in range(n)}
        hooks = {}
        for l in range(n):
            for kind in "qkv":
                hooks[f"blocks.{l}.attn.hook_{kind}"] = [
                    Patch(values[(k, l, i)], head=i) for k, i in slots if k == kind]
            if Node.mlp(l) in corr:
                hooks[f"blocks.{l}.hook_resid_mid"] = Patch(input_of(Node.mlp_in(l)))
        hooks[f"blocks.{n - 1}.hook_resid_post"] = Patch(input_of(Node.final()))
        logits, c = jinterp.run_with_cache(model, params, clean, names=outputs, hooks=hooks)
        for l in range(n):
            run |= {Node.head(l, h): c[f"blocks.{l}.attn.hook_result"][:, :, h]
                    for h in range(heads)}
            if Node.mlp(l) in corr:
                run[Node.mlp(l)] = c[f"blocks.{l}.hook_mlp_out"]
    return logits


# Llama's grouped kv slots are the general case (GPT-2: one kv slot a head); `full` adds GPT-2.
@pytest.mark.parametrize("name", [pytest.param("gpt2", marks=pytest.mark.full), "llama"])
def test_circuit_runs_match_clean_corrupted_and_reference(name):
    model, params = two_layer(name)
    clean, corrupt = tokens(seed=0), tokens(seed=1)
    full = run_circuit(model, params, Circuit.full(model), clean, corrupt)
    np.testing.assert_allclose(full, model(params, clean), atol=2e-5)
    empty = run_circuit(model, params, Circuit.empty(model), clean, corrupt)
    np.testing.assert_allclose(empty, model(params, corrupt), atol=2e-5)
    soft = Circuit.from_mask(model, np.random.default_rng(0).uniform(size=Circuit.full(
        model).n_total))
    ref = reference_logits(model, params, soft, clean, corrupt)
    got = run_circuit(model, params, soft, clean, corrupt)
    assert float(jnp.abs(ref - full).max()) > 0.1  # the mask matters
    np.testing.assert_allclose(got, ref, atol=2e-5)


def test_one_removed_edge_is_path_patching():
    """The full circuit less ``u -> d`` corrupts exactly the path u -> d: path patching with
    sender ``u`` and receiver ``d`` (here a kv head's key input of a GQA model)."""
    model, params = two_layer("llama")
    clean, corrupt = tokens(seed=0), tokens(seed=1)
    metric = lambda logits: logits[:, -1, 3].mean() - logits[:, -1, 5].mean()
    for up, down in [(Node.head(0, 1), Node.k(1, 1))]:
        circuit = Circuit.full(model).with_edges([(up, down)], 0.0)
        assert circuit.n_edges == circuit.n_total - 1
        got = metric(run_circuit(model, params, circuit, clean, corrupt))
        want = path_patch(model, params, clean, corrupt, metric, up, down)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        assert abs(float(got - metric(model(params, clean)))) > 1e-3  # the edge matters


def test_circuit_pytree_and_edges():
    model, _ = two_layer("llama")
    edges = [(Node.embed(), Node.q(0, 2)), (Node.head(0, 3), Node.v(1, 1)),
             (Node.mlp(1), Node.final()), (Node.head(1, 0), Node.mlp_in(1))]
    circuit = Circuit.from_edges(model, edges)
    assert circuit.n_edges == 4 and circuit.n_total == len(edge_index(model))
    assert set(circuit.edges()) == set(edges)
    assert circuit.nodes() == [Node.embed(), Node.head(0, 3), Node.head(1, 0), Node.mlp(1),
                               Node.q(0, 2), Node.v(1, 1), Node.mlp_in(1), Node.final()]
    assert circuit.weight(Node.mlp(1), Node.final()) == 1.0
    assert circuit.with_edges(edges[:1], 0.0).n_edges == 3
    assert len(jax.tree.leaves(circuit)) == 1  # the mask is the only leaf; the model is static
    stacked = jax.tree.map(lambda *m: jnp.stack(m), circuit, Circuit.full(model))
    assert jax.vmap(lambda c: c.mask.sum())(stacked).tolist() == [4.0, circuit.n_total]
    assert Circuit.from_mask(model, circuit.mask * 0.7).binarize(0.5).n_edges == 4
    assert "4/" in repr(circuit)


def test_bad_input_is_refused_clearly():
    model, params = two_layer("llama")
    other, _ = two_layer("gpt2")
    clean, corrupt = tokens(seed=0), tokens(seed=1)
    with pytest.raises(ValueError, match="build the circuit for this model"):
        run_circuit(model, params, Circuit.full(other), clean, corrupt)
    with pytest.raises(TypeError, match="Circuit.full"):
        check_circuit(model, np.ones(10))
    with pytest.raises(ValueError, match="not an edge"):
        Circuit.from_edges(model, [(Node.head(1, 0), Node.q(1, 0))])
    with pytest.raises(ValueError, match="not a downstream node"):
        Circuit.from_edges(model, [(Node.embed(), Node.q(5, 0))])
    with pytest.raises(ValueError, match="shape"):
        Circuit.from_mask(model, np.ones(3))
    with pytest.raises(ValueError, match="same shape"):
        run_circuit(model, params, Circuit.full(model), clean, corrupt[:, :4])
    with pytest.raises(ValueError, match="threshold"):
        acdc(model, params, clean, corrupt, None, -0.1)
    with pytest.raises(ValueError, match="group"):
        acdc(model, params, clean, corrupt, None, 0.1, group="head")
    with pytest.raises(ValueError, match="sparsity"):
        learn_edge_mask(model, params, clean, corrupt, None, sparsity=-1.0, steps=5, lr=0.1,
                        key=jax.random.key(0))
    with pytest.raises(TypeError, match="key"):
        learn_edge_mask(model, params, clean, corrupt, None, sparsity=0.1, steps=5, lr=0.1,
                        key=0)
    with pytest.raises(ValueError, match="steps"):
        learn_edge_mask(model, params, clean, corrupt, None, sparsity=0.1, steps=0, lr=0.1,
                        key=jax.random.key(0))
    with pytest.raises(ValueError, match="both the clean and the corrupted"):
        faithfulness(model, params, Circuit.full(model), clean, clean, None)
    gemma2 = FAMILIES["gemma2"]()
    with pytest.raises(ValueError, match="pre-norm"):
        run_circuit(gemma2, None, Circuit.full(gemma2), clean, corrupt)
