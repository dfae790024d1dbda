"""Params sharded by `jinterp.sharding.shard_params` over 8 fake CPU devices give the
single-device logits and activations: GPT-2, Llama (GQA) and Gemma 2 (sliding window,
soft-caps), meshes data x model 2 x 4 and 4 x 2, FSDP off and on, tokens split over data.
Weights are drawn with std 0.2 so activations are O(1) and the soft-caps bite; differences
are taken relative to the reference's largest magnitude when it exceeds 1.

One subprocess runs the default cases and the other checks (the device count must be fixed
before jax is imported); it prints one JSON report and the tests assert on it. The cases marked
`full` run in a second subprocess, only when selected.
"""

from __future__ import annotations

import functools
import json

import pytest
from multidevice import run_on_fake_devices

ATOL = 1e-5
CASES = [f"{m}_{d}x{k}_{'fsdp' if f else 'tp'}" for m in ("gpt2", "llama", "gemma2")
         for d, k in ((2, 4), (4, 2)) for f in (False, True)]
# `make test` runs one case per model, covering both meshes and FSDP off and on; the other nine
# are marked `full` and run in a second subprocess only when selected.
DEFAULT = ("gpt2_2x4_tp", "llama_4x2_fsdp", "gemma2_2x4_fsdp")
PARAMS = [case if case in DEFAULT else pytest.param(case, marks=pytest.mark.full)
          for case in CASES]

