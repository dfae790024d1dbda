"""Intervention semantics on bare arrays: selectors, Patch shapes and checks vs numpy loops.

Every test calls ``check`` (the core's Python-side validation) and then ``apply``, as the core
does, and compares against a slow, obvious reference written with Python loops.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jinterp import hooks
from jinterp.interventions import (
    MeanAblate,
    Patch,
    ProjectOut,
    ResampleAblate,
    SliceSelector,
    Steer,
    ZeroAblate,
    site_mask,
)


def apply_hook(hook, x, axes, name):
    return hooks.apply_hook(hook, x, axes, hooks.HookInfo(name))


NAME = "blocks.0.hook_resid_pre"
RESID = ("batch", "pos", "d_model")
PER_HEAD = ("batch", "pos", "n_heads", "d_head")
PATTERN = ("batch", "n_heads", "q_pos", "k_pos")
B, P, H, D = 2, 9, 4, 3


def rand(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def run(iv, x, axes, name=NAME):
    iv.check(x.shape, axes, name)
    return np.asarray(iv.apply(x, axes))


def picked(selector, size):
    """Slow reference: the indices a selector picks, in order, by Python's indexing rules."""
    if selector is None:
        return list(range(size))
    if isinstance(selector, slice):
        return list(range(size))[selector]
    values = np.asarray(selector).reshape(-1)
    if values.dtype == bool:
        return [i for i in range(size) if values[i]]
    return [int(i) + size if i < 0 else int(i) for i in values]


MASK = np.array([0, 1, 0, 0, 1, 1, 0, 0, 1], bool)
SELECTORS = {
    "none": None, "int": 3, "negative": -1, "minus-size": -P, "numpy-int": np.int64(4),
    "jax-int": jnp.int32(-2), "list": [1, 4], "tuple": (8, 0, 2), "empty": [],
    "numpy-indices": np.array([2, 5, -3]), "jax-indices": jnp.array([7, 1]),
    "numpy-mask": MASK, "jax-mask": jnp.asarray(MASK), "list-mask": MASK.tolist(),
    "slice": slice(2, 7), "negative-slice": slice(-3, None), "step": slice(None, None, -2),
    "reverse": slice(7, 1, -2), "full-slice": slice(None),
}


# ------------------------------------------------------------------------------- selectors
@pytest.mark.parametrize("selector", SELECTORS.values(), ids=SELECTORS.keys())
def test_every_selector_kind_zero_ablates_what_python_indexing_picks(selector):
    x = rand((B, P, D))
    expected = np.asarray(x).copy()
    for p in picked(selector, P):
        for b in range(B):
            expected[b, p, :] = 0
    np.testing.assert_array_equal(run(ZeroAblate(pos=selector), x, RESID), expected)
    mask = np.broadcast_to(site_mask(x, RESID, pos=selector), x.shape)
    np.testing.assert_array_equal(mask, expected != np.asarray(x))


@pytest.mark.parametrize("selector", SELECTORS.values(), ids=SELECTORS.keys())
def test_patch_full_and_kept_forms_for_every_selector_kind(selector):
    x, full = rand((B, P, D)), rand((B, P, D), 1)
    sites = picked(selector, P)
    expected = np.asarray(x).copy()
    for p in sites:
        expected[:, p] = np.asarray(full)[:, p]
    np.testing.assert_array_equal(run(Patch(full, pos=selector), x, RESID), expected)
    # Kept: one slab per selected index, in selector order (here distinct from the full form).
    kept = rand((B, len(sites), D), 2)
    if len(sites) == P:  # the kept shape is the full shape, which wins
        return
    expected = np.asarray(x).copy()
    for j, p in enumerate(sites):
        for b in range(B):
            expected[b, p, :] = np.asarray(kept)[b, j, :]
    np.testing.assert_array_equal(run(Patch(kept, pos=selector), x, RESID), expected)


