"""Sparse dictionary learning: SAE architectures, fast TopK, metrics and file formats.

Every architecture is a set of pure functions over a params dict and a frozen `SAEConfig`::

    cfg = SAEConfig("topk", d_in=768, d_sae=12288, k=32)
    params = init(cfg, jax.random.key(0))
    x_hat, f = forward(cfg, params, x)
    (value, metrics), grads = jax.value_and_grad(loss, argnums=1, has_aux=True)(cfg, params, x)

See `jinterp.sae.architectures` for the list and the paper behind each one,
`jinterp.sae.metrics` for evaluation metrics and `jinterp.sae.io` for SAELens / Gemma Scope
files.
"""

from jinterp.sae import metrics
from jinterp.sae.architectures import (
    REGISTRY,
    after_grad,
    after_update,
    check_params,
    decode,
    encode,
    forward,
    init,
    loss,
    param_shapes,
)
from jinterp.sae.config import ARCHITECTURE_NAMES, Architecture, LossContext, SAEConfig

__all__ = [
    "ARCHITECTURE_NAMES",
    "Architecture",
    "LossContext",
    "REGISTRY",
    "SAEConfig",
    "after_grad",
    "after_update",
    "check_params",
    "decode",
    "encode",
    "forward",
    "init",
    "loss",
    "metrics",
    "param_shapes",
]

# Training: the jitted step API, the train() driver, sweeps, sharding, activation sources.
# (modules: train_step.py = state + jitted step, trainer.py = the train() driver)
from jinterp.sae import sharding  # noqa: E402
from jinterp.sae.data import ArraySource, IteratorSource  # noqa: E402
from jinterp.sae.schedule import TrainConfig  # noqa: E402
from jinterp.sae.sweep import (  # noqa: E402
    instance_state,
    make_sweep_loop,
    make_sweep_step,
    plan_sweep,
    sweep_state,
)
from jinterp.sae.train_step import (  # noqa: E402
    HParams,
    TrainState,
    make_train_loop,
    make_train_step,
    train_state,
)
from jinterp.sae.trainer import (  # noqa: E402
    TrainResult,
    estimate_norm_scale,
    fold_norm_scale,
    geometric_median,
    train,
)

__all__ += [
    "ArraySource",
    "HParams",
    "IteratorSource",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "estimate_norm_scale",
    "fold_norm_scale",
    "geometric_median",
    "instance_state",
    "make_sweep_loop",
    "make_sweep_step",
    "make_train_loop",
    "make_train_step",
    "plan_sweep",
    "sharding",
    "sweep_state",
    "train",
    "train_state",
]

# Real models: token sources, the activation store, training on a model, splicing, evaluation,
# files, the disk cache. (modules: sources.py, store.py, model_trainer.py, splice.py,
# evaluate.py, io.py, disk_cache.py;
# ``python -m jinterp.sae.train`` is the command line.)
from jinterp.sae import io, sources  # noqa: E402
from jinterp.sae.disk_cache import cache_activations, cached_arrays  # noqa: E402
from jinterp.sae.evaluate import evaluate  # noqa: E402
from jinterp.sae.io import LoadedSAE, load_gemma_scope, load_saelens, save_saelens  # noqa: E402
from jinterp.sae.model_trainer import ModelTrainResult, train_on_model  # noqa: E402
from jinterp.sae.sources import (  # noqa: E402
    SyntheticTokenSource,
    TokenArraySource,
    TokenSource,
    text_source,
)
from jinterp.sae.splice import Splice, splice  # noqa: E402
from jinterp.sae.store import ActivationStore, HookSpec, StoreState  # noqa: E402

__all__ += [
    "ActivationStore",
    "HookSpec",
    "LoadedSAE",
    "ModelTrainResult",
    "Splice",
    "StoreState",
    "SyntheticTokenSource",
    "TokenArraySource",
    "TokenSource",
    "cache_activations",
    "cached_arrays",
    "evaluate",
    "io",
    "load_gemma_scope",
    "load_saelens",
    "save_saelens",
    "sources",
    "splice",
    "text_source",
    "train_on_model",
]

# Transcoders (one activation -> another; an MLP replaced) and crosscoders (several layers or
# models at once; model diffing). (modules: transcoder_data.py, transcoder_splice.py,
# transcoder_eval.py, crosscoder.py, crosscoder_eval.py, model_streams.py, diffing.py)
from jinterp.sae import diffing  # noqa: E402
from jinterp.sae.architectures import reconstruct  # noqa: E402
from jinterp.sae.crosscoder import (  # noqa: E402
    crosscoder_forward,
    crosscoder_patches,
    decoder_blocks,
    fold_block_scales,
)
from jinterp.sae.crosscoder_eval import evaluate_crosscoder  # noqa: E402
from jinterp.sae.transcoder_data import PairedIteratorSource, PairedSource  # noqa: E402
from jinterp.sae.transcoder_eval import evaluate_transcoder  # noqa: E402
from jinterp.sae.transcoder_splice import TranscoderSplice, splice_transcoder  # noqa: E402

__all__ += [
    "PairedIteratorSource",
    "PairedSource",
    "TranscoderSplice",
    "crosscoder_forward",
    "crosscoder_patches",
    "decoder_blocks",
    "diffing",
    "evaluate_crosscoder",
    "evaluate_transcoder",
    "fold_block_scales",
    "reconstruct",
    "splice_transcoder",
]