CHECK = """
import dataclasses
import sys
import json
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
import jinterp
from jinterp import models, sharding

assert jax.device_count() == 8, jax.devices()
NAMES = ["blocks.1.attn.hook_z", "blocks.1.attn.hook_pattern", "blocks.0.mlp.hook_post",
         "blocks.1.hook_resid_post", "blocks.0.attn.hook_k"]
MODELS = {
    "gpt2": models.GPT2(models.GPT2Config(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64,
                                          d_vocab=40, n_ctx=16, init_range=0.2)),
    "llama": models.Llama(models.LlamaConfig(n_layers=2, d_model=32, n_heads=8, n_kv_heads=4,
                                             d_head=8, d_mlp=64, d_vocab=48, n_ctx=16,
                                             init_range=0.2)),
    # local layer 0 with a window of 4 < 12 positions; soft-caps small enough to bite
    "gemma2": models.Gemma2(models.Gemma2Config(n_layers=2, d_model=32, n_heads=8, n_kv_heads=4,
                                                d_head=8, d_mlp=64, d_vocab=48, n_ctx=16,
                                                query_pre_attn_scalar=8, sliding_window=4,
                                                attn_softcap=2.0, final_softcap=1.5,
                                                init_range=0.2)),
}
report = {}
WANT = set(sys.argv[1].split(","))  # the cases to run
EXTRAS = sys.argv[2] == "1"  # also the gemma2 feature, divisibility, constrain, capture checks


def max_diff(a, b):
    # largest difference, relative to the reference's scale when that exceeds 1 (fp32)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(1.0, np.max(np.abs(b))))


for name, model in MODELS.items():
    if not any(case.startswith(name + "_") for case in WANT) and not (EXTRAS and name == "gemma2"):
        continue
    params = model.init(jax.random.key(0))
    tokens = np.random.default_rng(0).integers(0, model.d_vocab, (8, 12)).astype(np.int32)
    ref_logits = np.asarray(model(params, tokens))
    _, ref_cache = jinterp.run_with_cache(model, params, tokens, names=NAMES)
    ref_cache = {n: np.asarray(ref_cache[n]) for n in NAMES}
    for data, size in ((2, 4), (4, 2)):
        mesh = sharding.make_mesh(data, size)
        toks = jax.device_put(tokens, NamedSharding(mesh, P(sharding.DATA)))
        for fsdp in (False, True):
            if f"{name}_{data}x{size}_{'fsdp' if fsdp else 'tp'}" not in WANT:
                continue
            sharded = sharding.shard_params(model, params, mesh, fsdp=fsdp)
            logits = model(sharded, toks)
            logits_b, cache = jinterp.run_with_cache(model, sharded, toks, names=NAMES)
            w_q = sharded["blocks"]["attn"]["W_Q"]
            report[f"{name}_{data}x{size}_{'fsdp' if fsdp else 'tp'}"] = {
                "logits_diff": max_diff(logits, ref_logits),
                "cache_logits_diff": max_diff(logits_b, ref_logits),
                "cache_diff": {n: max_diff(cache[n], ref_cache[n]) for n in NAMES},
                "W_Q_spec": str(w_q.sharding.spec),
                "W_Q_shard_shape": list(w_q.addressable_shards[0].data.shape),
                "W_E_spec": str(sharded["embed"]["W_E"].sharding.spec),
                "W_out_spec": str(sharded["blocks"]["mlp"]["W_out"].sharding.spec),
                "n_devices": len(w_q.sharding.device_set),
            }
    if name == "gemma2" and EXTRAS:  # each feature moves the logits (else the case is weak)
        for change in ({"sliding_window": None, "local_layers": (False, False)},
                       {"attn_softcap": None}, {"final_softcap": None}):
            plain = models.Gemma2(dataclasses.replace(model.config, **change))
            report["gemma2_without_" + next(iter(change))] = max_diff(
                plain(params, tokens), ref_logits)

if not EXTRAS:
    print("REPORT" + json.dumps(report))
    sys.exit(0)
# n_kv_heads = 2 cannot be split 4 ways: the error names the parameter and the fix
bad = models.Llama(models.LlamaConfig(n_layers=1, d_model=16, n_heads=4, n_kv_heads=2, d_head=4,
                                      d_mlp=32, d_vocab=32))
try:
    sharding.shard_params(bad, bad.init(jax.random.key(1)), sharding.make_mesh(2, 4))
    report["divisibility_error"] = None
except ValueError as err:
    report["divisibility_error"] = str(err)
# constrain: by its own mesh, by the context mesh (jax.set_mesh), reshard on Explicit axes;
# a dimension its mesh axis does not divide stays replicated
mesh = sharding.make_mesh(2, 4)
z_axes = ("batch", "pos", "n_heads", "d_head")
x = jnp.arange(4 * 6 * 8 * 8, dtype=jnp.float32).reshape(4, 6, 8, 8)
def spec_of(y, want):
    return bool(y.sharding.is_equivalent_to(NamedSharding(y.sharding.mesh, want), y.ndim))
with jax.set_mesh(mesh):
    y = jax.jit(lambda v: sharding.constrain(v * 2, z_axes))(x)
report["constrain_context_mesh"] = spec_of(y, P("data", None, "model", None))
y = jax.jit(lambda v: sharding.constrain(v * 2, z_axes, mesh))(x)
report["constrain_given_mesh"] = spec_of(y, P("data", None, "model", None))
y = jax.jit(lambda v: sharding.constrain(v[:, :, :2] * 2, ("batch", "pos", "n_kv_heads",
                                                            "d_head"), mesh))(x)
report["constrain_indivisible_replicated"] = spec_of(y, P("data", None, None, None))
explicit = jax.make_mesh((2, 4), ("data", "model"),
                         axis_types=(jax.sharding.AxisType.Explicit,) * 2)
with jax.set_mesh(explicit):
    y = jax.jit(lambda v: sharding.constrain(v * 2, z_axes))(x)
report["constrain_explicit_mesh"] = spec_of(y, P("data", None, "model", None))
report["constrain_values"] = bool(np.array_equal(y, 2 * x))
# Under a context mesh, the layer loop lays each capture out by its point's axes.
gpt2 = MODELS["gpt2"]
params = gpt2.init(jax.random.key(0))
tokens = np.random.default_rng(0).integers(0, gpt2.d_vocab, (8, 12)).astype(np.int32)
names = ["blocks.0.attn.hook_z", "blocks.1.attn.hook_z", "blocks.1.mlp.hook_post"]
_, plain_cache = jinterp.run_with_cache(gpt2, params, tokens, names=names)
with jax.set_mesh(mesh):
    _, cache = jinterp.run_with_cache(gpt2, sharding.shard_params(gpt2, params, mesh), tokens,
                                      names=names)
report["capture_z_spec"] = spec_of(cache.stack("attn.hook_z"), P(None, "data", None, "model"))
report["capture_mlp_spec"] = spec_of(cache.stack("mlp.hook_post"), P(None, "data", None, "model"))
report["capture_values"] = max(max_diff(cache[n], plain_cache[n]) for n in names)
print("REPORT" + json.dumps(report))
"""