def test_patch_dropped_forms_on_per_head_and_pattern_activations():
    x = rand((B, P, H, D))
    z = np.asarray(x)
    v = rand((B, D), 1)
    expected = z.copy()
    for b in range(B):
        expected[b, 3, 1] = np.asarray(v)[b]
    np.testing.assert_array_equal(run(Patch(v, pos=3, head=1), x, PER_HEAD), expected)
    per_head = rand((B, P, D), 2)  # head dropped: every position of head -1
    expected = z.copy()
    expected[:, :, H - 1] = np.asarray(per_head)
    np.testing.assert_array_equal(run(Patch(per_head, head=-1), x, PER_HEAD), expected)
    mixed = rand((B, 2, D), 3)  # pos kept (two indices), head dropped
    expected = z.copy()
    for j, p in enumerate([6, 2]):
        expected[:, p, 0] = np.asarray(mixed)[:, j]
    np.testing.assert_array_equal(run(Patch(mixed, pos=[6, 2], head=0), x, PER_HEAD), expected)
    kept = rand((B, 1, 1, D), 4)
    np.testing.assert_array_equal(run(Patch(kept, pos=3, head=1), x, PER_HEAD),
                                  run(Patch(kept[:, 0, 0], pos=3, head=1), x, PER_HEAD))
    # Attention patterns: heads on axis 1, the query axis on axis 2.
    pattern, row = rand((B, H, P, P)), rand((B, P), 5)
    expected = np.asarray(pattern).copy()
    expected[:, 2, 4, :] = np.asarray(row)
    np.testing.assert_array_equal(run(Patch(row, pos=4, head=2), pattern, PATTERN), expected)


@pytest.mark.parametrize("pos, head", [
    ([6, 2], [3, 0]), (slice(1, None, 3), jnp.array([2])), (jnp.array([-1, 4]), np.arange(H) > 1),
    (MASK, -2), (5, slice(None, None, -1)),
])
def test_patch_kept_on_two_axes_scatters_in_selector_order(pos, head):
    x = rand((B, P, H, D))
    ps, hs = picked(pos, P), picked(head, H)
    kept = rand((B, len(ps), len(hs), D), 1)
    expected = np.asarray(x).copy()
    for i, p in enumerate(ps):
        for j, h in enumerate(hs):
            for b in range(B):
                expected[b, p, h, :] = np.asarray(kept)[b, i, j, :]
    iv = Patch(kept, pos=pos, head=head)
    np.testing.assert_array_equal(run(iv, x, PER_HEAD), expected)
    np.testing.assert_array_equal(_through_core(iv, x, PER_HEAD), expected)


def test_transformerlens_idiom_when_batch_equals_pos_patches_each_prompt_its_own():
    x, clean = rand((3, 3, D)), rand((3, 3, D), 1)
    out = run(Patch(clean[:, 1], pos=1), x, RESID)  # values [batch, d_model]
    expected = np.asarray(x).copy()
    for b in range(3):
        expected[b, 1] = np.asarray(clean)[b, 1]  # prompt b gets prompt b's activation
    np.testing.assert_array_equal(out, expected)
    # What numpy broadcasting would have read as [pos, d_model] now raises, naming both shapes.
    with pytest.raises(ValueError, match=r"values of shape \(3, 3\) do not fit the activation's "
                                         r"shape \(3, 3, 3\).*\(3, 3, 3\) \(the full"):
        Patch(clean[0], pos=None).check(x.shape, RESID, NAME)
    with pytest.raises(ValueError, match=r"'blocks.0.hook_resid_pre'.*\(3, 3\) do not fit.*"
                                         r"\(3, 3, 3\) \(pos kept\)"):
        Patch(clean[:, 1], pos=[0, 1, 2]).check(x.shape, RESID, NAME)
    with pytest.raises(ValueError, match=r"Accepted shapes: .*\(3, 1, 3\) \(pos kept\); "
                                         r"\(3, 3\) \(pos dropped\)"):
        Patch(jnp.zeros((1, 3)), pos=2).check(x.shape, RESID, NAME)
    with pytest.raises(ValueError, match=r"\(2, n_true, 3\)"):  # a device mask: count unknown
        Patch(jnp.zeros((2, 3)), pos=jnp.asarray(MASK)).check((2, P, 3), RESID, NAME)


