"""Ground truth: SAEs of all seven architectures, trained with jinterp's loop, recover a
planted dictionary (:data:`jinterp.sae.ground_truth.PROBLEMS` ``"test"``: 64 unit features in
32 dimensions, 1 active per token on average, power-law frequencies, d_sae 256, batch 256,
600 steps), scored by the fraction of true features with a decoder row at cosine >= 0.9.

The problem is sized to train in well under a minute and still fail when an architecture
breaks. Measured while choosing it (seed 0, same recipes, 600 steps): a decoder that is never
updated recovers 0.0 for every architecture, an encoder that is never updated 0.02-0.73, and
a 10x smaller learning rate leaves jumprelu at 0.0, gated at 0.08, matryoshka at 0.77 and
batchtopk at 0.83; the working recipes give 0.94-1.0 on seeds 0-2 (400 steps: gated 0.83).
The 4x larger problem of the previous test (``"small"``, 6.3 minutes) and the full-size one
run in ``benchmarks/bench_sae_ground_truth.py``.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jinterp.sae import architectures, synthetic
from jinterp.sae.ground_truth import ARCHITECTURES, PROBLEMS, configs, solve

PROBLEM = PROBLEMS["test"]
FLOOR = 0.9  # issue 5's target, for every architecture


# `make test` trains three architectures (TopK selection, JumpReLU's straight-through threshold
# and Gated's two paths: the two most sensitive to a broken recipe, see above, and the top-k
# family); the other four are `full`. Each group trains in one compiled sweep.
DEFAULT = ("topk", "jumprelu", "gated")
GROUPS = [DEFAULT, pytest.param(tuple(a for a in ARCHITECTURES if a not in DEFAULT),
                                marks=pytest.mark.full, id="others")]


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: "-".join(g))
def test_every_architecture_recovers_planted_features(group):
    assert PROBLEM.data.n_features > PROBLEM.data.d  # superposition, not just a basis
    results, _ = solve(PROBLEM, seed=0, only=group)
    assert tuple(results) == group
    print({name: round(r.recovery, 3) for name, r in results.items()})
    failures = {name: (round(r.recovery, 3), round(r.l0, 2), round(r.fvu, 3))
                for name, r in results.items()
                if r.recovery < FLOOR or not r.fvu < 0.5 or not np.isfinite(r.l0)}
    assert not failures, f"(recovery, l0, fvu) below {FLOOR}: {failures}"


def test_untrained_dictionary_does_not_pass():
    """The criterion can fail: the initial (random) decoder rows -- what an architecture whose
    decoder is never updated ends with -- recover (almost) nothing."""
    dirs = synthetic.make_dictionary(PROBLEM.data, jax.random.PRNGKey(0))
    for name, cfg in configs(PROBLEM).items():
        params = architectures.init(cfg, jax.random.PRNGKey(1))
        assert float(synthetic.feature_recovery(dirs, params["W_dec"])) < 0.1, name
