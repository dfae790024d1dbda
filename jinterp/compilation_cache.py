"""JAX's persistent compilation cache, on by default, so a re-run notebook does not recompile.

Every new set of captured names or hook structure is a new program, and TransformerLens users
are used to paying nothing for it. Tracing stays (it is fast); XLA compilation is what costs
seconds, and JAX can keep compiled programs on disk across processes. jinterp turns that on at
import in a user cache directory, ``$JINTERP_CACHE_DIR`` or ``$XDG_CACHE_HOME/jinterp/jax``
(default ``~/.cache/jinterp/jax``), unless the user chose a directory already
(``jax_compilation_cache_dir``) or opted out with ``JINTERP_COMPILATION_CACHE=0``.
"""

from __future__ import annotations

import os

import jax

#: Programs that compile faster than this are not worth a disk round trip.
MIN_COMPILE_SECONDS = 0.5


def default_directory() -> str:
    """Where compiled programs are kept unless ``JINTERP_CACHE_DIR`` says otherwise."""
    if os.environ.get("JINTERP_CACHE_DIR"):
        return os.environ["JINTERP_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jinterp", "jax")


def enable_default() -> str | None:
    """Turns the persistent cache on (see the module docstring); returns its directory."""
    if os.environ.get("JINTERP_COMPILATION_CACHE", "1").lower() in ("0", "false", "no", "off"):
        return None
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    directory = default_directory()
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:  # a read-only home: run without the cache rather than fail to import
        return None
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return directory
