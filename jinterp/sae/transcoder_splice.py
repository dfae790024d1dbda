"""Splicing a transcoder into a model: an MLP's output replaced by the transcoder's prediction.

A transcoder reads the MLP's input (``blocks.L.ln2.hook_normalized``, or ``hook_resid_mid``)
and predicts its output (``blocks.L.hook_mlp_out``). Replacing the MLP therefore needs two
activations of one forward pass: the hook on the output must see the input *of the same
forward* (after whatever other hooks changed upstream). The core gives every hook inside a
block :attr:`jinterp.hooks.HookInfo.earlier`, the activations that block has computed so far
(after their own hooks), so the replacement is one hook on the output point::

    tc = sae.splice_transcoder(cfg, params, "blocks.1.ln2.hook_normalized")
    logits = jinterp.run_with_hooks(model, lm_params, tokens, {"blocks.1.hook_mlp_out": tc})

The MLP still runs (its output is discarded; under ``jit`` XLA removes the dead matmuls when
nothing else reads them), and everything downstream sees ``f(x) W_dec + b_dec (+ x W_skip^T)``.
It composes with other hooks (an SAE spliced upstream changes what the transcoder reads), works
under ``jit``, ``vmap`` and ``grad`` (the transcoder's parameters are the hook's pytree leaves,
so new values never recompile), and, with ``error_term=True``, keeps the clean forward while
gradients flow through the latents. SAELens's ``HookedSAETransformer`` does the same with a
stateful capture at the input hook; here the capture is the core's, per block and per call.

The input must be an earlier activation of the *same block*; another block's activation (a
cross-layer transcoder) raises an error that says so.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import struct
from jaxtyping import Array, Bool

from jinterp.hooks import HookInfo
from jinterp.names import split_name
from jinterp.sae.architectures import encode, reconstruct
from jinterp.sae.config import SAEConfig


@struct.dataclass
class TranscoderSplice:
    """A hook ``fn(activation, hook)`` for the output point: the transcoder's prediction from
    the input point of the same block (see the module docstring).

    Attributes:
        params: the transcoder's parameters (raw-activation units).
        cfg: its config (static; ``d_out`` set).
        input_point: the block point it reads, e.g. ``"ln2.hook_normalized"`` (static).
        input_layer: the block the input hook names (None: whichever block the hook runs in).
        error_term: add back the gradient-stopped prediction error (the clean forward).
        latent_fn: optional ``f -> f`` applied to the latents (static).
        keep: optional ``[batch, pos]`` mask: replace only there (e.g. not at BOS).
    """

    params: dict
    cfg: SAEConfig = struct.field(pytree_node=False)
    input_point: str = struct.field(pytree_node=False)
    input_layer: int | None = struct.field(pytree_node=False, default=None)
    error_term: bool = struct.field(pytree_node=False, default=False)
    latent_fn: Callable[[Array], Array] | None = struct.field(pytree_node=False, default=None)
    keep: Bool[Array, "batch pos"] | None = None

    # The core caches, per hook object, whether it takes TransformerLens's ``hook`` argument;
    # the fields hold arrays, so hash by identity (equality still compares fields).
    __hash__ = object.__hash__

    def predict(self, x_in: Array) -> Array:
        """The transcoder's prediction ``[..., d_out]`` from its input rows ``[..., d_in]``."""
        xf = x_in.astype(jnp.float32)
        f = encode(self.cfg, self.params, xf)
        if self.latent_fn is not None:
            f = self.latent_fn(f)
        return reconstruct(self.cfg, self.params, xf, f)

    def __call__(self, out: Array, hook: HookInfo) -> Array:
        where = f"splice_transcoder on {hook.name!r}"
        layer = hook.layer
        if self.input_layer is not None and isinstance(layer, int) and layer != self.input_layer:
            raise ValueError(f"{where}: the transcoder reads blocks.{self.input_layer}."
                             f"{self.input_point}, another block; it must read an activation "
                             f"of the block it writes (blocks.{layer}).")
        if self.input_point not in hook.earlier:
            raise ValueError(f"{where}: its input {self.input_point!r} is not an activation this "
                             f"block computes before {hook.name!r} (computed so far: "
                             f"{sorted(hook.earlier)}); a transcoder reads an earlier point of "
                             "the same block, e.g. ln2.hook_normalized for hook_mlp_out.")
        x_in = hook.earlier[self.input_point]
        if x_in.ndim == 4:  # per-head input (attn.hook_z): heads flattened, as the store
            x_in = x_in.reshape(x_in.shape[:2] + (-1,))
        if x_in.shape[-1] != self.cfg.d_in or out.ndim != 3 or out.shape[-1] != \
                self.cfg.d_target:
            raise ValueError(f"{where}: the transcoder maps d_in={self.cfg.d_in} -> "
                             f"d_out={self.cfg.d_target}, but {self.input_point!r} has shape "
                             f"{tuple(x_in.shape)} and the output {tuple(out.shape)}: it was "
                             "trained on other hooks or another model.")
        y_hat = self.predict(x_in)
        if self.error_term:
            y_hat = y_hat + jax.lax.stop_gradient(out.astype(jnp.float32) - y_hat)
        y_hat = y_hat.astype(out.dtype)
        if self.keep is None:
            return y_hat
        return jnp.where(jnp.asarray(self.keep)[..., None], y_hat, out)


def splice_transcoder(cfg: SAEConfig, params: dict, hook_in: str, error_term: bool = False, *,
                      latent_fn: Callable[[Array], Array] | None = None) -> TranscoderSplice:
    """A hook for the transcoder's *output* point that replaces it with the prediction from
    ``hook_in`` (its input, read in the same forward pass).

    Args:
        cfg / params: the transcoder (``cfg.d_out`` set).
        hook_in: the input activation, ``"blocks.L.ln2.hook_normalized"`` (or a block point
            without a layer, which reads the block the hook runs in).
        error_term: keep the clean forward, gradients through the transcoder.
        latent_fn: optional ``f -> f`` on the latents (steering, ablating a latent).

    Example::

        hooks = {"blocks.1.hook_mlp_out": sae.splice_transcoder(cfg, p,
                                                                "blocks.1.ln2.hook_normalized")}
        logits = jinterp.run_with_hooks(model, lm_params, tokens, hooks)
    """
    if not cfg.is_transcoder:
        raise ValueError("splice_transcoder needs a transcoder (d_out set); splice an SAE with "
                         "jinterp.sae.splice(cfg, params).")
    layer, point = split_name(hook_in)
    return TranscoderSplice(params=dict(params), cfg=cfg, input_point=point, input_layer=layer,
                            error_term=error_term, latent_fn=latent_fn)
