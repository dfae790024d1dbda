"""Multi-process runs: one SPMD program over every host's devices, started with jax.distributed.

A TPU pod slice, a SLURM allocation or one multi-GPU host run the *same* command once per
process. :func:`initialize` joins those processes into one JAX runtime (after it,
``jax.devices()`` lists every device of every process), and everything else in jinterp is
unchanged: a mesh over the global devices, ``jit`` with ``NamedSharding``, and arrays that no
single process holds whole. The only per-process code is data loading (each process feeds its
own rows of a global batch, :func:`local_rows` / :func:`global_batch`) and side effects
(logs, progress bars and figures come from process 0, :func:`is_main`).

Where the three numbers come from, first match wins: the arguments, then ``JINTERP_*`` and
``JAX_*`` environment variables (``COORDINATOR``/``COORDINATOR_ADDRESS``, ``NUM_PROCESSES``,
``PROCESS_ID``), then JAX's own cluster detection (SLURM, Cloud TPU, Open MPI). One process
and no cluster: a no-op, so the same command runs on a laptop.

Example:
    >>> parser = argparse.ArgumentParser(); distributed.add_arguments(parser)
    >>> args = parser.parse_args()
    >>> distributed.initialize_from_args(args)      # before any other JAX call
    >>> mesh = sharding.make_mesh(data=jax.device_count() // 4, model=4)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jinterp import preemption

#: Environment variables read by :func:`initialize`, in order of precedence.
ENV_VARS = {
    "coordinator": ("JINTERP_COORDINATOR", "JAX_COORDINATOR_ADDRESS"),
    "num_processes": ("JINTERP_NUM_PROCESSES", "JAX_NUM_PROCESSES"),
    "process_id": ("JINTERP_PROCESS_ID", "JAX_PROCESS_ID"),
}

#: A batch whose rows are split over the mesh's ``data`` axis.
ROWS = PartitionSpec("data")

#: Variables whose presence means a scheduler started several processes (JAX detects the rest).
_CLUSTER_VARS = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES")


@dataclasses.dataclass(frozen=True)
class Processes:
    """Where this process stands after :func:`initialize`.

    Attributes:
        process_id: this process's index (0 hosts the coordinator and writes the logs).
        num_processes: how many processes run the program.
        coordinator: ``host:port`` of the coordinator, or None for a single process.
    """

    process_id: int
    num_processes: int
    coordinator: str | None

    @property
    def is_main(self) -> bool:
        return self.process_id == 0


def _env(key: str) -> str | None:
    for var in ENV_VARS[key]:
        if os.environ.get(var):
            return os.environ[var]
    return None


def _as_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an integer, got {value!r}") from None


def _cluster_detected() -> bool:
    """True when a scheduler's variables say that this job has several processes."""
    for var in _CLUSTER_VARS:
        value = os.environ.get(var, "")
        if var == "TPU_WORKER_HOSTNAMES":
            if "," in value:
                return True
        elif value.isdigit() and int(value) > 1:
            return True
    return False


def _check_address(address: str) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"coordinator address {address!r} is not 'host:port' (for example "
                         "'127.0.0.1:8476' or 'node0:8476'); pass --coordinator host:port")


