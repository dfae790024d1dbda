"""Grokking modular addition: Nanda, Chan, Lieberum, Smith, Steinhardt (ICLR 2023).

A one-layer transformer trained with full-batch AdamW and weight decay on ``(a + b) mod 113``
first memorises its 30% training split, then, thousands of steps later, generalises ("groks").
This study reproduces the run and the paper's Fourier progress measures that show *why*:

- :mod:`.config`   the authors' setup as a frozen :class:`GrokConfig` (and the GPT-2 port config)
- :mod:`.data`     all p^2 pairs split exactly like the authors' Python ``random.shuffle``
- :mod:`.model`    the paper's init, a last-position forward, a float32-exact cross-entropy
- :mod:`.training` ``lax.scan`` chunks, seeds in parallel with ``vmap``, orbax exact resume
- :mod:`.fourier`  Fourier basis, trig directions of a + b, key frequencies, Gini
- :mod:`.measures` restricted/excluded loss and the other progress measures (via ``jinterp``)
- :mod:`.analysis` phases and the summary; :mod:`.plots` figures; :mod:`.cli` the command

Run ``python -m jinterp.experiments.grokking --out DIR`` (``--fast`` for a seconds-long smoke run).
"""

from .analysis import analyse_run
from .config import GrokConfig
from .data import ModAddData, make_data, tokens
from .model import cross_entropy, init_params, last_logits, loss_and_accuracy
from .training import init_state, load_history, make_chunk_fn, train

__all__ = ["GrokConfig", "ModAddData", "analyse_run", "cross_entropy", "init_params", "init_state",
           "last_logits", "load_history", "loss_and_accuracy", "make_chunk_fn", "make_data",
           "tokens", "train"]
