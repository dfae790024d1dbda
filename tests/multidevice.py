"""Runs a Python snippet in a fresh interpreter that sees 8 fake CPU devices."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_on_fake_devices(code: str, n_devices: int = 8, timeout: int = 600,
                        args: tuple[str, ...] = ()) -> str:
    """Executes ``code`` with ``n_devices`` fake CPU devices; returns stdout, raises on failure.

    ``args`` become ``sys.argv[1:]`` of the snippet (which cases to run, say).
    """
    env = dict(os.environ)
    env["XLA_FLAGS"] = (f"{os.environ.get('XLA_FLAGS', '')} "
                        f"--xla_force_host_platform_device_count={n_devices}")
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n"
                             f"{proc.stderr}")
    return proc.stdout