def _initialized() -> bool:
    from jax._src import distributed as _dist  # the public API has no "is initialised" query

    return _dist.global_state.client is not None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, timeout_s: int = 120,
               heartbeat_s: int = 60,
               local_device_ids: Sequence[int] | None = None) -> Processes:
    """Joins this process to the others (or does nothing when it runs alone).

    Call it before anything touches a JAX device: the CPU backend is told here to use gloo
    collectives (the only cross-process CPU implementation), which must happen before the
    backend starts.

    Args:
        coordinator_address: ``host:port`` that process 0 serves and the others dial.
        num_processes: total number of processes; the same value in every process.
        process_id: this process's index in ``[0, num_processes)``; each index exactly once.
        timeout_s: how long to wait for every process to join before failing. A worker that
            never starts makes the others raise :class:`TimeoutError` instead of hanging; it
            also bounds the barrier at shutdown.
        heartbeat_s: after this long without a heartbeat a process counts as dead and the
            survivors' runtime stops (so a killed worker cannot leave the others hanging).
        local_device_ids: the local devices this process drives (default: all of them).

    Returns:
        This process's :class:`Processes`.

    Raises:
        ValueError: for an id outside ``[0, n)``, a malformed address, a missing coordinator or
            id when ``num_processes > 1``, or processes that disagree on ``num_processes``.
        TimeoutError: when the processes did not all join within ``timeout_s``.
        RuntimeError: when JAX already ran a computation in this process.
    """
    if _initialized():
        return Processes(jax.process_index(), jax.process_count(), coordinator_address)
    coordinator_address = coordinator_address or _env("coordinator")
    num_processes = _as_int(num_processes if num_processes is not None
                            else _env("num_processes"), "num_processes")
    process_id = _as_int(process_id if process_id is not None else _env("process_id"),
                         "process_id")
    if num_processes is None and coordinator_address is None:
        if not _cluster_detected():
            return Processes(0, 1, None)
        _start(timeout_s=timeout_s, heartbeat_s=heartbeat_s, local_device_ids=local_device_ids)
        preemption.listen()
        return Processes(jax.process_index(), jax.process_count(), None)
    if num_processes is None or num_processes < 1:
        raise ValueError(f"num_processes={num_processes}: pass --num-processes N (N >= 1) "
                         "with --coordinator, the same N in every process")
    if num_processes == 1:
        return Processes(0, 1, None)
    if coordinator_address is None:
        raise ValueError(f"num_processes={num_processes} needs a coordinator: pass "
                         "--coordinator host:port (process 0's address) to every process")
    _check_address(coordinator_address)
    if process_id is None or not 0 <= process_id < num_processes:
        raise ValueError(f"process_id={process_id} must lie in [0, {num_processes}): give each "
                         f"of the {num_processes} processes its own --process-id 0..."
                         f"{num_processes - 1}")
    where = f"process {process_id} of {num_processes} (coordinator {coordinator_address})"
    if process_id == 0:
        _check_port_free(coordinator_address, where)
    else:
        _wait_for_coordinator(coordinator_address, timeout_s, where)
    with _JoinWatchdog(where, num_processes, timeout_s):
        _start(coordinator_address, num_processes, process_id, timeout_s=timeout_s,
               heartbeat_s=heartbeat_s, local_device_ids=local_device_ids)
    _check_agreement(num_processes, process_id, timeout_s)
    preemption.listen()  # a SIGTERM before the training loop polls is kept, not lost
    return Processes(process_id, num_processes, coordinator_address)


def _check_port_free(address: str, where: str) -> None:
    """Process 0 serves the coordinator: a port that already answers is a clear error (JAX's
    server shares ports, so a second server would start and both would wait forever),
    typically a second process started as ``--process-id 0``."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=0.5).close()
    except OSError:
        return
    raise ValueError(f"{where}: something already serves {address}. Another process was "
                     "probably also started with --process-id 0 (give each id to exactly one "
                     "process), or another program holds the port: choose a free "
                     "--coordinator port")


def _wait_for_coordinator(address: str, timeout_s: float, where: str) -> None:
    """Waits until process 0's coordinator accepts connections, or raises TimeoutError (JAX
    itself would abort the process with a message about a dead task)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1.0).close()
            return
        except OSError as err:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{where}: the coordinator {address} did not answer within {timeout_s} s "
                    f"({err.strerror or err}). Process 0 serves it: start process 0 with the "
                    "same --coordinator, check the host name and port and that no firewall "
                    "blocks it, or raise --init-timeout") from None
            time.sleep(0.2)


class _JoinWatchdog:
    """Ends the process with a clear message when the group has not formed in ``timeout_s``.

    JAX's coordination client aborts the whole process (SIGABRT, a C++ stack trace and a
    message about a task that died) when its registration deadline passes, and that cannot be
    caught. A worker that never starts is the usual cause, so this says that instead, a little
    before JAX's own deadline (``_start`` gives JAX a few more seconds), and exits with status 1.
    """

    def __init__(self, where: str, num_processes: int, timeout_s: float):
        self.where, self.n, self.timeout_s = where, num_processes, timeout_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="jinterp-join")

    def _watch(self) -> None:
        if self._done.wait(self.timeout_s):
            return
        print(f"TimeoutError: {self.where}: not all {self.n} processes joined within "
              f"{self.timeout_s} s. A process that never started (or crashed before "
              "jinterp.distributed.initialize) leaves the others waiting: start all "
              f"{self.n} with the same --coordinator and --num-processes and ids 0..{self.n - 1} "
              "(each once), or raise --init-timeout.", file=sys.stderr, flush=True)
        os._exit(1)

    def __enter__(self) -> _JoinWatchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()


