"""Shared test set-up: CPU only, deterministic, quiet third-party logs.

Multi-device tests run their bodies in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (see ``tests/multidevice.py``), because
the flag must be set before jax is first imported and this process keeps one device.
"""

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Hermetic runs: no compiled programs kept between test runs (a test turns it on on purpose).
os.environ.setdefault("JINTERP_COMPILATION_CACHE", "0")
# Tests compile hundreds of tiny programs and run each a few times: LLVM's optimisation passes
# are most of the suite's time (-40% CPU without them) and change no result (no fast math
# either way). Subprocesses inherit the flags (tests/multidevice.py appends to them).
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()

TESTS = os.path.dirname(os.path.abspath(__file__))
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

# Strict checks for the project's own code (see pyproject's [tool.ruff] for the linter):
# implicit rank promotion raises, and every jaxtyping annotation in the jinterp namespace
# (jinterp, jinterp.models, jinterp.experiments) is checked at call time by beartype. Both
# must be set before any jinterp module is imported.
import jax  # noqa: E402
from jaxtyping import install_import_hook  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
_JAXTYPING_HOOK = install_import_hook("jinterp", "typecheck.typechecker")
