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
# Tests compile thousands of tiny programs and run each a few times, so compiling is most of
# the suite's time. Without LLVM's optimisation passes: -40% CPU. With XLA CPU's older loop
# emitters instead of its MLIR fusion emitters: a further -35% (compile time -55%). Neither
# changes a result beyond float rounding (no fast math either way). A jaxlib that no longer
# knows the emitter flag aborts on it, so it is probed first, once: xdist workers and
# subprocesses inherit the flags (tests/multidevice.py appends to them).
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
LEGACY_EMITTERS = "--xla_cpu_use_fusion_emitters=false"


def _fast_compile_flags() -> str:
    import subprocess

    probe = subprocess.run(
        [sys.executable, "-c", "import jax; jax.jit(lambda x: x + 1)(1.0)"],
        env={**os.environ, "XLA_FLAGS": f"{FAST_COMPILE} {LEGACY_EMITTERS}"},
        capture_output=True, timeout=120)
    return f"{FAST_COMPILE} {LEGACY_EMITTERS}" if probe.returncode == 0 else FAST_COMPILE


if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_fast_compile_flags()}".strip()

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

# `make test` hands whole files to two workers (`--dist loadfile`) in collection order, so a slow
# file collected last leaves one worker idle while the other finishes it. The slowest files
# (summed durations of a full run, about 15-50 s each) go first; the rest keep their order.
SLOW_FIRST = (
    "scale/test_faults.py", "experiments/test_reading_study.py", "patching/test_padded_sweep.py",
    "core/test_readme_tour.py", "tracr/test_methods.py", "experiments/test_superposition.py",
    "patching/test_attribution.py", "experiments/test_grokking.py", "tracr/test_from_tracr.py",
    "experiments/test_induction.py", "core/test_cpu_allocator.py",
    "patching/test_sweep_speed_paths.py", "sae/test_ground_truth.py",
    "patching/test_activation_patching.py", "probes/test_probes.py",
    "sae/test_crosscoder_model.py", "experiments/test_circuits.py",
    "scale/test_multiprocess_runs.py",
)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        path = os.path.relpath(str(item.path), TESTS).replace(os.sep, "/")
        return SLOW_FIRST.index(path) if path in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)  # stable: each file's tests keep their order
