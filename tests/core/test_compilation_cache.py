"""JAX's persistent compilation cache is on by default, in a user cache directory, opt-out.

Run in fresh processes (the cache is configured when jinterp is imported). The main program
must be storable: JAX refuses to store programs with host callbacks, so the device-side
token check runs as its own small program.
"""

import os
import subprocess
import sys

CODE = """
import sys
import jax, numpy as np
import jinterp
from jinterp import models
print("DIR", jax.config.jax_compilation_cache_dir)
if sys.argv[1:] == ["dir-only"]:
    sys.exit(0)
model = models.GPT2(models.GPT2Config(n_layers=2, d_model=64, n_heads=2, d_head=32, d_mlp=128,
                                      d_vocab=101, n_ctx=16))
params = model.init(jax.random.key(0))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
tokens = jax.numpy.asarray(np.arange(24).reshape(2, 12))  # device tokens: checked on device
jax.block_until_ready(jinterp.run_with_cache(model, params, tokens, names="blocks.1.attn.hook_z"))
"""


def _run(tmp_path, *args, **env):
    """Runs ``CODE`` in a fresh process; ``"dir-only"`` stops it after printing the directory."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("JINTERP_")}
    proc = subprocess.run([sys.executable, "-c", CODE, *args], capture_output=True, text=True,
                          env={**base, "XDG_CACHE_HOME": str(tmp_path), **env}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_on_by_default_in_the_user_cache_directory_and_stores_the_forward(tmp_path):
    out = _run(tmp_path)
    directory = tmp_path / "jinterp" / "jax"
    assert f"DIR {directory}" in out
    assert any(p.name.startswith("jit__forward") for p in directory.iterdir())


def test_opt_out_and_explicit_directory(tmp_path):
    assert "DIR None" in _run(tmp_path, JINTERP_COMPILATION_CACHE="0")
    assert not (tmp_path / "jinterp").exists()
    # (the directory is all this run checks: no model needs to compile)
    assert f"DIR {tmp_path / 'mine'}" in _run(tmp_path, "dir-only",
                                               JINTERP_CACHE_DIR=str(tmp_path / "mine"))
