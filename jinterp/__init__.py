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
from jinterp.cache import ActivationCache
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
from jinterp.model import HookedModel
from jinterp.run import hook_names_where, run_with_cache, run_with_hooks

_compilation_cache.enable_default()

__all__ = [
    "ActivationCache", "At", "HookInfo", "HookedModel", "Intervention", "MeanAblate", "Patch",
    "ProjectOut", "ResampleAblate", "Steer", "ZeroAblate", "grad_cache", "hook_names_where",
    "run_with_cache", "run_with_hooks",
]
