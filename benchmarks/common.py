"""Small timing helpers shared by the benchmark scripts (median of repeats, compile time apart)."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Callable

import jax


def time_calls(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> dict:
    """Median / min wall time of ``fn()`` after ``warmup`` calls; blocks on JAX results."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}


def compile_seconds(jitted, *args, **kwargs) -> tuple[float, object]:
    """Seconds to lower and compile ``jitted`` for these arguments, and the compiled program."""
    start = time.perf_counter()
    compiled = jitted.lower(*args, **kwargs).compile()
    return time.perf_counter() - start, compiled


def xla_memory(compiled) -> dict:
    """XLA's own account of a compiled program's memory: arguments, outputs, temporaries."""
    analysis = compiled.memory_analysis()
    if analysis is None:
        return {}
    args, out, temp = (analysis.argument_size_in_bytes, analysis.output_size_in_bytes,
                       analysis.temp_size_in_bytes)
    return {"argument_mb": args / 2**20, "output_mb": out / 2**20, "temp_mb": temp / 2**20,
            "peak_mb": (args + out + temp) / 2**20}


def process_peak_rss_mb() -> float:
    """Peak resident memory of this process so far: Linux's ``VmHWM``, which restarts at exec
    (``ru_maxrss`` survives exec, so a subprocess started from a big parent reports the
    parent's peak); ``ru_maxrss`` (KiB) elsewhere."""
    try:
        with open("/proc/self/status") as f:
            return int(next(l for l in f if l.startswith("VmHWM:")).split()[1]) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_model() -> str:
    """The CPU's model name: speed ratios between libraries differ from one CPU to another
    (each side's matmul kernels), so every JSON says which one it ran on."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def machine() -> dict:
    return {"cpu_count": os.cpu_count(), "cpu_model": cpu_model(),
            "platform": platform.platform(), "jax": jax.__version__,
            "backend": jax.default_backend(), "load_avg_1m": os.getloadavg()[0]}
