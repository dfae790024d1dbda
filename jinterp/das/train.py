"""Training DAS and boundless DAS with optax: one jitted ``lax.scan`` over every step.

Objective (Geiger et al. 2023): the cross-entropy of the model's output under the interchange
intervention toward the *counterfactual* label, the causal model's output under the matching
interchange on the high-level variable. Only the rotation (and, for boundless DAS, the
boundary) is trained; the model's params are an input of the program, never updated.

Each step draws a minibatch of (base, source, label) triples (the order is a function of the
seed alone), runs the source up to the hook (``stop_at_layer``: later blocks and the
unembedding are never computed), then the base with :class:`~jinterp.das.Interchange` at the
hook and takes the loss at ``label_pos``.

Boundless DAS (Wu et al. 2023) learns how many rotated dimensions to swap. The mask over the
``d`` rows of the full rotation is ``m_i = sigmoid((size - i - 1/2) / T)``: about 1 for the
first ``size`` rows and 0 after, with ``size = d * sigmoid(boundary)`` learned and a penalty
``sparsity * size / d`` on the swapped fraction (pyvene's ``intervention_boundaries.sum()``).
The temperature ``T`` (in rotated dimensions) anneals geometrically from ``temperature[0]`` to
``temperature[1]``: large, every row is half-swapped and the gradient reaches the boundary
from every row; small, the mask is a step. (pyvene's sigmoid boundary has a lower edge at row
0 as well, which halves row 0 at every temperature; the one-sided mask here does not; and
pyvene anneals linearly, which spends little of the run at low temperature.) At evaluation
the mask is hard: the first ``round(size)`` rows.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, Shaped

from jinterp.das.intervention import Interchange
from jinterp.das.rotation import Parametrisation, Rotation, init_rotation
from jinterp.model import HookedModel
from jinterp.names import split_name
from jinterp.run import run_with_cache, run_with_hooks

Position = int | tuple[int, ...] | None


@dataclasses.dataclass(frozen=True)
class DASConfig:
    """Where to intervene and how to train.

    Attributes:
        hook: the activation name (``blocks.1.hook_resid_post``, ``blocks.0.attn.hook_z``).
        n_dims: the subspace size ``k`` (plain DAS); ignored by boundless DAS.
        pos: the intervened positions (``None``: all; an int or a tuple of ints).
        head: for per-head points, the intervened head (``None``: every head, each with the
            same rotation of its ``d_head``).
        label_pos: the position whose logits are scored.
        boundless: learn the subspace size (needs ``Parametrisation.EXPM``).
        parametrisation: ``EXPM`` (default) or ``QR`` (see :mod:`jinterp.das.rotation`).
        steps / batch_size / lr: Adam on the rotation's generator.
        boundary_lr / init_fraction / sparsity / temperature: boundless DAS only: Adam's
            rate on the boundary, its starting fraction of ``d``, the weight of the size
            penalty, and the (start, end) temperature in rotated dimensions.
        seed: the rotation's random start and the minibatch order.
    """

    hook: str
    n_dims: int = 1
    pos: Position = None
    head: int | None = None
    label_pos: int = -1
    boundless: bool = False
    parametrisation: Parametrisation | str = Parametrisation.EXPM
    steps: int = 300
    batch_size: int = 128
    lr: float = 1e-2
    boundary_lr: float = 1e-1
    init_fraction: float = 0.5
    sparsity: float = 0.5
    temperature: tuple[float, float] = (2.0, 0.05)
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "parametrisation", Parametrisation(self.parametrisation))
        if isinstance(self.pos, (list, np.ndarray)):
            object.__setattr__(self, "pos", tuple(int(p) for p in self.pos))
        object.__setattr__(self, "temperature", tuple(float(t) for t in self.temperature))
        for field in ("n_dims", "steps", "batch_size"):
            if getattr(self, field) <= 0:
                raise ValueError(f"DASConfig.{field} must be positive, got "
                                 f"{getattr(self, field)}.")
        if self.lr <= 0 or self.boundary_lr <= 0 or self.sparsity < 0:
            raise ValueError("DASConfig: lr and boundary_lr must be > 0, sparsity >= 0.")
        if not 0 < self.init_fraction < 1:
            raise ValueError(f"DASConfig.init_fraction must lie in (0, 1), got "
                             f"{self.init_fraction}.")
        if len(self.temperature) != 2 or min(self.temperature) <= 0:
            raise ValueError(f"DASConfig.temperature must be (start, end) > 0, got "
                             f"{self.temperature}.")
        if self.boundless and self.parametrisation is Parametrisation.QR:
            raise ValueError("Boundless DAS masks every row of the full rotation; QR builds only "
                             "n_dims rows. Use parametrisation='expm'.")


@dataclasses.dataclass(frozen=True)
class DASResult:
    """A trained alignment.

    Attributes:
        rotation: the learned rotation.
        n_dims: the subspace size used for evaluation (``config.n_dims``, or for boundless DAS
            the learned size rounded, at least 1).
        size: boundless DAS's learned (soft) size in rotated dimensions; None for plain DAS.
        losses: the training loss at every step (cross-entropy, plus the size penalty).
        sizes: boundless DAS's size at every step; None for plain DAS.
    """

    rotation: Rotation
    n_dims: int
    size: float | None
    losses: np.ndarray
    sizes: np.ndarray | None

    @property
    def basis(self) -> Float[Array, "n d"]:
        """The aligned subspace: ``[n_dims, d]`` orthonormal rows."""
        return self.rotation.basis(self.n_dims)


# ------------------------------------------------------------------------------- helpers
def start_layer(model: HookedModel, hook: str) -> int | None:
    """The block a run intervening at ``hook`` can start from (None: from the tokens).

    A block point of layer ``l`` starts at ``l`` (from the cached residual entering it); a
    final-norm point at ``n_layers``; an embedding point needs the tokens.
    """
    layer, point = split_name(hook)
    if layer is not None:
        return layer
    return model.n_layers if point.startswith("ln_final") else None


def source_activation(model: HookedModel, params, inputs: Shaped[Array, "batch pos ..."],
                      hook: str) -> Float[Array, "batch ..."]:
    """The activation ``hook`` of a run on ``inputs`` (as :func:`run_inputs` gives them).

    Nothing after the hook's block is computed (``stop_at_layer``).
    """
    start, layer = start_layer(model, hook), split_name(hook)[0]
    if layer is not None:
        stop = layer + 1
    else:  # an embedding point stops before block 0; a final-norm point runs to the logits
        stop = 0 if start is None else None
    _, cache = run_with_cache(model, params, inputs, names=[hook], start_at_layer=start,
                              stop_at_layer=stop)
    return cache[hook]


def run_inputs(model: HookedModel, params, tokens: Int[Array | np.ndarray, "batch pos"],
               hook: str, chunk: int = 1024) -> Array:
    """What a run intervening at ``hook`` starts from: the residual entering its block
    (``[batch, pos, d_model]``, computed here once, in chunks of ``chunk`` examples) or, for
    embedding points, the tokens themselves.

    The model is frozen during DAS, so every layer below the hook is computed once per example
    instead of once per step; the cost is this array in memory.
    """
    start = start_layer(model, hook)
    if start is None:
        return jnp.asarray(tokens)
    parts = [model(params, jnp.asarray(tokens[i:i + chunk]), stop_at_layer=start)
             for i in range(0, np.shape(tokens)[0], chunk)]
    return jnp.concatenate(parts) if len(parts) > 1 else parts[0]


def hook_width(model: HookedModel, hook: str) -> int:
    """The last-axis width of the activation ``hook`` (``KeyError`` naming close names)."""
    if hook not in model.hook_names():
        from jinterp.names import unknown_name_error

        raise unknown_name_error(hook, model.hook_names())
    axes = model.points[split_name(hook)[1]]
    if axes[-1] not in model.dims:
        raise ValueError(f"{hook!r} ends in axis {axes[-1]!r} (axes {axes}); DAS rotates a "
                         "feature axis such as d_model, d_head or d_mlp.")
    return model.dims[axes[-1]]


def check_triples(base, source, labels) -> None:
    """Base and source token arrays of one shape and one label per pair, or a clear error."""
    base_shape, source_shape = np.shape(base), np.shape(source)
    if len(base_shape) != 2 or len(source_shape) != 2:
        raise ValueError(f"base and source must be token ids [batch, pos]; got shapes "
                         f"{base_shape} and {source_shape}.")
    if base_shape[0] != source_shape[0]:
        raise ValueError(f"base has {base_shape[0]} examples but source has {source_shape[0]}: "
                         "DAS pairs base example i with source example i, so pass as many of "
                         "each.")
    if base_shape != source_shape:
        raise ValueError(f"base {base_shape} and source {source_shape} differ in length; the "
                         "interchange reads the source at the base's positions, so pad both "
                         "to one length.")
    if np.shape(labels) != (base_shape[0],):
        raise ValueError(f"labels have shape {np.shape(labels)}; they need ({base_shape[0]},), "
                         "one counterfactual label per (base, source) pair.")


def soft_mask(size: Float[Array, ""], d: int, temperature: Float[Array, ""]
              ) -> Float[Array, " d"]:
    """Boundless DAS's mask: ``sigmoid((size - i - 1/2) / T)`` for rows ``i = 0 .. d - 1``."""
    rows = jnp.arange(d, dtype=jnp.float32)  # d
    return jax.nn.sigmoid((size - rows - 0.5) / temperature)


