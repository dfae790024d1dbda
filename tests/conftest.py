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

TESTS = os.path.dirname(os.path.abspath(__file__))
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)
