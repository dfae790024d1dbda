"""Reading HuggingFace checkpoint directories without torch or pickle, and key-map checks.

A checkpoint directory holds ``config.json`` and either ``model.safetensors`` or sharded
``model-0000k-of-0000n.safetensors`` files with ``model.safetensors.index.json``. Tensors come
back as numpy arrays in their stored dtype (bfloat16 via ``ml_dtypes``). Each port's converter
consumes the tensors through :class:`TensorMap`, which checks every shape against the config
and that no tensor is missing or left over, naming the tensor and both shapes when not.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file

from jinterp.models.dtypes import canonical_dtype

CONFIG = "config.json"
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


def read_config(path: str | os.PathLike) -> dict:
    """The ``config.json`` of a checkpoint directory as a dict."""
    file = os.path.join(path, CONFIG)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{path!s} has no config.json; expected a HuggingFace checkpoint "
                                "directory (as written by save_pretrained).")
    with open(file) as f:
        return json.load(f)


def read_tensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint directory, single-file or sharded with an index."""
    single, index = os.path.join(path, SINGLE), os.path.join(path, INDEX)
    if os.path.isfile(single):
        return dict(load_file(single))
    if os.path.isfile(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        tensors: dict[str, np.ndarray] = {}
        for shard in sorted(set(weight_map.values())):
            tensors.update(load_file(os.path.join(path, shard)))
        missing = sorted(set(weight_map) - set(tensors))
        if missing:
            raise ValueError(f"The index lists tensors absent from the shards: {missing[:5]}.")
        return tensors
    present = sorted(os.listdir(path))
    if any(f.endswith((".bin", ".pt", ".pth")) for f in present):
        raise ValueError(f"{path!s} holds only PyTorch pickle weights ({present}); jinterp never "
                         "unpickles. Re-save with save_pretrained(..., safe_serialization=True).")
    raise FileNotFoundError(f"{path!s} has neither {SINGLE} nor {INDEX}; found {present}.")


class TensorMap:
    """Hands out checkpoint tensors by name, checking shapes and accounting for every key.

    Args:
        tensors: name -> array, as read from the checkpoint.
        strip_prefixes: prefixes removed from every name first (e.g. ``"transformer."``).
        ignore: predicate-free list of suffixes of tensors that carry no weights (buffers).
    """

    def __init__(self, tensors: dict[str, np.ndarray], strip_prefixes: Iterable[str] = (),
                 ignore_suffixes: Iterable[str] = ()):
        self._tensors: dict[str, np.ndarray] = {}
        for name, value in tensors.items():
            for prefix in strip_prefixes:
                if name.startswith(prefix):
                    name = name[len(prefix):]
                    break
            if not any(name.endswith(s) for s in ignore_suffixes):
                self._tensors[name] = value
        self._used: set[str] = set()

    def has(self, name: str) -> bool:
        return name in self._tensors

    def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """The tensor ``name``, which must have ``shape``."""
        if name not in self._tensors:
            raise KeyError(f"Checkpoint is missing tensor {name!r} (expected shape {shape}).")
        value = self._tensors[name]
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"Checkpoint tensor {name!r} has shape {tuple(value.shape)} but the "
                             f"config implies {tuple(shape)}: config.json and weights disagree.")
        self._used.add(name)
        return value

    def finish(self) -> None:
        """Raises if any tensor was not consumed (an unexpected key means a wrong config)."""
        left = sorted(set(self._tensors) - self._used)
        if left:
            raise ValueError(f"Checkpoint has {len(left)} tensors the config does not explain, "
                             f"e.g. {left[:5]}; is model_type right?")


def unembedding(t: TensorMap, tied: bool, shape: tuple[int, int]) -> dict | None:
    """HF's ``lm_head.weight`` ``[d_vocab, d_model]``: ``{"W_U": [d_model, d_vocab]}`` when untied.

    When tied it is a copy of the embedding (present in some checkpoints): consumed, not used.
    """
    if tied:
        if t.has("lm_head.weight"):
            t.take("lm_head.weight", shape)
        return None
    return {"W_U": t.take("lm_head.weight", shape).T}


def to_jax(tree, dtype) -> dict:
    """A nested dict of numpy arrays as contiguous JAX arrays of ``dtype``.

    ``dtype`` is any spelling :func:`~jinterp.models.dtypes.canonical_dtype` accepts; others
    raise its error (listing the valid dtypes) before anything is converted.
    """
    return _to_jax(tree, canonical_dtype(dtype))


def _to_jax(tree, dtype: str) -> dict | jax.Array:
    if isinstance(tree, dict):
        return {k: _to_jax(v, dtype) for k, v in tree.items()}
    return jnp.asarray(np.ascontiguousarray(tree), dtype=dtype)
