"""The ReLU-output toy model of Elhage et al. (2022), many independent instances at once.

Model (one instance): ``h = W x`` and ``x' = ReLU(W^T h + b)`` with ``W`` of shape
``[n_hidden, n_features]`` (column ``W[:, i]`` is feature ``i``'s direction) and ``b`` of shape
``[n_features]``. Data: every feature is independently zero with probability ``S`` (the
sparsity) and otherwise uniform on ``[0, 1]``. Loss: importance-weighted squared error, averaged
over the batch and the features as in the paper's notebook.

A study trains a whole grid of such models (sparsity x importance x seed) as one program: the
parameters carry a leading ``instance`` axis and every function here is written for one instance
and ``vmap``-ed. Because the total loss is a sum of per-instance losses and Adam is elementwise,
the instances never interact: training them together is exactly training them separately.

Axis names: ``instance`` (independent model), ``batch``, ``feature`` (n), ``hidden`` (m).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

Params = dict[str, Array]  # {"W": [instance hidden feature], "b": [instance feature]}


@dataclasses.dataclass(frozen=True)
class ToyModelConfig:
    """Shape of one toy-model family.

    Attributes:
        n_features: number of input features ``n``.
        n_hidden: bottleneck width ``m``.
        n_instances: how many independent models are trained side by side.
        init_std: standard deviation of the normal init of ``W``. ``None`` reproduces the
            notebook, which calls torch's ``xavier_normal_`` on a ``[instances, n, m]`` tensor
            (fan_in = n*m, fan_out = instances*m), i.e. ``sqrt(2 / (n*m + instances*m))``.
    """

    n_features: int
    n_hidden: int
    n_instances: int
    init_std: float | None = None

    def __post_init__(self):
        for name in ("n_features", "n_hidden", "n_instances"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ToyModelConfig.{name} must be a positive int, got {value!r}")
        if self.init_std is not None and not self.init_std > 0:
            raise ValueError(f"ToyModelConfig.init_std must be > 0 or None, got {self.init_std}")

    @property
    def weight_std(self) -> float:
        """The init std actually used (see ``init_std``)."""
        if self.init_std is not None:
            return self.init_std
        fan_sum = self.n_features * self.n_hidden + self.n_instances * self.n_hidden
        return math.sqrt(2.0 / fan_sum)


def init_params(cfg: ToyModelConfig, key: Array) -> Params:
    """Normal ``W`` (std ``cfg.weight_std``) and zero ``b`` for every instance."""
    shape = (cfg.n_instances, cfg.n_hidden, cfg.n_features)
    W = cfg.weight_std * jax.random.normal(key, shape, jnp.float32)
    b = jnp.zeros((cfg.n_instances, cfg.n_features), jnp.float32)
    return {"W": W, "b": b}


def forward(
    W: Float[Array, "hidden feature"],
    b: Float[Array, " feature"],
    x: Float[Array, "batch feature"],
) -> Float[Array, "batch feature"]:
    """One instance: ``ReLU(W^T W x + b)`` for a batch of inputs."""
    h = x @ W.T  # [batch hidden]
    return jax.nn.relu(h @ W + b[None, :])  # [batch feature]


def sample_features(
    key: Array, feature_probability: Float[Array, " feature"], batch_size: int
) -> Float[Array, "batch feature"]:
    """Sparse uniform features for one instance.

    Each entry is present with probability ``p = 1 - S`` and then uniform on [0, 1]. One uniform
    draw ``u`` per entry suffices: the entry is present iff ``u < p``, and given that, ``u / p``
    is uniform on [0, 1]. This halves the random numbers needed, which dominate the step time on
    CPU. (Resolution of ``u / p`` is ``2^-23 / p``, i.e. 1e-5 even at p = 0.01.)
    """
    u = jax.random.uniform(key, (batch_size, feature_probability.shape[0]), jnp.float32)
    p = feature_probability[None, :]  # [1 feature]
    return jnp.where(u < p, u / p, 0.0)  # [batch feature]


def instance_loss(
    W: Float[Array, "hidden feature"],
    b: Float[Array, " feature"],
    x: Float[Array, "batch feature"],
    importance: Float[Array, " feature"],
) -> Float[Array, ""]:
    """Importance-weighted squared error, mean over batch and features (the notebook's loss)."""
    err = importance[None, :] * (x - forward(W, b, x)) ** 2  # [batch feature]
    return jnp.mean(err)


def batch_losses(
    params: Params,
    key: Array,
    importance: Float[Array, "instance feature"],
    feature_probability: Float[Array, "instance feature"],
    batch_size: int,
) -> Float[Array, " instance"]:
    """Draws one fresh batch per instance and returns each instance's loss."""
    keys = jax.random.split(key, importance.shape[0])

    def one(W, b, k, imp, prob):
        return instance_loss(W, b, sample_features(k, prob, batch_size), imp)

    return jax.vmap(one)(params["W"], params["b"], keys, importance, feature_probability)


def check_instance_arrays(
    cfg: ToyModelConfig, importance: ArrayLike, feature_probability: ArrayLike
) -> None:
    """Raises a clear error unless both per-instance arrays are ``[n_instances, n_features]``."""
    want = (cfg.n_instances, cfg.n_features)
    for name, arr in (("importance", importance), ("feature_probability", feature_probability)):
        if tuple(jnp.shape(arr)) != want:
            raise ValueError(
                f"{name} has shape {tuple(jnp.shape(arr))} but the config needs {want} "
                "(n_instances, n_features); broadcast it per instance before training"
            )
    p = jnp.asarray(feature_probability)
    if not bool(jnp.all((p > 0) & (p <= 1))):
        raise ValueError("feature_probability must lie in (0, 1]; it is 1 - sparsity")