@functools.lru_cache(maxsize=2)
def _report(cases: tuple[str, ...], extras: bool) -> dict:
    out = run_on_fake_devices(CHECK, args=(",".join(cases), "1" if extras else "0"))
    line = [ln for ln in out.splitlines() if ln.startswith("REPORT")][-1]
    return json.loads(line[len("REPORT"):])


@pytest.fixture(scope="module")
def report():
    return _report(DEFAULT, True)


@pytest.fixture
def case_report(report, case):
    """The report holding ``case``: the default one, or the full cases' (one subprocess)."""
    if case in report:
        return report[case]
    return _report(tuple(c for c in CASES if c not in DEFAULT), False)[case]


@pytest.mark.parametrize("case", PARAMS)
def test_sharded_params_give_single_device_results(case_report, case):
    r = case_report
    assert r["n_devices"] == 8
    assert r["logits_diff"] < ATOL and r["cache_logits_diff"] < ATOL, r
    assert max(r["cache_diff"].values()) < ATOL, r["cache_diff"]


@pytest.mark.parametrize("case", PARAMS)
def test_params_really_are_sharded(case_report, case):
    r = case_report
    data, size = (int(n) for n in case.split("_")[1].split("x"))
    fsdp = case.endswith("fsdp")
    n_heads = 4 if case.startswith("gpt2") else 8
    # W_Q [layer, n_heads, d_model, d_head]: heads over model, d_model over data with FSDP
    assert r["W_Q_spec"] == ("P(None, 'model', 'data', None)" if fsdp
                             else "P(None, 'model', None, None)"), r
    assert r["W_Q_shard_shape"] == [2, n_heads // size, 32 // data if fsdp else 32, 8], r
    assert r["W_E_spec"] == ("P('model', 'data')" if fsdp else "P('model', None)"), r
    assert r["W_out_spec"] == ("P(None, 'model', 'data')" if fsdp
                               else "P(None, 'model', None)"), r


@pytest.mark.parametrize("feature", ["sliding_window", "attn_softcap", "final_softcap"])
def test_gemma2_features_move_the_logits(report, feature):
    """The sliding window and both soft-caps are live in this config (else the case is weak)."""
    assert report[f"gemma2_without_{feature}"] > 1e-3, report[f"gemma2_without_{feature}"]


def test_indivisible_mesh_raises_naming_parameter_and_fix(report):
    msg = report["divisibility_error"]
    assert msg is not None, "a 4-way split of 2 kv heads did not raise"
    for part in ("blocks.attn.W_K", "(1, 2, 16, 4)", "'n_kv_heads'", "'model' of size 4",
                 "{'data': 2, 'model': 4}", "Use a mesh", "replicate 'n_kv_heads'"):
        assert part in msg, (part, msg)


@pytest.mark.parametrize("check", ["context_mesh", "given_mesh", "indivisible_replicated",
                                   "explicit_mesh", "values"])
def test_constrain_places_activations_by_their_logical_axes(report, check):
    assert report[f"constrain_{check}"], check


def test_captures_follow_their_points_axes_under_a_context_mesh(report):
    assert report["capture_z_spec"] and report["capture_mlp_spec"]
    assert report["capture_values"] < ATOL