def test_vmap_over_a_traced_scalar_pos_with_dropped_values_equals_the_loop():
    x, clean = rand((B, P, D)), rand((B, P, D), 1)

    def patched(p):
        return Patch(clean[:, p], pos=p).apply(x, RESID)

    swept = jax.jit(jax.vmap(patched))(jnp.arange(-P, P))
    for i, p in enumerate(range(-P, P)):
        expected = np.asarray(x).copy()
        expected[:, p] = np.asarray(clean)[:, p]
        np.testing.assert_array_equal(swept[i], expected)


def _through_core(iv, x, axes):
    """As the core does it: check, then a jit whose inputs are the array and number leaves."""
    iv.check(x.shape, axes, NAME)
    leaves, treedef = jax.tree.flatten(iv)
    dynamic = [isinstance(v, (jax.Array, np.ndarray, np.generic, int, float))
               and not isinstance(v, bool) for v in leaves]
    static = tuple(None if d else v for v, d in zip(leaves, dynamic))

    @jax.jit
    def go(traced):
        merged = [t if d else s for t, d, s in zip(traced, dynamic, static)]
        return apply_hook(jax.tree.unflatten(treedef, merged), x, axes, NAME)

    return np.asarray(go([v if d else None for v, d in zip(leaves, dynamic)]))


@pytest.mark.parametrize("selector", SELECTORS.values(), ids=SELECTORS.keys())
def test_python_ints_and_lists_as_traced_leaves_mean_the_same(selector):
    x, full = rand((B, P, D)), rand((B, P, D), 1)
    for iv in (ZeroAblate(pos=selector), Patch(full, pos=selector),
               Patch(rand((B, len(picked(selector, P)), D), 2), pos=selector)):
        np.testing.assert_array_equal(_through_core(iv, x, RESID), run(iv, x, RESID))


def test_slices_are_static_structure_not_unhashable_leaves():
    values = rand((B, P, D))
    iv = Patch(values, pos=slice(-4, None, 2))
    assert iv.pos == SliceSelector(-4, None, 2)
    leaves, treedef = jax.tree.flatten(iv)
    assert len(leaves) == 1 and hash(treedef) == hash(jax.tree.flatten(iv)[1])
    assert jax.tree.unflatten(treedef, leaves).pos == iv.pos  # unflatten keeps it as it is
    apply = jax.jit(lambda iv, x: iv.apply(x, RESID))
    apply(iv, values)
    apply(Patch(values + 1, pos=slice(-4, None, 2)), values)
    assert apply._cache_size() == 1  # same slice, new values: no recompile
    with pytest.raises(TypeError, match="slice bounds must be Python ints"):
        ZeroAblate(pos=slice(0, 2.5))
    with pytest.raises(ValueError, match="step 0"):
        ZeroAblate(pos=slice(0, 4, 0))


def test_post_init_touches_only_slices_so_unflattening_with_tracers_works():
    iv = Patch(rand((B, P, D)), pos=jnp.arange(2))
    out = jax.vmap(lambda iv: iv.pos * 2)(Patch(rand((5, B, P, D)), pos=jnp.ones((5, 2), int)))
    assert out.shape == (5, 2)
    scanned = jax.lax.scan(lambda c, iv: (c, iv.pos), 0, jax.tree.map(lambda v: v[None], iv))[1]
    np.testing.assert_array_equal(scanned[0], [0, 1])
    cond = jax.jit(lambda iv: jax.lax.cond(True, lambda i: i, lambda i: i, iv))(iv)
    np.testing.assert_array_equal(cond.pos, [0, 1])


