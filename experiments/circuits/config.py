"""What a circuit-study run depends on: one frozen dataclass, ``full()`` and ``fast()``."""

from __future__ import annotations

import dataclasses

from jinterp.experiments.induction.data import DataConfig
from jinterp.experiments.induction.train import TrainConfig


@dataclasses.dataclass(frozen=True)
class CircuitConfig:
    """Settings of the circuit study.

    Attributes:
        train: the 2-layer attention-only model and its training (the induction study's
            :class:`~jinterp.experiments.induction.TrainConfig`); ``full()`` trains 1,500 steps,
            past its phase change (step ~850 in the induction study) with time to sharpen.
        half_len: length of ``r`` in the ``r r`` prompts (keep ``2 * half_len < n_ctx``).
        batch: prompts in the clean / corrupted batches of the patching runs.
        score_threshold: an induction / previous-token attention score above this marks a head
            (the pattern-based reference the causal results are checked against).
        acdc_threshold: ACDC keeps an edge whose removal moves the metric by more than this
            (the metric runs 0 (corrupted) .. 1 (clean)).
        mask_sparsity / mask_steps / mask_lr: the learned edge mask's penalty weight (on the
            expected fraction of kept edges), Adam steps and learning rate.
        chunk_size: patches vmapped at once in the sweeps (None: a layer's nodes at once).
        planted: skip training and analyse the hand-built circuit of :mod:`.planted` (the
            fast mode: a known ground truth the checks must find, in seconds).
        every_analysis: every sweep, path and search; False runs only what the checks read (no
            by-position / dest x src maps, no per-head key paths, no learned edge mask).
    """

    train: TrainConfig = TrainConfig()
    half_len: int = 24
    batch: int = 32
    score_threshold: float = 0.4
    acdc_threshold: float = 0.02
    mask_sparsity: float = 0.3
    mask_steps: int = 100
    mask_lr: float = 0.1
    chunk_size: int | None = None
    planted: bool = False
    every_analysis: bool = True

    def __post_init__(self):
        if self.train.n_layers != 2:
            raise ValueError("The circuit study is about the 2-layer induction circuit; got "
                             f"n_layers={self.train.n_layers}.")
        if not 2 <= 2 * self.half_len < self.train.data.n_ctx:
            raise ValueError(f"The r r prompts need 2 <= 2 * half_len < n_ctx="
                             f"{self.train.data.n_ctx}; got half_len={self.half_len}.")
        for field in ("batch", "mask_steps"):
            if getattr(self, field) < 1:
                raise ValueError(f"CircuitConfig.{field} must be >= 1; got "
                                 f"{getattr(self, field)}.")
        if self.acdc_threshold < 0 or self.mask_sparsity < 0 or self.mask_lr <= 0:
            raise ValueError("acdc_threshold and mask_sparsity must be >= 0 and mask_lr > 0.")

    @classmethod
    def full(cls, seed: int = 0, n_steps: int = 1500) -> CircuitConfig:
        """The induction study's model, data and optimiser, trained ``n_steps``."""
        data = DataConfig(d_vocab=128, n_ctx=64, subseq_len=16, n_repeats=3, batch_size=32)
        return cls(train=TrainConfig(n_steps=n_steps, steps_per_call=100, seed=seed, data=data))

    @classmethod
    def fast(cls, seed: int = 0, n_steps: int = 100) -> CircuitConfig:
        """Seconds: the planted circuit of :mod:`.planted` (no training; ``n_steps`` is unused
        but kept in the config for the record) and only the analyses the checks read."""
        data = DataConfig(d_vocab=16, n_ctx=16, subseq_len=4, n_repeats=3, batch_size=8)
        train = TrainConfig(d_model=3 * 16 + 16, n_heads=2, d_head=16, n_steps=n_steps,
                            steps_per_call=n_steps, warmup_steps=10, seed=seed, data=data)
        return cls(train=train, half_len=7, batch=16, mask_steps=20, planted=True,
                   every_analysis=False)
