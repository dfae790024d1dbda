"""A disk cache of activations: one pass of the model feeds any number of later SAE runs.

``cache_activations(model, params, hooks, source, n_batches, path)`` runs the store's forward
(``stop_at_layer`` = deepest hook + 1, excluded positions dropped) on token batches
``0 .. n_batches - 1`` and writes each hook's kept rows as a sequence of ``.npy`` chunks,
``path/<hook>/chunk_000123.npy``. :func:`cached_arrays` returns a hook's chunk paths, which
:func:`jinterp.sae.train` (an :class:`~jinterp.sae.data.ArraySource`) reads memory-mapped, in
shuffled chunks, for as many SAEs and sweeps as needed.

Why ``.npy`` chunks (numpy's own format) rather than tensorstore / zarr or array_record: the
rows are written once, appended in order and read back as whole contiguous chunks, which is
exactly what a memory-mapped ``.npy`` does with no extra dependency, no pickle
(``allow_pickle=False``) and a header that states shape and dtype; the existing
``ArraySource`` reads them as they are. A chunked store's random access and compression buy
nothing for float activations read sequentially.

Integrity: ``manifest.json`` lists only chunks that are complete (it is rewritten atomically
after each chunk), with each file's row count and SHA-256. An interrupted run resumes where
the manifest ends (a rerun with the same arguments finishes it; finished chunks are kept and
a half-written one is overwritten); a chunk whose size, header or (with ``verify=True``)
checksum disagrees with the manifest raises an error naming the chunk and the fix.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from jaxtyping import Array, Bool, Float, Int
from tqdm.auto import tqdm

from jinterp.model import HookedModel
from jinterp.sae.sources import TokenSource
from jinterp.sae.store import ActivationStore, HookSpec, token_mask

MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _folder(key: str) -> str:
    return key.replace(":", "_head")


@functools.partial(jax.jit, static_argnums=0)
def _extract(store: ActivationStore, params, tokens: Int[Array, "batch pos"]
             ) -> tuple[dict[str, Float[Array, "batch pos d"]], Bool[Array, "batch pos"]]:
    return store.activations(params, tokens), token_mask(tokens, store.exclude_ids,
                                                         store.exclude_first)


def _settings(store: ActivationStore, source: TokenSource) -> dict:
    return {"hooks": {h.key: store.widths[h.key] for h in store.hooks},
            "exclude_ids": list(store.exclude_ids), "exclude_first": store.exclude_first,
            "dtype": str(store.dtype), "forward_shape": list(store.forward_shape),
            "source": {"type": type(source).__name__,
                       **{k: getattr(source, k) for k in ("seed", "d_vocab", "shuffle")
                          if hasattr(source, k)}}}


def _write_manifest(path: Path, manifest: dict) -> None:
    tmp = path / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, path / MANIFEST)  # atomic: a crash leaves the old manifest or the new


def cache_activations(model: HookedModel, params, hooks: str | HookSpec | Sequence,
                      source: TokenSource, n_batches: int, path: str | os.PathLike, *,
                      exclude_ids: Sequence[int] = (), exclude_first: bool = False,
                      dtype: str = "float32", progress: bool = True) -> Path:
    """Writes the activations of token batches ``0 .. n_batches - 1`` at ``hooks`` to ``path``.

    One chunk per forward pass and hook. A rerun with the same arguments (or a larger
    ``n_batches``) continues after the last complete chunk; other settings raise.

    Returns:
        ``path``, for :func:`cached_arrays`.
    """
    store = ActivationStore(model, hooks, source, batch_size=1, exclude_ids=exclude_ids,
                            exclude_first=exclude_first, dtype=dtype)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    settings = _settings(store, source)
    manifest = {"settings": settings, "chunks": []}
    if (path / MANIFEST).exists():
        manifest = json.loads((path / MANIFEST).read_text())
        if manifest["settings"] != json.loads(json.dumps(settings)):
            diff = [k for k in settings if manifest["settings"].get(k) != settings[k]]
            raise ValueError(f"{path} caches activations with other settings ({diff}); pass "
                             "the same ones to extend it, or another path.")
    for key in store.widths:
        (path / _folder(key)).mkdir(exist_ok=True)
    start = len(manifest["chunks"])
    for i in tqdm(range(start, n_batches), initial=start, total=n_batches, disable=not progress,
                  desc="caching activations"):
        tokens = source.batch(i)
        acts, keep = jax.device_get(_extract(store, params, jax.numpy.asarray(tokens)))
        entry = {"batch": i, "files": {}}
        for key, act in acts.items():
            rows = np.asarray(act, store.dtype).reshape(-1, store.widths[key])[
                np.asarray(keep).reshape(-1)]
            file = path / _folder(key) / f"chunk_{i:06d}.npy"
            np.save(file, rows, allow_pickle=False)
            entry["files"][key] = {"file": str(file.relative_to(path)), "rows": len(rows),
                                   "sha256": _sha256(file)}
        manifest["chunks"].append(entry)
        _write_manifest(path, manifest)
    return path


def cached_arrays(path: str | os.PathLike, hook: str, *, verify: bool = False) -> list[str]:
    """The chunk paths of ``hook`` in a cache, after checking them against the manifest.

    Args:
        path: a directory written by :func:`cache_activations`.
        hook: a cached hook key (``name`` or ``name:h``).
        verify: also compare every chunk's SHA-256 with the manifest (reads the whole cache).

    Raises:
        FileNotFoundError: no manifest (not a cache, or nothing finished yet) or a missing chunk.
        ValueError: an unknown hook, or a chunk that is truncated or corrupt.
    """
    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise FileNotFoundError(f"{path / MANIFEST} not found: not an activation cache, or "
                                "cache_activations never finished a chunk there; rerun it.")
    manifest = json.loads((path / MANIFEST).read_text())
    widths = manifest["settings"]["hooks"]
    if hook not in widths:
        raise ValueError(f"{hook!r} is not cached in {path}; cached hooks: {sorted(widths)}.")
    fix = ("delete that chunk's file and the manifest entries from it on, then rerun "
           "cache_activations with the same arguments to rewrite them")
    out = []
    for entry in manifest["chunks"]:
        info = entry["files"][hook]
        file = path / info["file"]
        if not file.is_file():
            raise FileNotFoundError(f"chunk {file} listed in the manifest is missing: {fix}.")
        try:
            arr = np.load(file, mmap_mode="r", allow_pickle=False)
        except ValueError as err:  # numpy: "mmap length is greater than file size", bad header
            raise ValueError(f"chunk {file} is truncated or corrupt ({err}): {fix}.") from None
        if arr.shape != (info["rows"], widths[hook]):
            raise ValueError(f"chunk {file} holds shape {arr.shape}, the manifest says "
                             f"({info['rows']}, {widths[hook]}): {fix}.")
        if verify and _sha256(file) != info["sha256"]:
            raise ValueError(f"chunk {file} is corrupt (its SHA-256 differs from the "
                             f"manifest's): {fix}.")
        out.append(str(file))
    if not out:
        raise ValueError(f"{path} holds no complete chunk yet; rerun cache_activations.")
    return out