# ------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("iv, axes, message", [
    (ZeroAblate(pos=100), RESID, r"`pos` index 100 is out of range for the pos axis \(pos, axis "
                                 r"1\) of size 9: valid indices are -9..8"),
    (ZeroAblate(pos=-100), RESID, "index -100 is out of range"),
    (ZeroAblate(pos=9), RESID, "index 9 is out of range"),
    (ZeroAblate(pos=-10), RESID, "index -10 is out of range"),
    (ZeroAblate(head=7), PER_HEAD, r"`head` index 7 .* \(n_heads, axis 2\) of size 4"),
    (Patch(jnp.zeros((B, 2, D)), pos=[1, 9]), RESID, "index 9 is out of range"),
    (ZeroAblate(pos=np.array([0, -10])), RESID, "index -10 is out of range"),
    (ZeroAblate(pos=P + 4), PATTERN, r"index 13 .* \(q_pos, axis 2\) of size 9"),
])
def test_out_of_range_host_selectors_raise_naming_axis_size_and_value(iv, axes, message):
    x = rand((B, H, P, P) if axes == PATTERN else (B, P, H, D) if axes == PER_HEAD else (B, P, D))
    with pytest.raises(ValueError, match=message) as err:
        iv.check(x.shape, axes, NAME)
    assert NAME in str(err.value)
    with pytest.raises(ValueError, match=message):  # applied by hand: the same check
        iv.apply(x, axes)


def test_bad_selector_kinds_raise():
    x = rand((B, P, D))
    with pytest.raises(ValueError, match=r"`pos` mask has shape \(8,\) .* size 9"):
        ZeroAblate(pos=np.ones(8, bool)).check(x.shape, RESID, NAME)
    with pytest.raises(TypeError, match="`pos=True` is a boolean"):
        ZeroAblate(pos=True).check(x.shape, RESID, NAME)
    with pytest.raises(ValueError, match=r"indices have shape \(2, 2\)"):
        ZeroAblate(pos=np.array([[0, 1], [2, 3]])).check(x.shape, RESID, NAME)
    # Without the test suite's annotation checks, a float selector reaches our own message.
    unchecked = ZeroAblate(pos=0)
    object.__setattr__(unchecked, "pos", jnp.ones(2))
    with pytest.raises(TypeError, match="`pos` must be None, an integer, .* got dtype float32"):
        unchecked.check(x.shape, RESID, NAME)
    with pytest.raises(ValueError, match="no head axis"):
        ZeroAblate(head=0).check(x.shape, RESID, NAME)
    # Selectors are checked before values, so a bad selector is what gets reported.
    with pytest.raises(ValueError, match="mask has shape"):
        Patch(jnp.zeros(()), pos=np.ones(3, bool)).check(x.shape, RESID, NAME)


def test_device_selectors_are_checked_inside_the_program():
    x = rand((B, P, H, D))
    zero = jax.jit(lambda pos, head: ZeroAblate(pos=pos, head=head).apply(x, PER_HEAD))
    np.testing.assert_array_equal(zero(jnp.array([-9, 8]), 3),
                                  run(ZeroAblate(pos=[-9, 8], head=3), x, PER_HEAD))
    with pytest.raises(jax.errors.JaxRuntimeError, match="`pos` index 12 is out of range for "
                                                         r"the pos axis \(pos, axis 1\) of size 9"):
        jax.block_until_ready(zero(jnp.array([1, 12]), 0))
    with pytest.raises(jax.errors.JaxRuntimeError, match="`head` index -5 is out of range"):
        jax.block_until_ready(zero(None, -5))
    # Through apply_hook (as the core applies hooks) the message names the activation.
    hook_z = "blocks.3.attn.hook_z"
    hooked = jax.jit(lambda p: apply_hook(Patch(x[:, 0], pos=p), x, PER_HEAD, hook_z))
    with pytest.raises(jax.errors.JaxRuntimeError, match=r"Patch on 'blocks.3.attn.hook_z': `pos` "
                                                         "index 9 is out of range"):
        jax.block_until_ready(hooked(9))
    # A device mask with kept values must select as many indices as the values hold.
    patch = jax.jit(lambda m: Patch(jnp.zeros((B, 2, H, D)), pos=m).apply(x, PER_HEAD))
    np.testing.assert_array_equal(patch(jnp.arange(P) < 2)[:, :2], 0)
    with pytest.raises(jax.errors.JaxRuntimeError, match="mask selects 3 indices but the per-site "
                                                         "values have 2"):
        jax.block_until_ready(patch(jnp.arange(P) < 3))