def temperature_at(config: DASConfig, step: Int[Array, ""]) -> Float[Array, ""]:
    """The geometric temperature schedule from ``temperature[0]`` to ``temperature[1]``."""
    start, end = config.temperature
    frac = step.astype(jnp.float32) / max(config.steps - 1, 1)
    return start * (end / start) ** frac


def minibatches(n: int, batch_size: int, steps: int, seed: int) -> Int[np.ndarray, "step batch"]:
    """Example indices of every step: successive shuffles of ``range(n)`` (epochs)."""
    rng = np.random.default_rng(seed)
    size = min(batch_size, n)
    epochs = -(-steps * size // n)
    order = np.concatenate([rng.permutation(n) for _ in range(epochs)])
    return order[: steps * size].reshape(steps, size).astype(np.int32)


# ------------------------------------------------------------------------------- training
def _optimizer(config: DASConfig) -> optax.GradientTransformation:
    return optax.multi_transform(
        {"generator": optax.adam(config.lr), "boundary": optax.adam(config.boundary_lr)},
        {"generator": "generator", "boundary": "boundary"})


def intervened_logits(model: HookedModel, params, base: Array, source_act: Array,
                      basis: Float[Array, "n d"], weights: Float[Array, " n"] | None, *,
                      hook: str, pos: Position = None, head: int | None = None
                      ) -> Float[Array, "batch pos n_out"]:
    """The logits on ``base`` (as :func:`run_inputs` gives it) with the interchange at ``hook``.
    """
    return run_with_hooks(model, params, base,
                          {hook: Interchange(basis, source_act, weights, pos=pos, head=head)},
                          start_at_layer=start_layer(model, hook))


def _subspace(config: DASConfig, rotation: Rotation, generator: Array, boundary: Array, step: Array
          ) -> tuple[Float[Array, "n d"], Float[Array, " n"] | None, Float[Array, ""]]:
    """The basis, the weights and the soft size of one training step."""
    rot = dataclasses.replace(rotation, generator=generator)
    if not config.boundless:
        return rot.basis(config.n_dims), None, jnp.float32(config.n_dims)
    d = rotation.d
    size = d * jax.nn.sigmoid(boundary)
    return rot.matrix(), soft_mask(size, d, temperature_at(config, step)), size


@functools.partial(jax.jit, static_argnames=("model", "config"))
def _train(params, trainable: dict, rotation: Rotation, base: Array, source_acts: Array,
           labels: Int[Array, " n"], batches: Int[Array, "step batch"], *,
           model: HookedModel, config: DASConfig):
    opt = _optimizer(config)

    def loss_fn(tr, b_in, src_act, y, step):
        basis, weights, size = _subspace(config, rotation, tr["generator"], tr["boundary"], step)
        logits = intervened_logits(model, params, b_in, src_act, basis, weights,
                                   hook=config.hook, pos=config.pos, head=config.head)
        ce = optax.softmax_cross_entropy_with_integer_labels(
            logits[:, config.label_pos].astype(jnp.float32), y).mean()
        penalty = config.sparsity * size / rotation.d if config.boundless else 0.0
        return ce + penalty, size

    def step(carry, idx):
        tr, state, i = carry
        (loss, size), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            tr, base[idx], source_acts[idx], labels[idx], i)
        updates, state = opt.update(grads, state, tr)
        return (optax.apply_updates(tr, updates), state, i + 1), (loss, size)

    carry = (trainable, opt.init(trainable), jnp.int32(0))
    (trainable, _, _), (losses, sizes) = jax.lax.scan(step, carry, batches)
    return trainable, losses, sizes


