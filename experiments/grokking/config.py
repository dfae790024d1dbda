"""The grokking setup of Nanda et al. (2023) as one frozen config, and the GPT-2 port it maps to.

Defaults are the authors' (``progress-measures-paper/transformers.py``): p = 113, inputs
``[a, b, =]`` with ``=`` = token p, 30% of the p^2 pairs for training (Python ``random`` shuffle,
seed 0), one layer, d_model 128, 4 heads of 32, d_mlp 512, ReLU, no LayerNorm, learned positions,
untied embed/unembed without biases, MLP biases, full-batch AdamW (lr 1e-3, weight decay 1.0,
betas (0.9, 0.98), 10-step linear warm-up), 40,000 steps.

The training softmax: the authors' ``full_loss`` takes ``model(data)[:, -1]``, all ``p + 1``
logits with the ``=`` token's, while their analysis reads the ``p`` answer logits. The issue asks
for 113 classes; ``eq_logit_in_loss`` chooses (``experiments/grokking/README.md`` says what it
changes).
"""

from __future__ import annotations

import dataclasses

from jinterp import models


def check_seeds(seeds: tuple[int, ...]) -> None:
    """Raises ValueError unless ``seeds`` are at least one distinct non-negative integer.

    Shared by :class:`GrokConfig` and the CLI's ``--seeds`` (which names the flag in its error).
    Seeds become ``jax.random.key(uint32)``, so a negative one has no key.
    """
    if not seeds:
        raise ValueError("seeds must name at least one seed, e.g. (0,).")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {tuple(seeds)}.")
    if min(seeds) < 0:
        raise ValueError(
            f"seeds must be non-negative (each seeds jax.random.key), got {tuple(seeds)}.")


@dataclasses.dataclass(frozen=True)
class GrokConfig:
    """Task, model, optimiser and run-length settings.

    Attributes:
        p: the prime modulus; inputs are ``a, b in [0, p)``, the ``=`` token is ``p``.
        frac_train: fraction of the p^2 pairs used for training.
        data_seed: seed of Python's ``random.shuffle`` that splits the pairs (authors: 0).
        d_model / n_heads / d_head / d_mlp: model shape (1 layer).
        lr / weight_decay / beta1 / beta2 / eps / warmup_steps: AdamW with linear warm-up.
        steps: optimiser steps (full batch, so steps = epochs).
        steps_per_call: steps scanned in one compiled call; also the checkpoint interval and
            the interval of the test-set evaluation.
        snapshot_every: keep the parameters every this many steps for the progress measures.
        seeds: model-init seeds trained together with ``vmap`` (the first is the "default seed").
        eq_logit_in_loss: train (and report train/test loss) with a softmax over all ``p + 1``
            logits, the ``=`` token's included, as the authors' ``full_loss`` does; False uses
            the ``p`` answer classes only. Analyses always read the ``p`` answer logits.
    """

    p: int = 113
    frac_train: float = 0.3
    data_seed: int = 0
    d_model: int = 128
    n_heads: int = 4
    d_head: int = 32
    d_mlp: int = 512
    lr: float = 1e-3
    weight_decay: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-8
    warmup_steps: int = 10
    steps: int = 40_000
    steps_per_call: int = 100
    snapshot_every: int = 500
    seeds: tuple[int, ...] = (0,)
    eq_logit_in_loss: bool = False

    def __post_init__(self):
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if self.p < 3:
            raise ValueError(f"p must be at least 3 (a prime modulus such as 113), got {self.p}.")
        if not 0.0 < self.frac_train < 1.0:
            raise ValueError(f"frac_train must lie in (0, 1), got {self.frac_train}.")
        for name in ("d_model", "n_heads", "d_head", "d_mlp", "steps", "steps_per_call",
                     "snapshot_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if self.steps % self.steps_per_call:
            raise ValueError(f"steps ({self.steps}) must be a multiple of steps_per_call "
                             f"({self.steps_per_call}) so every chunk has the same compiled shape.")
        if self.snapshot_every % self.steps_per_call:
            raise ValueError(f"snapshot_every ({self.snapshot_every}) must be a multiple of "
                             f"steps_per_call ({self.steps_per_call}): snapshots are taken at "
                             "chunk ends.")
        check_seeds(self.seeds)

    @property
    def d_vocab(self) -> int:
        """Input vocabulary: the p residues and the ``=`` token."""
        return self.p + 1

    @property
    def loss_classes(self) -> int:
        """Logits in the training softmax: ``p + 1`` with the ``=`` logit, else ``p``."""
        return self.d_vocab if self.eq_logit_in_loss else self.p

    @property
    def n_train(self) -> int:
        return int(self.frac_train * self.p * self.p)

    def model_config(self) -> models.GPT2Config:
        """The paper's model as a :class:`models.GPT2Config`.

        One layer, no LayerNorm, ReLU, learned positions, untied embed/unembed without biases.
        """
        return models.GPT2Config(
            n_layers=1, d_model=self.d_model, n_heads=self.n_heads, d_head=self.d_head,
            d_mlp=self.d_mlp, d_vocab=self.d_vocab, n_ctx=3, activation=models.Activation.RELU,
            normalization=models.Norm.NONE, positional=models.Positional.LEARNED,
            tied_embeddings=False, attn_bias=False, mlp_bias=True, unembed_bias=False)

    @classmethod
    def fast(cls, **overrides) -> "GrokConfig":
        """A tiny configuration for tests and smoke runs (p = 23, small model, 400 steps)."""
        small = dict(p=23, d_model=32, n_heads=2, d_head=16, d_mlp=64, steps=400,
                     steps_per_call=50, snapshot_every=100)
        return cls(**(small | overrides))
