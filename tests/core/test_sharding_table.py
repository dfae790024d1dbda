"""The one sharding table (`jinterp.sharding`) on a single device: specs, rules, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P

from jinterp import names
from jinterp import sharding as sh

MESH = AbstractMesh((2, 4), ("data", "model"))  # a 2 x 4 mesh without needing 8 devices


def test_table_covers_the_axis_vocabulary():
    vocabulary = set(names.AXES) - {"1"}  # "1" (a kept axis of size one) is a size literal
    assert vocabulary <= set(sh.RULES), vocabulary - set(sh.RULES)
    assert {a for a, m in sh.RULES.items() if m == sh.MODEL} == {
        "n_heads", "n_kv_heads", "d_mlp", "d_vocab", "d_sae"}
    assert {a for a, m in sh.RULES.items() if m == sh.DATA} == {"batch"}
    assert sh.FSDP_RULES == {**sh.RULES, "d_model": sh.DATA}


def test_spec_maps_logical_axes():
    assert sh.spec(("layer", "n_heads", "d_model", "d_head"), MESH) == P(None, "model", None, None)
    assert sh.spec(("batch", "pos", "n_kv_heads", "d_head"), MESH) == P("data", None, "model", None)
    assert sh.spec(("batch", "pos", "1"), MESH) == P("data", None, None)  # size literal
    assert sh.spec((None, "d_sae"), MESH) == P(None, "model")
    assert sh.spec(("d_vocab", "d_model"), MESH, sh.FSDP_RULES) == P("model", "data")


def test_each_mesh_axis_used_once_per_spec():
    # hook_pattern: n_heads takes model first; q_pos / k_pos are replicated anyway.
    assert sh.spec(("batch", "n_heads", "q_pos", "k_pos"), MESH) == P("data", "model", None, None)
    # an activation under FSDP rules: batch takes data, d_model must stay replicated
    assert sh.spec(("batch", "pos", "d_model"), MESH, sh.FSDP_RULES) == P("data", None, None)
    # two model-sharded dims: only the first is split
    assert sh.spec(("d_mlp", "d_vocab"), MESH) == P("model", None)


def test_mesh_axes_the_mesh_lacks_are_dropped():
    data_only = AbstractMesh((8,), ("data",))
    assert sh.spec(("batch", "pos", "n_heads", "d_head"), data_only) == P("data", None, None, None)
    assert sh.spec(("d_model", "d_vocab"), AbstractMesh((2,), ("model",))) == P(None, "model")


def test_unknown_axis_is_an_error():
    with pytest.raises(ValueError, match=r"unknown logical axis 'dmodel'.*add it to"):
        sh.spec(("batch", "dmodel"), MESH)


def test_divisibility_error_names_parameter_shape_axes_mesh_and_fix():
    with pytest.raises(ValueError) as err:
        sh.named_sharding(("layer", "n_kv_heads", "d_model", "d_head"), (2, 2, 32, 8), MESH,
                          name="parameter blocks.attn.W_K")
    msg = str(err.value)
    for part in ("blocks.attn.W_K", "(2, 2, 32, 8)", "'n_kv_heads'", "'model' of size 4",
                 "{'data': 2, 'model': 4}", "Use a mesh", "replicate 'n_kv_heads'"):
        assert part in msg, (part, msg)
    with pytest.raises(ValueError, match="name 2 dimensions"):
        sh.named_sharding(("d_model", "d_vocab"), (4, 4, 4), MESH, name="W_U")


def test_one_device_mesh_and_constrain_without_mesh():
    mesh = sh.make_mesh(1, 1)
    assert mesh.axis_names == (sh.DATA, sh.MODEL) and mesh.shape == {"data": 1, "model": 1}
    with pytest.raises(ValueError, match="needs 8 devices"):
        sh.make_mesh(2, 4, devices=jax.devices()[:1])
    x = jnp.ones((2, 3))
    assert sh.constrain(x, ("batch", "d_model")) is x  # no mesh anywhere: a no-op
    y = jax.jit(lambda v: sh.constrain(v, ("batch", "d_model"), mesh))(x)
    np.testing.assert_array_equal(y, x)
    with pytest.raises(ValueError, match="one name per dimension"):
        sh.constrain(x, ("batch",), mesh)
    with pytest.raises(ValueError, match="unknown logical axis 'btach'"):
        sh.constrain(x, ("btach", "d_model"))  # checked without a mesh too


def test_param_shardings_follow_the_ports_param_axes():
    from jinterp import models

    model = models.GPT2(models.GPT2Config(n_layers=1, d_model=8, n_heads=2, d_head=4, d_mlp=16,
                                          d_vocab=12, n_ctx=8))
    mesh = sh.make_mesh(1, 1)
    tp = sh.param_shardings(model, mesh)  # from param_shapes(): nothing allocated
    assert tp["blocks"]["attn"]["W_Q"].spec == P(None, "model", None, None)
    assert tp["blocks"]["mlp"]["W_in"].spec == P(None, None, "model")
    fsdp = sh.param_shardings(model, mesh, fsdp=True)
    assert fsdp["blocks"]["attn"]["W_O"].spec == P(None, "model", None, "data")
    assert fsdp["embed"]["W_E"].spec == P("model", "data")
    params = model.init(jax.random.key(0))
    placed = sh.shard_params(model, params, mesh)
    assert placed["blocks"]["attn"]["W_Q"].sharding.spec == P(None, "model", None, None)
    del params["blocks"]["attn"]["W_Q"]
    with pytest.raises(ValueError, match=r"params lack \['blocks.attn.W_Q'\]"):
        sh.shard_params(model, params, mesh)
