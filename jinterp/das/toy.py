"""A toy MLP written as a jinterp port, for validating DAS on a model trained in-process.

Each input is a tuple of ``n_slots`` symbols in ``0 .. n_values - 1``, fed as *one* token (the
tuple's base-``n_values`` number: ``tokens [batch, 1]``), so the port is a plain MLP over one
position. The embedding is a sum of per-slot tables, ``resid = sum_s E_s[x_s]``, i.e. the first
linear layer of an MLP over the one-hot concatenation: a function of the whole tuple (such as
``x_0 == x_1``) is not in the embedding and must be computed by the blocks. A full per-token
table could memorise any label and would leave no variable to find.

Blocks are residual MLPs (``hook_resid_pre``, ``mlp.hook_pre``, ``mlp.hook_post``,
``hook_mlp_out``, ``hook_resid_post``, with GPT-2's names and axes), the unembedding a linear
map to ``n_classes`` logits. :func:`train_toy` fits it with optax in one jitted ``lax.scan``;
:func:`planted_params` builds a 2-block model by hand in which the hierarchical-equality
variables are known directions of ``blocks.0.hook_resid_post``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int

from jinterp.das.rotation import random_orthogonal
from jinterp.model import HookedModel
from jinterp.names import BLOCK_POINTS, TOP_POINTS, Axes, standard


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """Shape of the toy MLP.

    Attributes:
        n_slots / n_values: the input is ``n_slots`` symbols from ``n_values`` each (one token
            of ``n_values ** n_slots`` ids).
        n_layers / d_model / d_mlp: residual MLP blocks, residual width, hidden width.
        n_classes: output logits.
        init_range: std of the normal initialisation of every matrix (biases start at zero).
    """

    n_slots: int = 4
    n_values: int = 4
    n_layers: int = 2
    d_model: int = 16
    d_mlp: int = 32
    n_classes: int = 2
    init_range: float = 0.3

    def __post_init__(self):
        for field in ("n_slots", "n_values", "n_layers", "d_model", "d_mlp", "n_classes"):
            if getattr(self, field) <= 0:
                raise ValueError(f"ToyConfig.{field} must be positive, got "
                                 f"{getattr(self, field)}.")
        if self.n_values ** self.n_slots > 2 ** 31 - 1:
            raise ValueError("n_values ** n_slots token ids must fit in int32.")


@dataclasses.dataclass(frozen=True)
class ToyMLP(HookedModel):
    """The toy MLP port (see the module docstring)."""

    config: ToyConfig

    @property
    def n_layers(self) -> int:
        return self.config.n_layers

    @property
    def d_model(self) -> int:
        return self.config.d_model

    @property
    def d_vocab(self) -> int:
        """Input ids: every tuple is one token."""
        return self.config.n_values ** self.config.n_slots

    @property
    def n_ctx(self) -> int | None:
        return None

    @functools.cached_property
    def top_point_axes(self) -> dict[str, Axes]:
        return standard(["hook_embed"], TOP_POINTS)

    @functools.cached_property
    def block_point_axes(self) -> dict[str, Axes]:
        return standard(["hook_resid_pre", "mlp.hook_pre", "mlp.hook_post", "hook_mlp_out",
                         "hook_resid_post"], BLOCK_POINTS)

    @functools.cached_property
    def dims(self) -> dict[str, int]:
        cfg = self.config
        return {"layer": cfg.n_layers, "d_model": cfg.d_model, "d_mlp": cfg.d_mlp,
                "d_vocab": self.d_vocab}

    def param_axes(self) -> dict:
        """Logical axes; the slot and value axes of the embedding and the class axis replicate."""
        return {"embed": {"W_slot": (None, None, "d_model")},
                "blocks": {"W_in": ("layer", "d_model", "d_mlp"), "b_in": ("layer", "d_mlp"),
                           "W_out": ("layer", "d_mlp", "d_model"), "b_out": ("layer", "d_model")},
                "unembed": {"W_U": ("d_model", None), "b_U": (None,)}}

    def init(self, key: jax.Array) -> dict:
        """Normal(0, init_range) matrices, zero biases."""
        cfg = self.config
        k = jax.random.split(key, 4)
        normal = lambda key, shape: cfg.init_range * jax.random.normal(key, shape, jnp.float32)
        return {"embed": {"W_slot": normal(k[0], (cfg.n_slots, cfg.n_values, cfg.d_model))},
                "blocks": {"W_in": normal(k[1], (cfg.n_layers, cfg.d_model, cfg.d_mlp)),
                           "b_in": jnp.zeros((cfg.n_layers, cfg.d_mlp)),
                           "W_out": normal(k[2], (cfg.n_layers, cfg.d_mlp, cfg.d_model)),
                           "b_out": jnp.zeros((cfg.n_layers, cfg.d_model))},
                "unembed": {"W_U": normal(k[3], (cfg.d_model, cfg.n_classes)),
                            "b_U": jnp.zeros((cfg.n_classes,))}}

    # ---------------------------------------------------------------------------- forward
    def embed(self, params: dict, tokens: Int[Array, "batch pos"],
              hook) -> Float[Array, "batch pos d_model"]:
        cfg = self.config
        one_hot = jax.nn.one_hot(decode(tokens, cfg), cfg.n_values)  # batch pos n d
        resid = jnp.einsum("bpsv,svm->bpm", one_hot, params["embed"]["W_slot"])  # b pos d_model
        return hook("hook_embed", resid)

    def layer_inputs(self, params: dict) -> dict:
        return params["blocks"]

    def block(self, resid: Float[Array, "batch pos d_model"], p: dict,
              hook) -> Float[Array, "batch pos d_model"]:
        resid_pre = hook("hook_resid_pre", resid)
        pre = hook("mlp.hook_pre", resid_pre @ p["W_in"] + p["b_in"][None, None])  # batch pos d_mlp
        post = hook("mlp.hook_post", jax.nn.relu(pre))
        mlp_out = hook("hook_mlp_out", post @ p["W_out"] + p["b_out"][None, None])  # b pos d_model
        return hook("hook_resid_post", resid_pre + mlp_out)

    def unembed(self, params: dict, resid: Float[Array, "batch pos d_model"],
                hook) -> Float[Array, "batch pos n_classes"]:
        logits = resid @ params["unembed"]["W_U"]  # batch pos n_classes
        return logits + params["unembed"]["b_U"][None, None]


def encode(values: Int[Array | np.ndarray, "batch n"], config: ToyConfig
           ) -> Int[Array, "batch 1"]:
    """Tuples ``[batch, n_slots]`` to token ids ``[batch, 1]`` (slot 0 the lowest digit)."""
    values = jnp.asarray(values, jnp.int32)
    if values.ndim != 2 or values.shape[1] != config.n_slots:
        raise ValueError(f"encode: values must have shape [batch, n_slots={config.n_slots}]; "
                         f"got {values.shape}.")
    place = config.n_values ** jnp.arange(config.n_slots, dtype=jnp.int32)  # n
    return (values * place[None]).sum(axis=1, keepdims=True)


def decode(tokens: Int[Array, "batch pos"], config: ToyConfig) -> Int[Array, "batch pos n"]:
    """Token ids back to their tuples ``[batch, pos, n_slots]``."""
    place = config.n_values ** jnp.arange(config.n_slots, dtype=jnp.int32)  # n
    return (tokens[..., None] // place[None, None]) % config.n_values


# ------------------------------------------------------------------------------- training
def _no_hook(point: str, x: Array) -> Array:
    return x


_no_hook.wants = lambda point: False


def plain_logits(model: ToyMLP, params: dict, tokens: Int[Array, "batch pos"]
                 ) -> Float[Array, "batch pos n_classes"]:
    """The port's own parts composed without the core: no hooks, no checks, for training.

    Equal to ``model(params, tokens)`` (tested); inside a training ``lax.scan`` it avoids the
    core's on-device token check, a host callback at every step.
    """
    resid = model.embed(params, tokens, _no_hook)

    def step(resid, p):
        return model.block(resid, p, _no_hook), None

    resid, _ = jax.lax.scan(step, resid, model.layer_inputs(params))
    return model.unembed(params, resid, _no_hook)


@dataclasses.dataclass(frozen=True)
class ToyTrainConfig:
    """AdamW on the cross-entropy of the last position's logits, full batch."""

    steps: int = 1500
    lr: float = 1e-2
    weight_decay: float = 1e-4
    seed: int = 0