def train_das(model: HookedModel, params, base: Int[Array | np.ndarray, "batch pos"],
              source: Int[Array | np.ndarray, "batch pos"],
              labels: Int[Array | np.ndarray, " batch"], config: DASConfig) -> DASResult:
    """Trains a DAS (or boundless DAS) alignment at ``config.hook``.

    Args:
        model / params: any jinterp port and its (frozen) parameters.
        base / source: token ids ``[batch, pos]``; example ``i`` of ``source`` is the source
            of example ``i`` of ``base``.
        labels: ``[batch]`` counterfactual labels: the causal model's output on base ``i``
            with the high-level variable set to its value on source ``i`` (a class or token id
            of the logits at ``label_pos``).
        config: where and how (see :class:`DASConfig`).

    Memory: the residual entering the hook's block and the source activation at the hook
    are computed once for every pair and kept (:func:`run_inputs`).
    """
    check_triples(base, source, labels)
    d = hook_width(model, config.hook)
    if not config.boundless and config.n_dims > d:
        raise ValueError(f"n_dims={config.n_dims} is larger than the width d={d} of "
                         f"{config.hook!r}: a subspace has at most d dimensions.")
    rotation = init_rotation(jax.random.key(config.seed), d, config.n_dims,
                             config.parametrisation)
    frac = config.init_fraction
    trainable = {"generator": rotation.generator,
                 "boundary": jnp.float32(np.log(frac / (1 - frac)))}
    base_in = run_inputs(model, params, base, config.hook)
    source_acts = source_activation(model, params, run_inputs(model, params, source,
                                                              config.hook), config.hook)
    batches = minibatches(np.shape(base)[0], config.batch_size, config.steps, config.seed)
    trainable, losses, sizes = _train(params, trainable, rotation, base_in, source_acts,
                                      jnp.asarray(labels, jnp.int32), jnp.asarray(batches),
                                      model=model, config=dataclasses.replace(config, seed=0))
    rotation = dataclasses.replace(rotation, generator=trainable["generator"])
    if not config.boundless:
        return DASResult(rotation, config.n_dims, None, np.asarray(losses), None)
    size = float(d * jax.nn.sigmoid(trainable["boundary"]))
    n_dims = int(np.clip(np.round(size), 1, d))
    return DASResult(rotation, n_dims, size, np.asarray(losses), np.asarray(sizes))
