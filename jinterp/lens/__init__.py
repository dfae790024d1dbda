"""Lenses: read what the residual stream predicts at every layer.

- :func:`logit_lens`: the port's unembedding (final norm included) on the residual of every
  layer, from one forward pass.
- :func:`tuned_lens` / :func:`train_tuned_lens`: one affine translator per layer, trained to
  match the final logits (Belrose et al. 2023), all layers in one jitted step, orbax
  checkpoints with exact resume; at its zero initialisation it equals the logit lens.
- :func:`kl_to_final`, :func:`next_token_loss`: per-layer curves.
"""

from jinterp.lens.logit import logit_lens, resid_stack, unembed_stack
from jinterp.lens.metrics import kl_to_final, next_token_loss
from jinterp.lens.train import (
    TunedLensConfig,
    TunedLensResult,
    evaluate,
    train_step,
    train_tuned_lens,
)
from jinterp.lens.tuned import init_tuned_lens, translate, tuned_lens, tuned_lens_logits

__all__ = [
    "TunedLensConfig", "TunedLensResult", "evaluate", "init_tuned_lens", "kl_to_final",
    "logit_lens", "next_token_loss", "resid_stack", "train_step", "train_tuned_lens",
    "translate", "tuned_lens", "tuned_lens_logits", "unembed_stack",
]