def test_check_reads_no_device_values():
    """``check`` on traced fields: a host read would raise a concretization error."""
    x = rand((B, P, D))

    @jax.jit
    def checked(pos, mask, index, direction):
        for iv in (ZeroAblate(pos=pos), Patch(jnp.zeros((B, 2, D)), pos=mask),
                   ResampleAblate(x, index, pos=pos), ProjectOut(direction)):
            iv.check(x.shape, RESID, NAME)
        return pos

    checked(jnp.array([1, 100]), jnp.ones(P, bool), jnp.array([7, 0]), jnp.zeros(D))


def test_resample_ablate_index_is_checked_not_clamped():
    x, source = rand((B, P, D)), rand((4, P, D), 1)
    out = run(ResampleAblate(source, [-1, 0], pos=2), x, RESID)
    expected = np.asarray(x).copy()
    expected[0, 2], expected[1, 2] = np.asarray(source)[3, 2], np.asarray(source)[0, 2]
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(ValueError, match=r"index 9 is out of range for the 4 source examples: "
                                         r"valid indices are -4..3"):
        ResampleAblate(source, [9, 0]).check(x.shape, RESID, NAME)
    resample = jax.jit(lambda i: ResampleAblate(source, i).apply(x, RESID))
    with pytest.raises(jax.errors.JaxRuntimeError, match="index -5 is out of range for the 4"):
        jax.block_until_ready(resample(jnp.array([0, -5])))
    with pytest.raises(ValueError, match=r"index has shape \(3,\); the activation's batch is 2"):
        ResampleAblate(source, [0, 1, 2]).check(x.shape, RESID, NAME)
    with pytest.raises(ValueError, match=r"source of shape \(4, 3\) needs the activation's rank 3"):
        ResampleAblate(source[:, 0], [0, 1]).check(x.shape, RESID, NAME)


def test_project_out_zero_direction_raises_host_and_device():
    x = rand((B, P, H, D))
    with pytest.raises(ValueError, match="'blocks.0.attn.hook_z': direction has zero norm"):
        ProjectOut(np.zeros(D, np.float32)).check(x.shape, PER_HEAD, "blocks.0.attn.hook_z")
    per_head = np.ones((H, D), np.float32)
    per_head[2] = 0
    with pytest.raises(ValueError, match=r"zero norm at index \(2,\)"):
        ProjectOut(per_head).apply(x, PER_HEAD)
    project = jax.jit(lambda d: ProjectOut(d).apply(x, PER_HEAD))
    with pytest.raises(jax.errors.JaxRuntimeError, match="direction has zero norm"):
        jax.block_until_ready(project(jnp.zeros(D)))
    d = rand((H, D), 1)
    unit = np.asarray(d) / np.linalg.norm(np.asarray(d), axis=-1, keepdims=True)
    expected = np.asarray(x) - np.einsum("bphd,hd->bph", x, unit)[..., None] * unit
    np.testing.assert_allclose(project(d), expected, atol=1e-5)


def test_broadcasting_values_keep_their_rules_and_messages():
    x = rand((B, P, D))
    ref = rand((5, P, D), 1)
    mean = np.asarray(ref).mean(0)
    for m in (MeanAblate.from_activations(ref, pos=[0, 3]), MeanAblate(mean, pos=[0, 3])):
        expected = np.asarray(x).copy()
        expected[:, [0, 3]] = mean[[0, 3]]
        np.testing.assert_allclose(run(m, x, RESID), expected, atol=1e-6)
    v = rand((D,), 2)
    expected = np.asarray(x).copy()
    expected[:, -1] += 0.5 * np.asarray(v)
    np.testing.assert_allclose(run(Steer(v, 0.5, pos=-1), x, RESID), expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"shape \(7,\) does not broadcast to the activation's "
                                         r"shape \(2, 9, 3\)"):
        Steer(jnp.ones(7)).check(x.shape, RESID, NAME)
    with pytest.raises(ValueError, match=r"mean of shape \(4, 9, 3\) does not broadcast"):
        MeanAblate(jnp.ones((4, P, D))).check(x.shape, RESID, NAME)
    with pytest.raises(ValueError, match="scale has shape"):
        Steer(v, jnp.ones(2)).check(x.shape, RESID, NAME)


