"""SAE files: SAELens' ``cfg.json`` + ``sae_weights.safetensors`` and Gemma Scope's ``params.npz``.

SAELens format (checked against sae-lens 6.54.12, ``saes/sae.py`` ``save_model`` /
``load_from_disk``, ``saes/*_sae.py``, ``saes/transcoder.py``): a directory with

* ``cfg.json``: ``architecture``, ``d_in``, ``d_sae``, ``dtype``, ``device``,
  ``apply_b_dec_to_input``, ``normalize_activations``, ``reshape_activations``, ``metadata``
  (a free dict; SAELens reads ``metadata.sae_lens_version`` to pick its config upgrader), plus
  ``k`` and ``rescale_acts_by_decoder_norm`` for ``topk`` and ``d_out`` for transcoders;
* ``sae_weights.safetensors``: ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``,
  ``W_dec [d_sae, d_out]``, ``b_dec [d_out]``; JumpReLU adds ``threshold [d_sae]``; Gated
  replaces ``b_enc`` with ``b_gate``, ``r_mag``, ``b_mag``.

Mapping of our architectures (what SAELens can load):

==============  =====================================  ====================================
ours            SAELens ``architecture``               notes
==============  =====================================  ====================================
relu            ``standard`` / ``transcoder``
topk            ``topk``                               ``rescale_acts_by_decoder_norm = false``
jumprelu        ``jumprelu`` / ``jumprelu_transcoder`` ``threshold = exp(log_threshold)``
batchtopk       ``jumprelu`` / ``jumprelu_transcoder`` threshold = global theta (as SAELens)
matryoshka      ``jumprelu`` / ``jumprelu_transcoder`` as batchtopk
gated           ``gated``
switch          ``switch`` (jinterp only)              adds ``W_router``, ``b_router``
topk/gated transcoder: ``topk_transcoder`` / ``gated_transcoder`` (jinterp only)
==============  =====================================  ====================================

Skip transcoders (``skip_connection``) save as ``skip_transcoder`` (relu),
``jumprelu_skip_transcoder`` (jumprelu, batchtopk, matryoshka) or ``{arch}_skip_transcoder``
(jinterp only) and add ``W_skip [d_out, d_in]``, SAELens's layout; crosscoders (``n_blocks >
1``) as ``{arch}_crosscoder`` (jinterp only), ``W_enc`` / ``W_dec`` over the concatenated
blocks. A transcoder's metadata names both hooks as SAELens does: ``hook_name`` (the input) and
``hook_name_out`` (the output it predicts).

Every file we write also stores our full `SAEConfig` under ``metadata["jinterp_config"]``, so
`load_saelens` restores exactly what was saved (e.g. a BatchTopK SAE comes back as
``batchtopk`` with its k, not as a JumpReLU). Files from SAELens map back through the table.
Nothing here unpickles anything: safetensors, JSON, and ``np.load(allow_pickle=False)``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from safetensors.flax import load_file, save_file

from jinterp.sae.architectures import Params, check_params
from jinterp.sae.config import Architecture, SAEConfig

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
SAELENS_FORMAT_VERSION = "6.54.12"  # the SAELens release whose format this module follows
_THRESHOLD_ARCHS = (Architecture.BATCHTOPK, Architecture.MATRYOSHKA)


# ----------------------------------------------------------------------------- saving
def saelens_architecture(cfg: SAEConfig) -> str:
    """The ``architecture`` string written to cfg.json for ``cfg`` (see module table)."""
    arch = cfg.architecture
    kind = "skip_transcoder" if cfg.skip_connection else "transcoder"
    if cfg.is_crosscoder:  # SAELens has no crosscoders: a jinterp-only name
        return f"{arch.value}_crosscoder"
    if arch in (Architecture.JUMPRELU, *_THRESHOLD_ARCHS):
        return f"jumprelu_{kind}" if cfg.is_transcoder else "jumprelu"
    if arch == Architecture.RELU:
        return kind if cfg.is_transcoder else "standard"
    if cfg.is_transcoder:
        return f"{arch.value}_{kind}"
    return arch.value


def _to_saelens_tensors(cfg: SAEConfig, params: Params) -> dict[str, jnp.ndarray]:
    tensors = dict(params)
    if cfg.architecture == Architecture.JUMPRELU:
        tensors["threshold"] = jnp.exp(tensors.pop("log_threshold"))
    elif cfg.architecture in _THRESHOLD_ARCHS:
        tensors["threshold"] = jnp.full((cfg.d_sae,), tensors["threshold"], params["b_enc"].dtype)
    return {name: jnp.asarray(value) for name, value in tensors.items()}


#: Run-time input normalisations of SAELens that :func:`jinterp.sae.splice` reproduces
#: (``expected_average_only_in`` must be folded into the weights first, as SAELens does).
RUNTIME_NORMALIZATIONS = ("none", "constant_norm_rescale", "layer_norm")
RESHAPES = ("none", "hook_z")


def saelens_cfg_dict(cfg: SAEConfig, metadata: dict[str, Any] | None = None, *,
                     reshape_activations: str = "none",
                     normalize_activations: str = "none") -> dict[str, Any]:
    """The cfg.json contents for ``cfg`` (``metadata`` entries, e.g. ``hook_name``, are kept)."""
    _check_choice("reshape_activations", reshape_activations, RESHAPES)
    _check_choice("normalize_activations", normalize_activations, RUNTIME_NORMALIZATIONS)
    meta = {"sae_lens_version": SAELENS_FORMAT_VERSION, **(metadata or {}),
            "jinterp_config": config_to_dict(cfg)}
    out: dict[str, Any] = {
        "architecture": saelens_architecture(cfg),
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": cfg.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": cfg.subtract_b_dec,
        "normalize_activations": normalize_activations,
        "reshape_activations": reshape_activations,
        "metadata": meta,
    }
    if cfg.architecture == Architecture.TOPK:
        out.update(k=cfg.k, rescale_acts_by_decoder_norm=False)
    if cfg.is_transcoder:
        out["d_out"] = cfg.d_out
    return out


def save_saelens(path: str | Path, cfg: SAEConfig, params: Params, *,
                 metadata: dict[str, Any] | None = None, reshape_activations: str = "none",
                 normalize_activations: str = "none") -> Path:
    """Write ``cfg.json`` and ``sae_weights.safetensors`` into directory ``path`` (created).

    Args:
        path: Output directory.
        cfg: The SAE's config.
        params: Its parameters (checked against ``cfg`` first).
        metadata: Extra SAELens metadata, e.g. ``{"model_name": ..., "hook_name": ...,
            "hook_head_index": ..., "context_size": ..., "prepend_bos": ...}``.
        reshape_activations: ``"hook_z"`` for an SAE on all heads of ``attn.hook_z``
            (flattened to ``n_heads * d_head``), else ``"none"``.
        normalize_activations: SAELens's run-time input normalisation (one of
            ``RUNTIME_NORMALIZATIONS``; our trainer folds its scale in and writes ``"none"``).

    Returns:
        The directory path.
    """
    check_params(cfg, params)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file(_to_saelens_tensors(cfg, params), str(path / WEIGHTS_FILENAME))
    raw = saelens_cfg_dict(cfg, metadata, reshape_activations=reshape_activations,
                           normalize_activations=normalize_activations)
    (path / CFG_FILENAME).write_text(json.dumps(raw, indent=2))
    return path


def _check_choice(field: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{field}={value!r} is not supported; use one of {list(valid)}.")


class LoadedSAE(tuple):
    """``(cfg, params)`` from :func:`load_saelens`, plus the file's ``metadata``.

    Unpacks as a pair (``cfg, params = load_saelens(path)``); ``.metadata`` holds SAELens's
    metadata (``hook_name``, ``hook_head_index``, ``context_size``, ``prepend_bos``,
    ``model_name``, ...) and the top-level ``reshape_activations`` / ``normalize_activations``.
    """

    def __new__(cls, cfg: SAEConfig, params: Params, metadata: dict[str, Any]):
        out = super().__new__(cls, (cfg, params))
        out.metadata = metadata
        return out

    @property
    def cfg(self) -> SAEConfig:
        return self[0]

    @property
    def params(self) -> Params:
        return self[1]

    @property
    def hook_name(self) -> str | None:
        """The activation the SAE was trained on (None when the file does not say)."""
        return self.metadata.get("hook_name")

    def splice(self, error_term: bool = False, **kwargs):
        """:func:`jinterp.sae.splice` with the file's head index and normalisation; for a
        transcoder :func:`jinterp.sae.splice_transcoder` reading the file's ``hook_name``
        (put it on ``metadata["hook_name_out"]``)."""
        if self.cfg.is_transcoder:
            from jinterp.sae.transcoder_splice import splice_transcoder

            if self.hook_name is None:
                raise ValueError("this transcoder's file names no hook_name (its input): call "
                                 "jinterp.sae.splice_transcoder(cfg, params, hook_in) instead.")
            return splice_transcoder(self.cfg, self.params, self.hook_name, error_term, **kwargs)
        from jinterp.sae.splice import splice

        return splice(self.cfg, self.params, error_term,
                      head=kwargs.pop("head", self.metadata.get("hook_head_index")),
                      normalize=kwargs.pop("normalize",
                                           self.metadata.get("normalize_activations", "none")),
                      **kwargs)


def config_to_dict(cfg: SAEConfig) -> dict[str, Any]:
    out = dataclasses.asdict(cfg)
    out["architecture"] = cfg.architecture.value
    if cfg.matryoshka_prefixes is not None:
        out["matryoshka_prefixes"] = list(cfg.matryoshka_prefixes)
    return out


def config_from_dict(data: dict[str, Any]) -> SAEConfig:
    fields = {f.name for f in dataclasses.fields(SAEConfig)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ValueError(f"jinterp_config has unknown fields {unknown}; known: {sorted(fields)}.")
    data = dict(data)
    if data.get("matryoshka_prefixes") is not None:
        data["matryoshka_prefixes"] = tuple(data["matryoshka_prefixes"])
    return SAEConfig(**data)


# ----------------------------------------------------------------------------- loading
def load_saelens(path: str | Path) -> LoadedSAE:
    """Load a SAELens-format directory written by SAELens or by `save_saelens`.

    Returns ``(cfg, params)`` as a :class:`LoadedSAE`, whose ``.metadata`` keeps the file's
    ``hook_name``, ``hook_head_index``, ``context_size``, ``prepend_bos``, ``reshape_activations``
    and ``normalize_activations`` (``.splice()`` honours the last two and the head index).

    Raises:
        FileNotFoundError: ``cfg.json`` or the safetensors file is missing.
        ValueError: unknown architecture, unsupported options (activation normalisation,
            decoder-norm rescaling with non-unit rows), missing / unexpected tensors, or
            shapes that disagree with the config.
    """
    path = Path(path)
    cfg_path, weights_path = path / CFG_FILENAME, path / WEIGHTS_FILENAME
    for needed in (cfg_path, weights_path):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} not found: a SAELens SAE directory holds "
                                    f"{CFG_FILENAME} and {WEIGHTS_FILENAME}.")
    raw = json.loads(cfg_path.read_text())
    tensors = load_file(str(weights_path))
    meta = raw.get("metadata") or {}
    if "jinterp_config" in meta:
        cfg = config_from_dict(meta["jinterp_config"])
    else:
        cfg = _config_from_saelens(raw, tensors)
    params = _from_saelens_tensors(cfg, tensors)
    check_params(cfg, params)
    info = {k: v for k, v in meta.items() if k != "jinterp_config"}
    for key in ("reshape_activations", "normalize_activations"):
        info[key] = raw.get(key) or "none"
    _check_choice("reshape_activations", info["reshape_activations"], RESHAPES)
    if info["reshape_activations"] == "hook_z" and info.get("hook_name") is not None and \
            not str(info["hook_name"]).endswith("hook_z"):
        raise ValueError(f"{cfg_path} says reshape_activations='hook_z' but hook_name="
                         f"{info['hook_name']!r} is not an attn.hook_z point.")
    return LoadedSAE(cfg, params, info)


_FROM_SAELENS = {
    "standard": Architecture.RELU,
    "transcoder": Architecture.RELU,
    "topk": Architecture.TOPK,
    "jumprelu": Architecture.JUMPRELU,
    "jumprelu_transcoder": Architecture.JUMPRELU,
    "skip_transcoder": Architecture.RELU,
    "jumprelu_skip_transcoder": Architecture.JUMPRELU,
    "gated": Architecture.GATED,
}


def _config_from_saelens(raw: dict[str, Any], tensors: dict[str, Any]) -> SAEConfig:
    name = raw.get("architecture", "standard")
    if name not in _FROM_SAELENS:
        raise ValueError(f"SAELens architecture {name!r} is not supported; supported: "
                         f"{sorted(_FROM_SAELENS)}.")
    missing = [key for key in ("d_in", "d_sae") if key not in raw]
    if missing:
        raise ValueError(f"cfg.json lacks {missing}.")
    norm = raw.get("normalize_activations") or "none"
    if norm not in RUNTIME_NORMALIZATIONS:
        raise ValueError(f"cfg.json has normalize_activations={norm!r}: that SAE expects a scale "
                         "from its training data at run time, which the file does not hold. Fold "
                         "the scale into the weights first (SAELens: "
                         "fold_activation_norm_scaling_factor), then set the field to 'none'; "
                         f"supported at run time: {list(RUNTIME_NORMALIZATIONS)}.")
    if raw.get("rescale_acts_by_decoder_norm") and "W_dec" in tensors:
        norms = np.linalg.norm(np.asarray(tensors["W_dec"], np.float32), axis=-1)
        if not np.allclose(norms, 1.0, atol=1e-3):
            raise ValueError("rescale_acts_by_decoder_norm=true with non-unit decoder rows is not "
                             "supported; normalise W_dec rows (folding norms into W_enc/b_enc).")
    d_out = raw.get("d_out") if "transcoder" in name else None
    return SAEConfig(
        architecture=_FROM_SAELENS[name], d_in=int(raw["d_in"]), d_sae=int(raw["d_sae"]),
        d_out=None if d_out is None else int(d_out),
        k=int(raw["k"]) if name == "topk" else None,
        apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", "transcoder" not in name)),
        skip_connection="skip_transcoder" in name,
        dtype=str(raw.get("dtype", "float32")).removeprefix("torch."))


def _from_saelens_tensors(cfg: SAEConfig, tensors: dict[str, Any]) -> Params:
    params = {name: jnp.asarray(value) for name, value in tensors.items()}
    if cfg.architecture == Architecture.JUMPRELU and "threshold" in params:
        params["log_threshold"] = jnp.log(params.pop("threshold"))
    elif cfg.architecture in _THRESHOLD_ARCHS and "threshold" in params:
        per_latent = params["threshold"]
        if per_latent.ndim != 1 or not bool(jnp.all(per_latent == per_latent[0])):
            raise ValueError(f"{cfg.architecture.value} needs one global threshold, but the file's "
                             f"threshold {tuple(per_latent.shape)} varies across latents.")
        params["threshold"] = per_latent[0]
    return params


def load_gemma_scope(path: str | Path) -> tuple[SAEConfig, Params]:
    """Load a Gemma Scope JumpReLU SAE from its ``params.npz`` (a file or its directory).

    The file holds ``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_out]``, ``b_enc``, ``b_dec``,
    ``threshold`` (lower-case ``w_enc`` / ``w_dec`` accepted). Gemma Scope encodes ``x`` (no
    ``b_dec`` subtraction). A ``d_out != d_in`` decoder loads as a transcoder.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "params.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (Gemma Scope SAEs ship as params.npz).")
    with np.load(path, allow_pickle=False) as data:
        arrays = {("W_" + key[2:] if key.startswith("w_") else key): np.asarray(data[key])
                  for key in data.files}
    needed = ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")
    missing = [key for key in needed if key not in arrays]
    if missing:
        raise ValueError(f"{path} lacks {missing}; a Gemma Scope params.npz holds {list(needed)} "
                         f"(found {sorted(arrays)}).")
    extra = sorted(set(arrays) - set(needed))
    if extra:
        raise ValueError(f"{path} has unexpected arrays {extra}; expected exactly {list(needed)}.")
    if arrays["W_enc"].ndim != 2 or arrays["W_dec"].ndim != 2:
        raise ValueError(f"W_enc {arrays['W_enc'].shape} and W_dec {arrays['W_dec'].shape} must "
                         "be matrices [d_in, d_sae] and [d_sae, d_out].")
    d_in, d_sae = arrays["W_enc"].shape
    d_out = arrays["W_dec"].shape[1]
    cfg = SAEConfig("jumprelu", d_in=int(d_in), d_sae=int(d_sae),
                    d_out=None if d_out == d_in else int(d_out), apply_b_dec_to_input=False)
    params = _from_saelens_tensors(
        cfg, {key: value.astype(np.float32) for key, value in arrays.items()})
    check_params(cfg, params)
    return cfg, params
