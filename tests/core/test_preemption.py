"""Preemption in one process: a SIGTERM during a loop, and one that arrives before any loop
polls (after jinterp.distributed.initialize has joined), each stop the loop once.

Multi-process preemption (all processes agree, save and exit 0) is in tests/scale/test_faults.py.
"""

import os
import signal

from jinterp import preemption
from jinterp.preemption import Preemption


def test_signals_before_and_during_a_loop_stop_it_once():
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with Preemption() as stop:
            assert not stop.should_stop(0)
            os.kill(os.getpid(), signal.SIGTERM)  # handled between bytecodes, in this thread
            assert stop.requested and stop.should_stop(1)
        assert signal.getsignal(signal.SIGTERM) is previous  # the handler is put back

        preemption.listen()
        os.kill(os.getpid(), signal.SIGTERM)  # no loop is polling: remembered, not lost
        with Preemption() as stop:
            assert stop.should_stop(0)
        with Preemption() as stop:  # acted on once: the next loop runs on
            assert not stop.should_stop(0)
    finally:
        signal.signal(signal.SIGTERM, previous)
