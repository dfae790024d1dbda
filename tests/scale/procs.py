"""Launches N real Python processes that join one JAX runtime over 127.0.0.1 (tests, benchmarks).

Each worker gets ``sys.argv[1:] = [process_id, n_processes, port]`` and fake CPU devices
(``--xla_force_host_platform_device_count``, set in the environment before it imports JAX),
so a multi-host program runs on one machine: gloo carries the collectives between processes.
Every launch is bounded in time: on timeout or on any worker's failure all workers are killed
and the error carries each worker's stderr tail, so a hung collective fails the test instead
of hanging the suite.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: Prepended to every worker: its id, the process count and the coordinator's port.
PRELUDE = """\
import sys
PID, NPROC, PORT = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
"""


def free_port() -> int:
    """A TCP port nobody listens on right now (the coordinator binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(devices_per_process: int) -> dict[str, str]:
    """The environment of a CPU worker with ``devices_per_process`` fake devices."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    flags.append(f"--xla_force_host_platform_device_count={devices_per_process}")
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JINTERP_COMPILATION_CACHE": "0",
            "XLA_FLAGS": " ".join(flags),
            "PYTHONPATH": REPO + (os.pathsep + path if path else "")}


def _tails(procs, errs: list[str | None]) -> str:
    parts = []
    for i, (p, err) in enumerate(zip(procs, errs)):
        parts.append(f"--- process {i} (exit {p.returncode}) stderr tail:\n"
                     f"{(err or '')[-2500:]}")
    return "\n".join(parts)


def launch(worker_code: str, n_processes: int, devices_per_process: int, timeout: float,
           args: tuple[str, ...] = ()) -> list[str]:
    """Runs ``worker_code`` in ``n_processes`` processes; returns their stdouts in id order.

    Args:
        worker_code: Python source; :data:`PRELUDE` defines ``PID``, ``NPROC`` and ``PORT``.
        n_processes: how many processes (1 runs a single process, still with ``PORT``).
        devices_per_process: fake CPU devices in each.
        timeout: seconds for the whole launch; past it every worker is killed.
        args: extra command-line arguments after the three of the prelude.

    Raises:
        RuntimeError: a worker exited non-zero, or the launch ran past ``timeout``; the
            message holds every worker's stderr tail.
    """
    port = str(free_port())
    env = worker_env(devices_per_process)
    code = PRELUDE + worker_code
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i), str(n_processes), port,
                               *args], env=env, cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for i in range(n_processes)]
    outs: list[str | None] = [None] * n_processes
    errs: list[str | None] = [None] * n_processes
    deadline = time.monotonic() + timeout

    def stop_all() -> None:  # kill every worker and keep what each one wrote
        for q in procs:
            q.kill()
        for j, q in enumerate(procs):
            if errs[j] is None:
                outs[j], errs[j] = q.communicate()

    try:
        for i, p in enumerate(procs):
            left = max(1.0, deadline - time.monotonic())
            try:
                outs[i], errs[i] = p.communicate(timeout=left)
            except subprocess.TimeoutExpired:
                stop_all()
                raise RuntimeError(f"the {n_processes}-process launch ran past {timeout} s "
                                   f"and was killed\n{_tails(procs, errs)}") from None
            if p.returncode != 0:
                stop_all()
                raise RuntimeError(f"process {i} of {n_processes} failed\n"
                                   f"{_tails(procs, errs)}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return [o or "" for o in outs]


def values(out: str, key: str) -> list[float]:
    """The numbers after ``key`` on the worker's last line starting with ``key``."""
    lines = [line for line in out.splitlines() if line.startswith(key + " ")]
    if not lines:
        raise AssertionError(f"no {key!r} line in the worker's output:\n{out[-2000:]}")
    return [float(v) for v in lines[-1].split()[1:]]
