"""The layer as data: ``At(layer, intervention)``, hook groups, and TransformerLens-style hooks.

Every sweep is checked against the obvious Python loop of per-name hooks, and the compiled
program's structure is checked too: no per-layer hook entries, no (L+1)-branch switches.
"""

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
import pytest
from families import family, tokens

import jinterp
from jinterp import At, Patch, Steer, ZeroAblate


def _branch_counts(fn, *args) -> list[int]:
    """Number of branches of every cond/switch in ``fn``'s jaxpr, nested ones included."""
    counts = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "cond":
                counts.append(len(eqn.params["branches"]))
            for sub in jex.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return counts


# The loop reference compiles one program per (layer, pos) cell: `make test` compares six cells
# (every layer, the first, middle and last positions); `full` compares all 27.
SOME_CELLS = ((0, 0), (0, 8), (1, 4), (2, 0), (2, 8), (1, 0))


@pytest.mark.parametrize("every_cell", [False, pytest.param(True, marks=pytest.mark.full)])
def test_layer_by_position_patching_sweep_is_one_program_equal_to_the_loop(every_cell):
    model, params = family("gpt2")
    clean, corrupt = tokens(seed=1), tokens(seed=2)
    _, cache = jinterp.run_with_cache(model, params, clean, names=lambda n: "resid_pre" in n)
    stacked = cache.stack("hook_resid_pre")  # layer batch pos d_model

    def effect(params, layer, pos):
        hooks = {"hook_resid_pre": At(layer, Patch(stacked, pos=pos))}
        return jinterp.run_with_hooks(model, params, corrupt, hooks)[:, -1, 7].mean()

    layers, positions = jnp.arange(model.n_layers), jnp.arange(9)
    sweep = jax.jit(jax.vmap(jax.vmap(effect, (None, None, 0)), (None, 0, None)))
    got = sweep(params, layers, positions)
    cells = ([(l, p) for l in range(model.n_layers) for p in range(9)] if every_cell
             else SOME_CELLS)
    loop = np.array([jinterp.run_with_hooks(model, params, corrupt, {
        f"blocks.{l}.hook_resid_pre": Patch(cache[f"blocks.{l}.hook_resid_pre"], pos=p)})
        [:, -1, 7].mean() for l, p in cells])
    np.testing.assert_allclose(np.asarray(got)[tuple(np.array(cells).T)], loop, rtol=1e-5,
                               atol=1e-6)
    assert np.abs(got - got[0, 0]).max() > 1e-3  # the patches do differ
    # One cond with two branches in the scan body, whatever the number of layers.
    assert _branch_counts(effect, params, jnp.int32(1), jnp.int32(3)) == [2]


def test_per_name_hooks_at_every_layer_are_one_unconditional_group():
    model, params = family("llama")
    masks = jnp.eye(4, dtype=bool)[jnp.array([0, 3, 1])]  # one head per layer
    hooks = {f"blocks.{l}.attn.hook_z": ZeroAblate(head=masks[l]) for l in range(3)}
    toks = tokens()
    fn = lambda p: jinterp.run_with_hooks(model, p, toks, hooks)
    assert _branch_counts(fn, params) == []  # a group covering every layer needs no condition
    one_by_one = jinterp.run_with_hooks(model, params, toks, {
        "blocks.0.attn.hook_z": [ZeroAblate(head=0)], "blocks.1.attn.hook_z": ZeroAblate(head=3),
        "blocks.2.attn.hook_z": lambda z: z.at[:, :, 1].set(0)})
    np.testing.assert_allclose(fn(params), one_by_one, rtol=1e-5, atol=1e-6)
    # Two layers of three: one group whose slot table skips layer 1 (one two-branch cond).
    two = {"blocks.0.attn.hook_z": ZeroAblate(head=0), "blocks.2.attn.hook_z": ZeroAblate(head=1)}
    assert _branch_counts(lambda p: jinterp.run_with_hooks(model, p, toks, two), params) == [2]


