"""A fixed number of optimizer steps as one ``lax.scan``: the inner loop of every probe fit.

A fixed count (no data-dependent stopping) is what lets one fit be ``vmap``-ed over layers,
positions and tasks: every site runs the same program. L-BFGS (optax's, with its zoom line
search) reaches the optimum of the smooth convex probe losses in tens of steps, as
scikit-learn's ``lbfgs`` solver does; Adam is there for non-smooth or non-convex losses.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import jax
import optax


class Method(str, enum.Enum):
    LBFGS = "lbfgs"
    ADAM = "adam"


def minimize(loss: Callable[[Any], jax.Array], init: Any, *, steps: int,
             method: Method | str = Method.LBFGS, lr: float = 1e-2) -> Any:
    """Parameters after ``steps`` steps of ``method`` on ``loss`` (pure; ``vmap``-able)."""
    method = Method(method)
    if method is Method.LBFGS:
        opt = optax.lbfgs()
        value_and_grad = optax.value_and_grad_from_state(loss)

        def step(carry, _):
            params, state = carry
            value, grad = value_and_grad(params, state=state)
            updates, state = opt.update(grad, state, params, value=value, grad=grad,
                                        value_fn=loss)
            return (optax.apply_updates(params, updates), state), None
    else:
        opt = optax.adam(lr)

        def step(carry, _):
            params, state = carry
            grad = jax.grad(loss)(params)
            updates, state = opt.update(grad, state, params)
            return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (init, opt.init(init)), None, length=steps)
    return params
