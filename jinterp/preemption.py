"""Preemption: SIGTERM asks a long run to save a checkpoint and exit cleanly at a step boundary.

Schedulers (a TPU VM's maintenance event, SLURM's ``--signal``, Kubernetes) send SIGTERM and
wait a grace period before SIGKILL. A handler that saved from inside the signal would race the
training step, so :class:`Preemption` only raises a flag; the training loop asks
:meth:`Preemption.should_stop` after each step, saves, and returns. In a multi-process run all
processes must take that branch at the same step (a checkpoint save is collective), so the
flag is agreed across processes: any process's signal stops all of them.

Example:
    >>> with Preemption() as preempt:
    ...     for step in range(start, steps):
    ...         state = train_step(state, batch)
    ...         if preempt.should_stop(step):
    ...             ckpt.save(step + 1, state)
    ...             break
"""

from __future__ import annotations

import signal
import threading

import jax
import numpy as np

#: Set by :func:`listen`'s handler: a stop signal arrived while no loop was polling.
_NOTICE = threading.Event()


def _remember(signum, frame) -> None:
    _NOTICE.set()


def listen(signals: tuple[int, ...] = (signal.SIGTERM,)) -> None:
    """Remembers stop signals from now on, for the next :class:`Preemption` to act on.

    :func:`jinterp.distributed.initialize` calls it once the processes have joined: without
    it a SIGTERM between the join and the training loop's first poll would go to JAX's own
    preemption handler, which only its ``reached_preemption_sync_point`` protocol reads, and
    the run would carry on until the scheduler's SIGKILL. Main thread only (a no-op
    elsewhere).
    """
    if threading.current_thread() is threading.main_thread():
        for sig in signals:
            signal.signal(sig, _remember)


class Preemption:
    """Turns SIGTERM (and other ``signals``) into a flag that the loop polls.

    Args:
        signals: which signals request a clean stop.
        every: agree across processes every this many polls (a tiny all-gather each time);
            a single process reads its own flag at every poll.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,), every: int = 1):
        self.signals = tuple(signals)
        self.every = max(1, int(every))
        self._flag = False
        self._polls = 0
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        self._flag = True

    def _take_notice(self) -> None:
        if _NOTICE.is_set():  # a signal that arrived before this loop started polling
            _NOTICE.clear()
            self._flag = True

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def requested(self) -> bool:
        """Whether this process received a stop signal."""
        self._take_notice()
        return self._flag

    def should_stop(self, step: int | None = None) -> bool:
        """Whether every process should save and stop now (collective in multi-process runs).

        Every process must call it at the same steps: it is an all-gather when
        ``jax.process_count() > 1``.
        """
        self._take_notice()
        if jax.process_count() == 1:
            return self._flag
        self._polls += 1
        if self._polls % self.every:
            return False
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.asarray([self._flag], np.int32))
        return bool(np.asarray(flags).any())
