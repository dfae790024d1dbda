"""Ground truth: SAEs trained with jinterp's loop recover a planted dictionary (128 unit
features in 32 dimensions, 2 active per token on average, power-law frequencies), scored by the
fraction of true features with a decoder row at cosine >= 0.9. Target (issue 5, item 8): >= 0.9
for every architecture.

Why 2 active features: the issue's full-size problem (1024 features in 256 dims, 8 active) has
3% of the dimensions' worth of features active per token; a latent aligned with a feature then
sees interference noise of std ~0.9 against active values of 2.7-8 (normalised units). With 4
active in 32 dims (12.5%; this test until November 2026) the same ratio falls to ~1.6, and
JumpReLU, whose per-latent thresholds must separate the two, reached only 0.62-0.84 at this
size (every penalty option, lr and bandwidth tried) while passing at full size (0.92-0.94,
``benchmarks/bench_sae_ground_truth.py``). 2 active in 32 dims
(6%) restores a signal-to-noise ratio close to the full size's (~2.7) at the same cost.

Two compiled sweeps: relu, topk and switch learn the dictionary in 1500 steps; the others train
for 6000. The recipes differ from the architectures' defaults where the small problem needs
it, each choice a documented option rather than a test-only hack:

* batchtopk / matryoshka: AuxK weight 1 (SAELens's default; Gao's 1/32 revives the latents
  that batch-level selection starves too slowly).
* matryoshka: two nested widths (256, 512) instead of five; with a 32-latent first prefix the
  early latents learn blends of the 128 flat features.
* gated and jumprelu: the dead-latent pre-activation loss (``pre_act_loss_coefficient``).
* switch: 4 experts of 128 latents, so one expert can hold all 128 features (any token may
  carry any feature; the full-size benchmark keeps the same rule).
"""

from __future__ import annotations

import numpy as np

from jinterp.sae import synthetic
from jinterp.sae.ground_truth import recover_features
from jinterp.sae.config import SAEConfig

D, D_SAE, K = 32, 512, 2
DATA = synthetic.SyntheticConfig(n_features=128, d=D, mean_active=K)
DEAD = 20_000  # tokens without firing before AuxK / the pre-activation loss act (~20 steps)
FAST = {
    "relu": SAEConfig("relu", d_in=D, d_sae=D_SAE, l1_coefficient=1.0),
    "topk": SAEConfig("topk", d_in=D, d_sae=D_SAE, k=K, dead_after_tokens=DEAD),
    "switch": SAEConfig("switch", d_in=D, d_sae=D_SAE, k=K, n_experts=4),
}
FAST_STEPS, SLOW_STEPS = 1500, 6000
SLOW = {
    "batchtopk": SAEConfig("batchtopk", d_in=D, d_sae=D_SAE, k=K, dead_after_tokens=DEAD,
                           aux_k_coefficient=1.0),
    "matryoshka": SAEConfig("matryoshka", d_in=D, d_sae=D_SAE, k=K, dead_after_tokens=DEAD,
                            aux_k_coefficient=1.0, matryoshka_prefixes=(256,)),
    "gated": SAEConfig("gated", d_in=D, d_sae=D_SAE, l1_coefficient=3.0, dead_after_tokens=DEAD,
                       pre_act_loss_coefficient=1.0),
    "jumprelu": SAEConfig("jumprelu", d_in=D, d_sae=D_SAE, l0_coefficient=1.0,
                          jumprelu_bandwidth=0.05, jumprelu_init_threshold=0.05,
                          dead_after_tokens=DEAD, pre_act_loss_coefficient=0.1),
}
LR = {name: 1e-2 for name in FAST | SLOW} | {"jumprelu": 3e-3}
FLOOR = 0.9  # issue 5's target, for every architecture


def test_every_architecture_recovers_planted_features():
    """One test for all seven: the two sweeps take minutes, and a per-architecture test
    would let pytest-xdist train them again on every worker that gets one of them."""
    fast, _ = recover_features(FAST, DATA, steps=FAST_STEPS, batch_size=1024,
                               lr={n: LR[n] for n in FAST}, seed=0)
    slow, _ = recover_features(SLOW, DATA, steps=SLOW_STEPS, batch_size=1024,
                               lr={n: LR[n] for n in SLOW}, seed=0)
    results = fast | slow
    print({name: round(r.recovery, 3) for name, r in results.items()})
    failures = {name: (round(r.recovery, 3), round(r.l0, 2), round(r.fvu, 3))
                for name, r in results.items()
                if r.recovery < FLOOR or not r.fvu < 0.5 or not np.isfinite(r.l0)}
    assert not failures, f"(recovery, l0, fvu) below {FLOOR}: {failures}"


def test_untrained_dictionary_does_not_pass():
    """The criterion can fail: random decoder rows recover (almost) nothing."""
    import jax

    from jinterp.sae import architectures

    dirs = synthetic.make_dictionary(DATA, jax.random.PRNGKey(0))
    params = architectures.init(FAST["topk"], jax.random.PRNGKey(1))
    assert float(synthetic.feature_recovery(dirs, params["W_dec"])) < 0.1