@functools.partial(jax.jit, static_argnames=("model", "config"))
def _fit(params: dict, tokens: Int[Array, "batch 1"], labels: Int[Array, " batch"], *,
         model: ToyMLP, config: ToyTrainConfig) -> tuple[dict, Float[Array, " n_steps"]]:
    opt = optax.adamw(config.lr, weight_decay=config.weight_decay)

    def loss_fn(p):
        logits = plain_logits(model, p, tokens)[:, -1]  # batch n_classes
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def step(carry, _):
        p, state = carry
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, state = opt.update(grads, state, p)
        return (optax.apply_updates(p, updates), state), loss

    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), None,
                                       length=config.steps)
    return params, losses


def train_toy(model: ToyMLP, tokens: Int[Array | np.ndarray, "batch 1"],
              labels: Int[Array | np.ndarray, " batch"],
              config: ToyTrainConfig = ToyTrainConfig()) -> tuple[dict, Float[Array, " n_steps"]]:
    """Trains ``model`` from a fresh init on ``(tokens, labels)``: ``(params, loss per step)``."""
    params = model.init(jax.random.key(config.seed))
    return _fit(params, jnp.asarray(tokens, jnp.int32), jnp.asarray(labels, jnp.int32),
                model=model, config=config)


# ------------------------------------------------------------------------------- planted
def planted_params(config: ToyConfig, key: jax.Array) -> tuple[dict, Float[Array, "2 d_model"]]:
    """A hand-built toy MLP that computes both equalities of :mod:`jinterp.das.tasks` exactly.

    Block 0's hidden unit ``v`` of the first group is ``relu(1[x_0 = v] + 1[x_1 = v] - 1)``, so
    the group sums to ``V1 = 1[x_0 = x_1]`` (a second group gives ``V2 = 1[x_2 = x_3]``); the
    groups write along two random orthonormal directions ``u1``, ``u2`` of the residual, and
    the embedding lives in a subspace orthogonal to both. Later blocks are zero (identity).
    The unembedding reads only ``u1`` and ``u2``: the logit of class ``2 v1 + v2`` (the
    ``BOTH`` readout) is ``8 [(2 v1 - 1)(V1 - 1/2) + (2 v2 - 1)(V2 - 1/2)]``, largest for the
    true pair. So ``u1`` *is* where V1 lives: an interchange on it realises the causal
    model's interchange on V1 exactly, and no other direction does.

    Returns:
        ``(params, directions)``: directions ``[2, d_model]`` are ``u1`` and ``u2``.
    """
    cfg = config
    k = cfg.n_values
    if cfg.n_slots != 4 or cfg.n_classes != 4 or cfg.d_mlp < 2 * k:
        raise ValueError("planted_params needs n_slots=4, n_classes=4 and d_mlp >= 2 * n_values.")
    if cfg.d_model < 4 * k + 2:
        raise ValueError(f"planted_params needs d_model >= 4 * n_values + 2 = {4 * k + 2}.")
    # Built in numpy (a few dozen small writes; eager jax would dispatch each one).
    q = np.asarray(random_orthogonal(key, cfg.d_model))  # d_model d_model: rows = directions
    u = q[:2]  # 2 d_model: u1, u2
    slot_dirs = q[2:2 + 4 * k].reshape(4, k, cfg.d_model)  # one direction per (slot, value)
    w_in = np.zeros((cfg.n_layers, cfg.d_model, cfg.d_mlp), np.float32)
    b_in = np.zeros((cfg.n_layers, cfg.d_mlp), np.float32)
    w_out = np.zeros((cfg.n_layers, cfg.d_mlp, cfg.d_model), np.float32)
    for group, (s, t) in enumerate([(0, 1), (2, 3)]):
        cols = np.arange(k) + group * k
        w_in[0][:, cols] = (slot_dirs[s] + slot_dirs[t]).T  # unit v reads 1[x_s=v] + 1[x_t=v]
        b_in[0, cols] = -1.0
        w_out[0, cols] = u[group]
    bits = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32) * 2 - 1  # class -> signs
    params = {"embed": {"W_slot": slot_dirs},
              "blocks": {"W_in": w_in, "b_in": b_in, "W_out": w_out,
                         "b_out": np.zeros((cfg.n_layers, cfg.d_model), np.float32)},
              "unembed": {"W_U": 8.0 * u.T @ bits.T,  # d_model n_classes
                          "b_U": -4.0 * bits.sum(axis=1)}}  # the -1/2 of each (V - 1/2)
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    return params, jnp.asarray(u)