def _start(coordinator_address: str | None = None, num_processes: int | None = None,
           process_id: int | None = None, *, timeout_s: int, heartbeat_s: int,
           local_device_ids: Sequence[int] | None) -> None:
    if not jax.config.jax_cpu_collectives_implementation:
        # CPU devices talk across processes only through gloo; harmless on GPU and TPU hosts.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    where = (f"process {process_id} of {num_processes} (coordinator {coordinator_address})"
             if num_processes else "this process (cluster auto-detection)")
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                   local_device_ids=local_device_ids,
                                   initialization_timeout=int(timeout_s) + _JAX_GRACE_S,
                                   heartbeat_timeout_seconds=int(heartbeat_s),
                                   shutdown_timeout_seconds=int(timeout_s))
    except RuntimeError as err:
        if "before any JAX" in str(err) or "computations" in str(err):
            raise RuntimeError(f"{where}: jinterp.distributed.initialize() must run before "
                               "anything touches a JAX device (call it first in main)") from err
        raise _join_error(where, num_processes, timeout_s, err) from err
    except Exception as err:  # the coordination service reports timeouts as XlaRuntimeError
        raise _join_error(where, num_processes, timeout_s, err) from err


#: Extra seconds JAX's own join deadline gets, so that :class:`_JoinWatchdog` reports first.
_JAX_GRACE_S = 5


def _join_error(where: str, n: int | None, timeout_s: int, err: Exception) -> TimeoutError:
    ids = f"ids 0..{n - 1}" if n else "its own id"
    return TimeoutError(
        f"{where} could not join the others within {timeout_s} s: {type(err).__name__}: "
        f"{str(err).splitlines()[0] if str(err) else ''}. Start all {n or 'N'} processes with "
        f"the same --coordinator and --num-processes and {ids} (each once); process 0 serves "
        "the coordinator, so it must be running and reachable on that port.")


def _check_agreement(num_processes: int, process_id: int, timeout_s: int) -> None:
    """Every process must have been started with the same count (the service only checks ids)."""
    from jax._src import distributed as _dist

    client = _dist.global_state.client
    client.key_value_set(f"jinterp/num_processes/{process_id}", str(num_processes))
    # Process 0 reads everyone's count, the others read process 0's: both sides of a
    # mismatch fail (a process that sees only agreement would otherwise wait at its next
    # collective for a peer that has already given up).
    others = range(1, num_processes) if process_id == 0 else [0]
    for other in others:
        theirs = client.blocking_key_value_get(f"jinterp/num_processes/{other}",
                                               int(timeout_s) * 1000)
        if int(theirs) != num_processes:
            raise ValueError(f"process {process_id} was started with --num-processes "
                             f"{num_processes} but process {other} with {theirs}: pass the "
                             "same value to every process")


def shutdown() -> None:
    """Leaves the group (a no-op for a single process); call at the end of a run."""
    if _initialized():
        jax.distributed.shutdown()


def is_main() -> bool:
    """Whether this process writes logs, progress bars, figures and summaries (process 0)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier ``name`` (a no-op for one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--coordinator``, ``--num-processes``, ``--process-id``, ``--init-timeout``."""
    group = parser.add_argument_group(
        "multi-process", "run the same command in every process (see docs/scale_out.md); "
        "defaults come from JINTERP_*/JAX_* variables or the cluster's scheduler")
    group.add_argument("--coordinator", default=None, help="host:port of process 0")
    group.add_argument("--num-processes", type=int, default=None)
    group.add_argument("--process-id", type=int, default=None)
    group.add_argument("--init-timeout", type=int, default=120,
                       help="seconds to wait for every process to join")


def initialize_from_args(args: argparse.Namespace) -> Processes:
    """:func:`initialize` with the flags :func:`add_arguments` added."""
    return initialize(args.coordinator, args.num_processes, args.process_id,
                      timeout_s=args.init_timeout)


