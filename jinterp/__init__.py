"""jinterp: interpretability as pure JAX programs.

The core: :func:`run_with_cache`, :func:`run_with_hooks` and :func:`grad_cache` over any port
that follows :class:`HookedModel` (the core owns the layer loop: ``start_at_layer`` /
``stop_at_layer``, the layer as data with :class:`At`); interventions as data
(:mod:`jinterp.interventions`); activation names (:mod:`jinterp.names`); one sharding table
(:mod:`jinterp.sharding`). Ports live in ``jinterp.models``, sparse dictionaries in
``jinterp.sae``, reproductions in ``jinterp.experiments``.
"""

from jinterp import cpu_allocator as _cpu_allocator

_cpu_allocator.tune()  # before anything starts JAX's CPU backend (see the module docstring)

from jinterp import compilation_cache as _compilation_cache
from jinterp import weights
from jinterp.cache import ActivationCache
from jinterp.composition import composition_scores, copying_scores
from jinterp.factored import FactoredMatrix, OV_circuit, QK_circuit
from jinterp.generation import generate, generate_text
from jinterp.grad import grad_cache
from jinterp.hooks import At, HookInfo
from jinterp.interventions import (
    Intervention,
    MeanAblate,
    Patch,
    ProjectOut,
    ResampleAblate,
    Steer,
    ZeroAblate,
)
from jinterp.logit_attrs import logit_attrs, tokens_to_residual_directions
from jinterp.loss import lm_cross_entropy_loss, next_token_loss
from jinterp.model import HookedModel
from jinterp.readout import W_U, b_U, ln_final, to_single_token, unembed
from jinterp.run import hook_names_where, run_with_cache, run_with_hooks

_compilation_cache.enable_default()

__all__ = [
    "ActivationCache", "At", "HookInfo", "HookedModel", "Intervention", "MeanAblate", "Patch",
    "ProjectOut", "ResampleAblate", "Steer", "ZeroAblate", "grad_cache", "hook_names_where",
    "run_with_cache", "run_with_hooks",
    "FactoredMatrix", "OV_circuit", "QK_circuit", "W_U", "b_U", "composition_scores",
    "copying_scores", "lm_cross_entropy_loss", "ln_final", "logit_attrs", "next_token_loss",
    "to_single_token", "tokens_to_residual_directions", "unembed", "weights",
    "generate", "generate_text",
]