def test_at_with_a_layer_array_stacked_steering_and_traced_layers():
    model, params = family("gemma2")
    toks = tokens()
    v = jax.random.normal(jax.random.key(0), (3, 32))
    both = jinterp.run_with_hooks(model, params, toks, {"hook_resid_mid": At(jnp.array([0, 2]),
                                                                               Steer(v[0]))})
    named = jinterp.run_with_hooks(model, params, toks, {"blocks.0.hook_resid_mid": Steer(v[0]),
                                                         "blocks.2.hook_resid_mid": Steer(v[0])})
    np.testing.assert_allclose(both, named, rtol=1e-5, atol=1e-6)
    # A [layer, d_model] vector is ambiguous by rank, so stacked=True says it is per layer.
    per_layer = jinterp.run_with_hooks(model, params, toks, {
        "hook_resid_mid": At(jnp.arange(3), Steer(v), stacked=True)})
    named = jinterp.run_with_hooks(model, params, toks, {
        f"blocks.{l}.hook_resid_mid": Steer(v[l]) for l in range(3)})
    np.testing.assert_allclose(per_layer, named, rtol=1e-5, atol=1e-6)
    # A traced layer under jit, and gradients through At.
    fn = jax.jit(lambda layer, vec: jinterp.run_with_hooks(
        model, params, toks, {"hook_resid_mid": At(layer, Steer(vec))})[0, -1, 3])
    np.testing.assert_allclose(fn(jnp.int32(1), v[1]), jinterp.run_with_hooks(
        model, params, toks, {"blocks.1.hook_resid_mid": Steer(v[1])})[0, -1, 3], rtol=1e-5)
    grad = jax.grad(fn, argnums=1)(jnp.int32(1), jnp.zeros(32))
    assert np.abs(grad).max() > 0


def test_hooks_at_one_point_and_layer_apply_in_the_order_given():
    model, params = family("gpt2")
    toks = tokens()
    name = "blocks.1.hook_resid_mid"
    hooks = [(name, lambda x: x * 2), ("hook_resid_mid", At(1, Steer(jnp.ones(32)))),
             (name, lambda x: x - 3)]
    _, cache = jinterp.run_with_cache(model, params, toks, names=[name], hooks=hooks)
    _, clean = jinterp.run_with_cache(model, params, toks, names=[name])
    # Chains for one name merge (x*2 - 3), then the At group: (x*2 - 3) + 1.
    np.testing.assert_allclose(cache[name], np.asarray(clean[name]) * 2 - 2, rtol=1e-5, atol=1e-5)


def test_transformer_lens_style_hooks_get_name_and_layer():
    model, params = family("gpt2")
    seen = {}

    def tl_hook(act, hook):
        seen[hook.name] = (hook.layer(), act.shape)
        return act

    jinterp.run_with_hooks(model, params, tokens(), [("blocks.2.attn.hook_pattern", tl_hook),
                                                     (lambda n: n.endswith("ln1.hook_scale"),
                                                      tl_hook)])
    assert seen["blocks.2.attn.hook_pattern"] == (2, (2, 4, 9, 9))
    assert {k: v[0] for k, v in seen.items() if "ln1" in k} == {
        f"blocks.{l}.ln1.hook_scale": l for l in range(3)}
    with pytest.raises(TypeError, match=r"must be a \(name, hook\) pair.*names=\[...\]"):
        jinterp.run_with_hooks(model, params, tokens(), ["blocks.0.hook_resid_pre"])
    with pytest.raises(TypeError, match="without a layer: wrap the hook as jinterp.At"):
        jinterp.run_with_hooks(model, params, tokens(), {"hook_resid_pre": ZeroAblate()})
    with pytest.raises(TypeError, match="At goes under a point name without a layer"):
        jinterp.run_with_hooks(model, params, tokens(),
                               {"blocks.0.hook_resid_pre": At(0, ZeroAblate())})