def single_process(processes: Processes, command: str) -> None:
    """Exits with a clear message when ``command`` was started as several processes.

    The toy studies train one small model on one device; started N times (by ``srun`` with N
    tasks, say) they would only write the same files N times, so they refuse instead.
    """
    if processes.num_processes > 1:
        raise SystemExit(f"{command} runs as one process (its model fits one device), but it "
                         f"was started as process {processes.process_id} of "
                         f"{processes.num_processes}: start it once. Multi-process runs: SAE "
                         "training (python -m jinterp.sae.cli), patching sweeps and the "
                         "grokking seeds (python -m jinterp.experiments.grokking).")


def check_mesh(mesh: Mesh) -> Mesh:
    """Raises unless ``mesh`` covers every device of every process exactly once."""
    n = mesh.devices.size
    if n != jax.device_count() or len({d.id for d in mesh.devices.flat}) != n:
        shape = "x".join(str(s) for s in mesh.devices.shape)
        raise ValueError(f"the mesh has {n} devices ({shape}) but the program runs on "
                         f"{jax.device_count()} ({jax.process_count()} processes x "
                         f"{jax.local_device_count()} local): choose mesh axes whose product is "
                         f"{jax.device_count()}")
    return mesh


def local_rows(n_rows: int, mesh: Mesh, spec: PartitionSpec = ROWS) -> slice:
    """The rows of a global ``[n_rows, ...]`` batch that this process must load.

    With ``spec`` splitting the first dimension over ``data``, each process's devices hold a
    contiguous block of rows; it reads only those (from disk, a memmap, a generator seeded by
    the row index), so no process ever holds the whole batch.

    Raises:
        ValueError: when ``n_rows`` does not divide over the devices that split it.
    """
    sharding = NamedSharding(mesh, spec)
    try:
        index = sharding.addressable_devices_indices_map((n_rows,))
    except ValueError as err:
        raise ValueError(f"a batch of {n_rows} rows does not split over {spec} of mesh "
                         f"{dict(mesh.shape)}: use a multiple of the data axis") from err
    starts = [ix[0].start or 0 for ix in index.values()]
    stops = [n_rows if ix[0].stop is None else ix[0].stop for ix in index.values()]
    first, last = min(starts), max(stops)
    covered = np.zeros(n_rows, bool)
    for a, b in zip(starts, stops):
        covered[a:b] = True
    if not covered[first:last].all():
        raise ValueError(f"this process's rows of {spec} on {dict(mesh.shape)} are not "
                         "contiguous; order the mesh's devices by process (jax.devices())")
    return slice(first, last)


def global_batch(local: Any, mesh: Mesh, spec: PartitionSpec = ROWS,
                 n_rows: int | None = None) -> Any:
    """Assembles each process's rows (a pytree of arrays) into global arrays under ``spec``.

    Args:
        local: this process's rows, ``local_rows(n_rows, mesh, spec)`` of the global batch.
        mesh: the global mesh.
        spec: how the batch lies on it (rows over ``data`` by default).
        n_rows: the global row count (default: ``local`` rows times the processes that split
            them).
    """
    sharding = NamedSharding(mesh, spec)

    def one(x):
        x = np.asarray(x)
        shape = None if n_rows is None else (n_rows, *x.shape[1:])
        return jax.make_array_from_process_local_data(sharding, x, shape)

    return jax.tree.map(one, local)


def place_host(tree: Any, shardings: Any) -> Any:
    """Global arrays from host values that every process holds whole (identical everywhere).

    Each process fills only its own devices' slices (``jax.make_array_from_callback``): no
    data crosses processes and nothing checks that the processes agree (``jax.device_put``
    would all-gather every leaf to compare), so the values must be computed deterministically
    from the same inputs (seeds, the same rows). ``shardings`` is one ``Sharding`` for every
    leaf or a matching pytree.
    """
    if isinstance(shardings, jax.sharding.Sharding):
        shardings = jax.tree.map(lambda _: shardings, tree)

    def one(x, sharding):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(one, tree, shardings)


def to_host(tree: Any) -> Any:
    """Numpy copies of every leaf, gathering the shards other processes hold when needed."""
    from jax.experimental import multihost_utils

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if x.is_fully_replicated:  # every process holds it whole: no collective
                return np.asarray(x.addressable_data(0))
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(one, tree)
