"""The forward with the batch sharded over 8 fake CPU devices equals the single-device forward."""

from multidevice import run_on_fake_devices


def test_batch_sharded_forward_matches_single_device():
    out = run_on_fake_devices("""
        import jax, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        import jinterp
        from jinterp import models
        assert jax.device_count() == 8, jax.devices()
        model = models.GPT2(models.GPT2Config(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64,
                                              d_vocab=40, n_ctx=16))
        params = model.init(jax.random.key(0))
        tokens = np.random.default_rng(0).integers(0, 40, (16, 12))
        name = "blocks.1.attn.hook_z"
        single_logits, single_cache = jinterp.run_with_cache(model, params, tokens, names=name)
        mesh = Mesh(np.array(jax.devices()), ("data",))
        sharded_tokens = jax.device_put(tokens, NamedSharding(mesh, P("data")))
        params_repl = jax.device_put(params, NamedSharding(mesh, P()))
        logits, cache = jinterp.run_with_cache(model, params_repl, sharded_tokens, names=name)
        assert len(logits.sharding.device_set) == 8, logits.sharding
        np.testing.assert_allclose(logits, single_logits, atol=1e-5)
        np.testing.assert_allclose(cache[name], single_cache[name], atol=1e-5)
        print("OK", logits.sharding)
    """)
    assert "OK" in out
