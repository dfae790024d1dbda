"""The CPU allocator tuning: big captures reuse heap memory instead of faulting fresh pages.

The model is sized so each stacked MLP capture (``[layer, batch, pos, d_mlp]``, 64 MiB) is
above glibc's largest mmap threshold (32 MiB): untuned, those come back as fresh pages.

Measured in fresh processes (the settings apply at import, before JAX's CPU backend starts):
minor page faults of a second "cache everything" call, with and without the tuning.
"""

import os
import subprocess
import sys

import pytest

CODE = """
import resource, jax, numpy as np
import jinterp
from jinterp import models
model = models.GPT2(models.GPT2Config(n_layers=4, d_model=64, n_heads=4, d_head=16,
                                      d_mlp=4096, d_vocab=101, n_ctx=128))
params = model.init(jax.random.key(0))
tokens = np.random.default_rng(0).integers(0, 101, (8, 128))
for _ in range(2):  # the heap settles in a call or two (2 leave 1 fault of 40k pages)
    out = jinterp.run_with_cache(model, params, tokens)
    jax.block_until_ready(out)
    del out
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
out = jinterp.run_with_cache(model, params, tokens)
jax.block_until_ready(out)
mb = sum(x.nbytes for x in jax.tree.leaves(out)) / 2**20
print("FAULTS", resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, "MB", mb)
"""


def _faults(**env) -> tuple[int, float]:
    base = {k: v for k, v in os.environ.items() if k != "JINTERP_MALLOC_TUNING"}
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                          env={**base, **env}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    words = proc.stdout.split()
    return int(words[words.index("FAULTS") + 1]), float(words[words.index("MB") + 1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator only")
def test_captures_reuse_memory_instead_of_faulting_in_fresh_pages():
    tuned, mb = _faults()
    untuned, _ = _faults(JINTERP_MALLOC_TUNING="0")
    pages = mb * 256  # 4 KiB pages in the captured activations
    assert untuned > 0.5 * pages, (untuned, pages)  # without: every capture faults again
    assert tuned < 0.2 * pages, (tuned, pages)  # a few fresh pages as the heap settles
