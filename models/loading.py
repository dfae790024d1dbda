"""``load_pretrained`` and ``from_hf``: HuggingFace checkpoints become jinterp ports.

Each family registers how to read its HF config and tensors (the converter lives next to its
model); loading dispatches on ``config.json``'s ``model_type``. No torch, no pickle: tensors are
read from safetensors. ``from_hf`` takes an in-memory ``transformers`` model (so torch is there
already) and goes through the same converter.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from jinterp.models.dtypes import canonical_dtype
from jinterp.models.hf_io import read_config, read_tensors


@dataclasses.dataclass(frozen=True)
class Family:
    """How one ``model_type`` is built.

    ``model_from_config``: HF config dict -> model; ``params_from_tensors``: (model, tensors,
    dtype) -> params.
    """

    model_from_config: Callable[[dict], Any]
    params_from_tensors: Callable[[Any, dict[str, np.ndarray], Any], dict]


_FAMILIES: dict[str, Family] = {}


def register_family(model_type: str, family: Family) -> None:
    """Makes ``load_pretrained`` / ``from_hf`` understand ``model_type``."""
    _FAMILIES[model_type] = family


def _family(model_type: str | None) -> Family:
    if model_type not in _FAMILIES:
        raise ValueError(f"Unsupported model_type {model_type!r}; supported: {sorted(_FAMILIES)}.")
    return _FAMILIES[model_type]


def load_pretrained(path: str | os.PathLike, dtype=None):
    """Loads a HuggingFace checkpoint directory (``config.json`` + safetensors, sharded or not).

    Args:
        path: the directory ``save_pretrained`` wrote.
        dtype: parameter dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (or an alias
            or numpy/JAX dtype, see :func:`~jinterp.models.dtypes.canonical_dtype`); default:
            the port's config dtype. Checked before any tensor is read.

    Returns:
        ``(model, params)``.
    """
    dtype = None if dtype is None else canonical_dtype(dtype)
    config = read_config(path)
    family = _family(config.get("model_type"))
    tensors = read_tensors(path)
    model = _build(family, config)
    return model, family.params_from_tensors(model, tensors, dtype)


def from_hf(hf_model, dtype=None):
    """Converts an in-memory ``transformers`` PreTrainedModel to ``(model, params)``.

    ``dtype`` as for :func:`load_pretrained`.
    """
    dtype = None if dtype is None else canonical_dtype(dtype)
    config = hf_model.config.to_dict()
    family = _family(config.get("model_type"))
    model = _build(family, config)
    tensors = {name: _torch_to_numpy(t) for name, t in hf_model.state_dict().items()}
    return model, family.params_from_tensors(model, tensors, dtype)


def _build(family: Family, config: dict):
    try:
        return family.model_from_config(config)
    except KeyError as err:
        raise ValueError(f"config.json of model_type {config.get('model_type')!r} lacks the field "
                         f"{err.args[0]!r}.") from None


def _torch_to_numpy(tensor) -> np.ndarray:
    import ml_dtypes
    import torch

    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()
