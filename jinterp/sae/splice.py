"""Splicing an SAE into a model: the activation is replaced by its reconstruction.

``jinterp.sae.splice(cfg, params)`` is an :class:`~jinterp.interventions.Intervention`, so it
goes wherever a hook goes (``run_with_hooks``, ``run_with_cache``, lists of hooks) and is a
pytree whose leaves are the SAE's parameters: ``jax.grad`` reaches them through it.

With ``error_term=True`` the output is ``x_hat + stop_gradient(x - x_hat)``: the forward pass is
exactly the clean one, but gradients (attribution to latents) flow through the SAE, as
SAELens's ``use_error_term``. Per-head points (``attn.hook_z``) are flattened to
``n_heads * d_head`` before encoding (SAELens's ``reshape_activations="hook_z"``) or, with
``head=h``, only head ``h`` is replaced. ``latent_fn`` rewrites the latents between encoder and
decoder (feature steering or ablation: ``lambda f: f.at[..., 7].set(0.0)``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import struct
from jaxtyping import Array, Bool, Float

from jinterp.interventions import Intervention
from jinterp.names import Axes
from jinterp.sae.architectures import decode, encode
from jinterp.sae.config import SAEConfig


@struct.dataclass
class Splice(Intervention):
    """Replace an activation with an SAE's reconstruction (see the module docstring).

    Attributes:
        params: the SAE's parameters (raw-activation units, as :func:`jinterp.sae.train`
            returns and files load).
        cfg: its config (static).
        error_term: add back the (gradient-stopped) reconstruction error.
        head: for ``[batch, pos, n_heads, d_head]`` points: None encodes all heads flattened,
            an int encodes and replaces that head only.
        latent_fn: optional ``f -> f`` applied to the latents ``[batch, pos, d_sae]`` (static).
        keep: optional ``[batch, pos]`` mask: splice only there, elsewhere keep the activation
            (what SAELens's evaluation does at ignored tokens such as BOS).
        normalize: SAELens's run-time input normalisation: ``"none"``,
            ``"constant_norm_rescale"`` (rows scaled to norm sqrt(d_in), output scaled back) or
            ``"layer_norm"`` (rows centred and divided by their std + 1e-5, undone on output).
    """

    params: dict
    cfg: SAEConfig = struct.field(pytree_node=False)
    error_term: bool = struct.field(pytree_node=False, default=False)
    head: int | None = struct.field(pytree_node=False, default=None)
    latent_fn: Callable[[Array], Array] | None = struct.field(pytree_node=False, default=None)
    keep: Bool[Array, "batch pos"] | None = None
    normalize: str = struct.field(pytree_node=False, default="none")

    def _width(self, shape: tuple[int, ...], axes: Axes, name: str) -> int:
        if len(shape) == 4:
            width = shape[3] if self.head is not None else shape[2] * shape[3]
        else:
            if self.head is not None:
                raise ValueError(f"splice on {name!r}: head={self.head} given, but the activation "
                                 f"{tuple(shape)} (axes {axes}) has no head axis.")
            width = shape[-1]
        if width != self.cfg.d_in:
            hint = ""
            if len(shape) == 4 and self.cfg.d_in == shape[3] and self.head is None:
                hint = " For a one-head SAE pass head=<h>."
            elif len(shape) == 4 and self.cfg.d_in == shape[2] * shape[3]:
                hint = " This SAE reads all heads flattened: drop head=."
            raise ValueError(f"splice on {name!r}: the SAE has d_in={self.cfg.d_in} but the "
                             f"activation of shape {tuple(shape)} (axes {axes}) gives rows of "
                             f"width {width}: it was trained on another hook or model.{hint}")
        if self.cfg.d_target != width:
            raise ValueError(f"splice on {name!r}: a transcoder (d_out={self.cfg.d_out}) "
                             "reconstructs another activation; splice an SAE (d_out=None).")
        return width

    def check(self, shape, axes, name, *, layers=None):
        super().check(shape, axes, name, layers=layers)
        self._width(tuple(shape), axes, name)

    def reconstruct(self, x: Float[Array, "*lead d_in"]) -> Float[Array, "*lead d_in"]:
        """The SAE's reconstruction of rows ``x`` (with ``latent_fn`` and the error term)."""
        xf = x.astype(jnp.float32)
        x_in, undo = _normalizer(self.normalize, xf)
        f = encode(self.cfg, self.params, x_in)
        if self.latent_fn is not None:
            f = self.latent_fn(f)
        x_hat = undo(decode(self.cfg, self.params, f))
        if self.error_term:
            x_hat = x_hat + jax.lax.stop_gradient(xf - x_hat)
        return x_hat.astype(x.dtype)

    def apply(self, x: Array, axes: Axes) -> Array:
        self._width(x.shape, axes, "this activation")
        if x.ndim == 4 and self.head is not None:
            out = x.at[:, :, self.head].set(self.reconstruct(x[:, :, self.head]))
        elif x.ndim == 4:
            out = self.reconstruct(x.reshape(x.shape[:2] + (-1,))).reshape(x.shape)
        else:
            out = self.reconstruct(x)
        if self.keep is None:
            return out
        keep = jnp.asarray(self.keep).reshape(self.keep.shape + (1,) * (x.ndim - 2))
        return jnp.where(keep, out, x)


def _normalizer(mode: str, x: Float[Array, "*lead d_in"]):
    """(the SAE's input, the map from its output back to activation units), as SAELens."""
    if mode == "none":
        return x, lambda y: y
    if mode == "constant_norm_rescale":
        coeff = jnp.sqrt(jnp.float32(x.shape[-1])) / jnp.linalg.norm(x, axis=-1, keepdims=True)
        return x * coeff, lambda y: y / coeff
    if mode == "layer_norm":
        mu = jnp.mean(x, axis=-1, keepdims=True)
        std = jnp.std(x, axis=-1, keepdims=True, ddof=1)  # torch's unbiased std
        return (x - mu) / (std + 1e-5), lambda y: y * std + mu
    raise ValueError(f"normalize={mode!r}: use 'none', 'constant_norm_rescale' or 'layer_norm'.")


def splice(cfg: SAEConfig, params: dict, error_term: bool = False, *, head: int | None = None,
           latent_fn: Callable[[Array], Array] | None = None,
           normalize: str = "none") -> Splice:
    """An intervention that replaces an activation with ``params``'s reconstruction.

    Example::

        logits = jinterp.run_with_hooks(model, lm_params, tokens,
                                        {"blocks.6.hook_resid_post": sae.splice(cfg, params)})
    """
    if cfg.is_transcoder:
        raise ValueError(f"splice() replaces an activation with its own reconstruction; this is a "
                         f"transcoder (d_out={cfg.d_out}), which predicts another activation: use "
                         "jinterp.sae.splice_transcoder(cfg, params, hook_in) on its output hook.")
    if cfg.is_crosscoder:
        raise ValueError(f"splice() replaces one activation; this is a crosscoder over "
                         f"n_blocks={cfg.n_blocks} activations, each reconstructed from all of "
                         "them: use jinterp.sae.crosscoder_patches(cfg, params, acts) on a clean "
                         "forward's activations, one Patch per block.")
    _normalizer(normalize, jnp.ones((1, 1)))  # a bad mode raises here, not at trace time
    return Splice(params=dict(params), cfg=cfg, error_term=error_term, head=head,
                  latent_fn=latent_fn, normalize=normalize)
