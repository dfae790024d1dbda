"""The two models the reading study reads, trained in-process on repeated random subsequences.

* The induction model: the 2-layer attention-only, LayerNorm-free GPT-2 variant of
  :mod:`jinterp.experiments.induction` (its :class:`TrainConfig`, data and scanned AdamW,
  unchanged). It has a planted-by-training structure the methods should find: a previous-token
  head in layer 0 and induction heads in layer 1 that K-compose with it.
* A deeper model with LayerNorm, MLPs and biases (4 layers, d_model 64): the same task and
  training loop, for the methods that need a norm or depth (weight processing folds LayerNorm;
  a tuned lens needs more than two layers to be interesting).

Both reuse :func:`jinterp.experiments.induction.train.run_training`, so they train many steps
per compiled call and resume bit-identically from orbax checkpoints.
"""

from __future__ import annotations

import dataclasses

from jinterp import models
from jinterp.experiments.induction.train import TrainConfig


@dataclasses.dataclass(frozen=True)
class NormTrainConfig(TrainConfig):
    """:class:`TrainConfig` for a GPT-2 with LayerNorm, GELU MLPs and every bias.

    Attributes:
        d_mlp: MLP width (``4 * d_model`` as in GPT-2).

    The unembedding is untied (so weight processing and weight orthogonalisation apply as on a
    pretrained GPT-2 after TransformerLens's untying) and has a bias, so ``fold_ln`` has a
    ``ln_final.b`` to fold into.
    """

    d_mlp: int = 256

    def __post_init__(self):
        super().__post_init__()
        if self.d_mlp <= 0:
            raise ValueError(f"NormTrainConfig.d_mlp must be positive, got {self.d_mlp}.")

    def model(self) -> models.GPT2:
        return models.GPT2(models.GPT2Config(
            n_layers=self.n_layers, d_model=self.d_model, n_heads=self.n_heads, d_head=self.d_head,
            d_mlp=self.d_mlp, d_vocab=self.data.d_vocab, n_ctx=self.data.n_ctx,
            normalization=models.Norm.LAYERNORM, positional=models.Positional.LEARNED,
            tied_embeddings=False, attn_bias=True, mlp_bias=True, unembed_bias=True,
            init_range=self.init_range))
