"""Orbax checkpoints for long runs: save a pytree every N steps, resume exactly, on any mesh.

Every long-running job in jinterp (SAE training, toy-model studies) keeps its whole training
state -- parameters, optimizer state, PRNG key, step counter, data-order state -- in one pytree
and hands it to :class:`Checkpointer`. Restoring that pytree and continuing gives bit-identical
results to an uninterrupted run, because nothing else carries state between steps.

Multi-process runs (see :mod:`jinterp.distributed`): every process calls :meth:`~Checkpointer.
save` and :meth:`~Checkpointer.restore` at the same step (both are collective). Each process
writes only the shards its devices hold, into one shared step folder; process 0 renames the
folder from ``<step>.orbax-checkpoint-tmp-<time>`` to ``<step>`` after every process has
finished writing. A step is therefore either complete or ignored: a process killed mid-save
leaves a temporary folder that :meth:`~Checkpointer.latest_step` never reports, and the next
start resumes from the previous complete step. Restoring reads the slices that the *target*
shardings ask for, so a checkpoint written on one mesh (8 devices as 2 x 4) restores onto
another (4 x 2, or 4 devices of a single process) with identical values.

A checkpoint folder belongs to one run: an optional ``metadata`` dict (JSON, e.g. the model and
training config) is written next to the steps with the first save and compared on every save
and restore, so resuming with a different config is a clear error that writes nothing, rather
than a silent mix of two runs.

Nothing here uses pickle: orbax writes tensors with tensorstore and metadata as JSON.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

#: The run's metadata (JSON) beside the step folders.
METADATA_FILE = "jinterp_metadata.json"
_STEP_DIR = re.compile(r"^\d+$")


def complete_steps(directory: str | os.PathLike) -> list[int]:
    """The committed steps in ``directory``, oldest first, read from the file system only.

    Unlike :class:`Checkpointer` (whose creation is collective in a multi-process run) this
    touches no JAX runtime: any one process may call it, e.g. to log where a run resumes.
    Temporary folders of unfinished saves (``<step>.orbax-checkpoint-tmp...``) are excluded.
    """
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(int(n) for n in names if _STEP_DIR.match(n) and _committed(directory, n))


def _committed(directory: str | os.PathLike, name: str) -> bool:
    path = os.path.join(directory, name)
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "_CHECKPOINT_METADATA"))


class CheckpointMismatch(ValueError):
    """A checkpoint folder holds a different run (config, tree structure, shapes or dtypes)."""


class Checkpointer:
    """Saves and restores one training-state pytree under a directory.

    Args:
        directory: where step folders live (created if missing); a path every process sees.
        max_to_keep: how many recent checkpoints to keep on disk.
        metadata: JSON-able description of the run (model and training config). Written with
            the first save; a later save or restore with different metadata raises
            :class:`CheckpointMismatch` naming the differing keys, before anything is written.

    Example:
        >>> ckpt = Checkpointer("runs/x/ckpt", metadata={"d_sae": 4096})
        >>> state = ckpt.restore_or(state)      # resumes if a checkpoint exists
        >>> ckpt.save(step, state)
    """

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 2,
                 metadata: dict[str, Any] | None = None):
        self.directory = os.path.abspath(os.fspath(directory))
        self.metadata = None if metadata is None else _jsonable(metadata)
        os.makedirs(self.directory, exist_ok=True)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        # The handler is named up front so that a fresh manager can read a step's tree
        # metadata (shapes, dtypes) before restoring; orbax otherwise only knows it after a save.
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_handlers=ocp.StandardCheckpointHandler())

    # ------------------------------------------------------------------------- steps
    def all_steps(self) -> list[int]:
        """Complete steps on disk, oldest first (temporary, unfinished folders excluded)."""
        steps = self._manager.all_steps(read=False) if hasattr(self._manager, "all_steps") \
            else []
        return sorted(s for s in steps if self._complete(s))

    def latest_step(self) -> int | None:
        """The newest *complete* step, or None when the directory holds none."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def _complete(self, step: int) -> bool:
        """Orbax only lists renamed (finalised) folders; this re-checks that on disk, so a
        folder left by another tool or a partial copy is never taken for a checkpoint."""
        return _committed(self.directory, str(int(step)))

    # ------------------------------------------------------------------------- metadata
    def _metadata_path(self) -> str:
        return os.path.join(self.directory, METADATA_FILE)

    def stored_metadata(self) -> dict[str, Any] | None:
        """The metadata written with this folder's first save (None if there is none)."""
        try:
            with open(self._metadata_path()) as fh:
                return json.load(fh)
        except FileNotFoundError:
            return None

    def check_metadata(self) -> None:
        """Raises :class:`CheckpointMismatch` when the folder belongs to a different run."""
        if self.metadata is None:
            return
        stored = self.stored_metadata()
        if stored is None or stored == self.metadata:
            return
        diffs = _differences(stored, self.metadata)
        shown = "; ".join(diffs[:8]) + ("; ..." if len(diffs) > 8 else "")
        raise CheckpointMismatch(
            f"the checkpoints in {self.directory} were written by a different run: {shown} "
            "(checkpoint vs now). Nothing was read or written. Resume with the original "
            "settings, or point this run at a new directory (e.g. a new out_dir).")

    def _write_metadata(self) -> None:
        if self.metadata is None or jax.process_index() != 0:
            return
        if self.stored_metadata() is not None:
            return
        tmp = self._metadata_path() + f".tmp-{os.getpid()}"
        with open(tmp, "w") as fh:
            json.dump(self.metadata, fh, indent=1, sort_keys=True)
        os.replace(tmp, self._metadata_path())  # atomic: readers see all of it or nothing

    # ------------------------------------------------------------------------- save/restore
    def save(self, step: int, state: Any, *, wait: bool = True) -> None:
        """Writes ``state`` as checkpoint ``step`` (blocking unless ``wait=False``).

        Collective: in a multi-process run every process calls it with its shards of the
        same global arrays. The step becomes visible to :meth:`latest_step` only once every
        process has finished writing.

        Raises:
            CheckpointMismatch: the folder holds another run's checkpoints (nothing written).
        """
        self.check_metadata()
        self._write_metadata()
        self._manager.save(int(step), args=ocp.args.StandardSave(state))
        if wait:
            self._manager.wait_until_finished()

    def restore(self, like: Any, step: int | None = None, *, shardings: Any = None) -> Any:
        """Reads checkpoint ``step`` (default: newest complete) into the structure of ``like``.

        Args:
            like: a pytree of arrays or ``jax.ShapeDtypeStruct`` giving the tree structure,
                shapes, dtypes and, from each leaf's ``.sharding``, where to place the result.
            step: which step (default :meth:`latest_step`).
            shardings: overrides the target placement: one ``Sharding`` for every leaf or a
                pytree of them matching ``like`` (e.g. a new mesh's
                :func:`jinterp.sae.sharding.state_shardings`). Each process reads only the
                slices its devices hold, whatever mesh wrote the checkpoint.

        Raises:
            FileNotFoundError: no complete checkpoint.
            CheckpointMismatch: different metadata, tree structure, shapes or dtypes.
        """
        self.check_metadata()
        step = self.latest_step() if step is None else int(step)
        if step is None or not self._complete(step):
            raise FileNotFoundError(f"no complete checkpoint{'' if step is None else f' {step}'}"
                                    f" in {self.directory} (complete: {self.all_steps()})")
        abstract = _abstract(like, shardings)
        self._check_like(step, abstract)
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def restore_or(self, state: Any, *, shardings: Any = None) -> Any:
        """Returns the newest complete checkpoint if there is one, else ``state`` unchanged."""
        self.check_metadata()
        if self.latest_step() is None:
            return state
        return self.restore(state, shardings=shardings)

    def _check_like(self, step: int, abstract: Any) -> None:
        """Compares the checkpoint's leaves with the target's, naming the first differences
        (orbax's own errors for a wrong tree do not say which leaf or what to do)."""
        try:
            stored = self._manager.item_metadata(step)
        except Exception:  # noqa: BLE001 - metadata unreadable: let restore report it
            return
        if stored is None:
            return
        have = _leaf_table(stored)
        want = _leaf_table(abstract)
        if not have or not want:
            return
        diffs = [f"{k}: missing in the checkpoint" for k in want if k not in have]
        diffs += [f"{k}: in the checkpoint but not in the target" for k in have if k not in want]
        for key in want.keys() & have.keys():
            if None not in (have[key][1], want[key][1]) and have[key] != want[key]:
                diffs.append(f"{key}: checkpoint {have[key][0]} {have[key][1]}, "
                             f"target {want[key][0]} {want[key][1]}")
        if diffs:
            shown = "; ".join(sorted(diffs)[:8]) + ("; ..." if len(diffs) > 8 else "")
            raise CheckpointMismatch(
                f"checkpoint {step} in {self.directory} does not match the state to restore: "
                f"{shown}. It was written by a different model or config: restore it with the "
                "original settings, or start this run in a new directory. Nothing was written.")

    def close(self) -> None:
        """Waits for pending writes and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------- helpers
def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (enums, tuples and paths become strings / lists)."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Human-readable ``key: old != new`` lines between two JSON values."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(old.keys() | new.keys(), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{name}: absent vs {new[key]!r}")
            elif key not in new:
                out.append(f"{name}: {old[key]!r} vs absent")
            else:
                out.extend(_differences(old[key], new[key], name))
        return out
    return [] if old == new else [f"{prefix or 'metadata'}: {old!r} vs {new!r}"]


def _abstract(like: Any, shardings: Any) -> Any:
    """``ShapeDtypeStruct`` leaves carrying the target shardings."""
    leaves, treedef = jax.tree.flatten(like)
    if shardings is None:
        targets = [getattr(x, "sharding", None) for x in leaves]
    elif isinstance(shardings, jax.sharding.Sharding):
        targets = [shardings] * len(leaves)
    else:
        targets = treedef.flatten_up_to(shardings)
    structs = [jax.ShapeDtypeStruct(np.shape(x), getattr(x, "dtype", None) or np.asarray(x).dtype,
                                    sharding=s) for x, s in zip(leaves, targets)]
    return treedef.unflatten(structs)


def _leaf_table(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{path: (shape, dtype)}`` with paths spelled the same for dataclass fields and keys."""
    table = {}
    leaves = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))[0]
    for path, leaf in leaves:
        if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
            continue
        parts = []
        for entry in path:
            name = getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", entry)))
            parts.append(str(name))
        try:
            dtype = str(np.dtype(leaf.dtype))
        except TypeError:  # typed PRNG keys: orbax stores them its own way, compare presence
            dtype = None
        table[".".join(parts)] = (tuple(int(d) for d in leaf.shape), dtype)
    return table
