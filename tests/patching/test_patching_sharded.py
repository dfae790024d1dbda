"""A sweep sharded over 8 fake devices equals the same sweep on one device."""

from multidevice import run_on_fake_devices

CODE = """
import jax, jax.numpy as jnp, numpy as np
import jinterp
from jinterp import metrics, patching
from core.families import family, tokens

model, params = family("llama")
clean, corrupted = jnp.asarray(tokens(2, 5, 0)), jnp.asarray(tokens(2, 5, 1))
_, cache = jinterp.run_with_cache(model, params, clean, names=lambda n: "hook_k" in n)
metric = metrics.logit_diff(3, 5)
sweep = patching.get_act_patch_attn_head_k_by_pos  # 10 nodes a layer: padded to 16 = 8 x 2
# one suffix bucket: sharding, not buckets, is under test (3 programs a sweep, not 12)
one = sweep(model, params, corrupted, cache, metric, devices=jax.devices()[:1], suffix_buckets=1)
eight = sweep(model, params, corrupted, cache, metric, chunk_size=3, suffix_buckets=1)
assert len(jax.devices()) == 8 and one.shape == eight.shape == (3, 5, 2), eight.shape
np.testing.assert_allclose(eight, one, atol=1e-5)
print("ok", float(np.ptp(np.asarray(one))))
"""


def test_sharded_over_eight_devices_equals_one_device():
    out = run_on_fake_devices("import sys; sys.path.insert(0, 'tests')\n" + CODE)
    assert out.startswith("ok") and float(out.split()[1]) > 1e-3
