"""Checks on values that live on a device, without a blocking copy to the host.

Checking token ids (or an index array inside an intervention) on the host means copying a
device array back before the program runs: a blocking sync on an accelerator, and impossible
for a multi-host global array whose shards live on other hosts. Instead the check becomes part
of the compiled program: it reduces the array to a flag (and the few numbers the message
needs) on the device, and a host callback raises when the flag is set. The error reaches the
caller as a ``JaxRuntimeError`` that carries the message, when the result is computed, and
nothing waits for it beforehand.

Host data (numpy arrays, Python lists and scalars) is checked on the host instead, before
anything is traced, and raises the plain ``ValueError``.
"""

from __future__ import annotations

import jax
import numpy as np
from jaxtyping import Array, Bool


def is_host_value(x) -> bool:
    """True for values whose contents Python can read for free (not jax arrays, not tracers)."""
    return not isinstance(x, (jax.Array, jax.core.Tracer))


def device_check(failed: Bool[Array, ""], message: str, *values: Array) -> None:
    """Inside a traced program: raise ``ValueError(message.format(*values))`` if ``failed``.

    Args:
        failed: a boolean scalar computed on the device.
        message: the error text; ``{}`` fields are filled with ``values`` (read only on failure).
        values: scalars for the message (e.g. the smallest and largest offending id).
    """

    def raise_if(flag, *numbers):
        if bool(np.asarray(flag)):
            raise ValueError(message.format(*(np.asarray(n).item() for n in numbers)))

    jax.debug.callback(raise_if, failed, *values)