def test_grad_flows_through_steer():
    x, w = rand((B, P, D)), rand((B, P, D), 1)

    def metric(vector, scale):
        return jnp.sum(Steer(vector, scale, pos=[2, 5]).apply(x, RESID) * w)

    g_vec, g_scale = jax.grad(metric, argnums=(0, 1))(rand((D,), 2), 3.0)
    w_sites = np.asarray(w)[:, [2, 5]].sum(axis=(0, 1))  # d metric / d(scale * vector)
    np.testing.assert_allclose(g_vec, 3.0 * w_sites, rtol=1e-5)
    np.testing.assert_allclose(g_scale, np.dot(w_sites, np.asarray(rand((D,), 2))), rtol=1e-5)


# ------------------------------------------------------------------------------- layers
def test_layered_fields_and_at_layer():
    assert Patch.layered_fields == ("values",) and MeanAblate.layered_fields == ("mean",)
    assert ResampleAblate.layered_fields == ("source",) and Steer.layered_fields == ("vector",)
    assert ProjectOut.layered_fields == ("direction",) and ZeroAblate.layered_fields == ()
    x = rand((B, P, D))
    stacked = np.stack([np.full(D, i + 1.0, np.float32) for i in range(3)])  # [layer, d_model]
    steer = Steer(stacked, pos=slice(0, 2))
    steer.check(x.shape, RESID, NAME, layers=3)
    with pytest.raises(ValueError, match=r"`vector` has shape \(3, 3\); used at 4 layers"):
        steer.check(x.shape, RESID, NAME, layers=4)
    one = steer.at_layer(1)
    assert isinstance(one.vector, np.ndarray) and one.pos == steer.pos  # host stays host
    np.testing.assert_array_equal(run(one, x, RESID)[:, :2], np.asarray(x)[:, :2] + 2.0)
    traced = jax.jit(lambda i: steer.at_layer(i).apply(x, RESID))(2)
    np.testing.assert_array_equal(traced[:, :2], np.asarray(x)[:, :2] + 3.0)
    assert ZeroAblate(pos=1).at_layer(0) == ZeroAblate(pos=1)


# ------------------------------------------------------------------------------- dtypes
def test_parameter_dtypes_are_validated_with_the_valid_list(tmp_path):
    from jinterp import models
    from jinterp.models.dtypes import canonical_dtype
    from jinterp.models.hf_io import to_jax

    for spelling, name in [("float32", "float32"), ("BF16", "bfloat16"), ("fp16", "float16"),
                           ("fp32", "float32"), (np.float16, "float16"),
                           (jnp.bfloat16, "bfloat16"), (np.dtype("float32"), "float32")]:
        assert canonical_dtype(spelling) == name
    for bad in ("fp64", "int8", np.float64, None, "bfloat"):
        with pytest.raises(ValueError, match=r"not a supported parameter dtype; use one of "
                                             r"'float32', 'bfloat16', 'float16'"):
            canonical_dtype(bad)
    assert to_jax({"w": np.ones(2)}, "bf16")["w"].dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="dtype='fp64' is not a supported"):
        models.load_pretrained(tmp_path, dtype="fp64")  # before looking for config.json


def test_load_pretrained_accepts_dtype_aliases(tmp_path):
    import torch
    import transformers

    from jinterp import models

    cfg = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=20, n_positions=8)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path)
    _, params = models.load_pretrained(tmp_path, dtype="bf16")
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
    _, params = models.load_pretrained(tmp_path, dtype=np.float16)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float16)}
