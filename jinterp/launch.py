"""A local launcher: N copies of one command as one multi-process JAX program, restarted on faults.

``python -m jinterp.launch --num-processes 2 --devices-per-process 4 --restarts 2 -- python -m
my.train --out runs/x`` starts two processes with ``JINTERP_COORDINATOR`` (a free port on
127.0.0.1), ``JINTERP_NUM_PROCESSES`` and ``JINTERP_PROCESS_ID`` set, so
:func:`jinterp.distributed.initialize` joins them without flags. With ``--devices-per-process``
each process gets that many fake CPU devices (``XLA_FLAGS``), the way to test a pod-slice
program on a laptop.

Faults: a multi-process program cannot survive the loss of one process (its collectives never
complete), so when any process exits non-zero or dies from a signal the launcher kills the
others and starts all of them again (``--restarts`` times, each attempt on a fresh port, with
``JINTERP_RESTART`` = the attempt number). A program that checkpoints (e.g.
:func:`jinterp.sae.trainer.train` with ``checkpoint_every``) resumes from its last complete
checkpoint. SIGTERM or SIGINT to the launcher is forwarded to every process and nothing is
restarted: a program that polls :class:`jinterp.preemption.Preemption` saves and exits 0, and so
does the launcher. ``--timeout`` bounds the whole launch (all attempts): past it every process
is killed and the launcher returns 124.

The exit status is 0 when every process of the last attempt exited 0, else the first failure's
status (``128 + signal`` for a process killed by a signal, as a shell reports it).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

#: Exit status of a launch that ran past its timeout (as coreutils' ``timeout``).
TIMED_OUT = 124


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (the coordinator binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def worker_env(process_id: int, num_processes: int, coordinator: str, *, attempt: int = 0,
               devices_per_process: int | None = None,
               base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of one process: ``JINTERP_*`` and, for fake CPU devices, XLA_FLAGS."""
    env = dict(os.environ if base is None else base)
    env.update(JINTERP_COORDINATOR=coordinator, JINTERP_NUM_PROCESSES=str(num_processes),
               JINTERP_PROCESS_ID=str(process_id), JINTERP_RESTART=str(attempt))
    if devices_per_process is not None:
        flags = [f for f in env.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
        flags.append(f"--xla_force_host_platform_device_count={int(devices_per_process)}")
        env["XLA_FLAGS"] = " ".join(flags)
        env["JAX_PLATFORMS"] = "cpu"
    return env


def _status(code: int) -> int:
    """A shell's exit status: ``128 + n`` for a process killed by signal ``n``."""
    return 128 - code if code < 0 else code


class _Group:
    """One attempt: the N processes, each in its own session so a kill reaches its children."""

    def __init__(self, cmd: Sequence[str], num_processes: int, attempt: int, *,
                 devices_per_process: int | None, env: Mapping[str, str] | None,
                 cwd: str | None, log_dir: str | None):
        coordinator = f"127.0.0.1:{free_port()}"
        self.procs: list[subprocess.Popen] = []
        self._logs = []
        for pid in range(num_processes):
            out = None
            if log_dir is not None:
                os.makedirs(log_dir, exist_ok=True)
                out = open(os.path.join(log_dir, f"attempt{attempt}.proc{pid}.log"), "w")
                self._logs.append(out)
            self.procs.append(subprocess.Popen(
                list(cmd), cwd=cwd, start_new_session=True, stdout=out,
                stderr=subprocess.STDOUT if out else None,
                env=worker_env(pid, num_processes, coordinator, attempt=attempt,
                               devices_per_process=devices_per_process, base=env)))

    def signal(self, sig: int) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        for proc in self.procs:
            proc.wait()
        for log in self._logs:
            log.close()

    def codes(self) -> list[int | None]:
        return [proc.poll() for proc in self.procs]


def launch(cmd: Sequence[str], num_processes: int, *, devices_per_process: int | None = None,
           restarts: int = 0, timeout_s: float | None = None, grace_s: float = 60.0,
           env: Mapping[str, str] | None = None, cwd: str | None = None,
           log_dir: str | None = None, poll_s: float = 0.05, verbose: bool = True) -> int:
    """Runs ``cmd`` as ``num_processes`` cooperating processes; returns the exit status.

    Args:
        cmd: the program and its arguments (the same for every process).
        num_processes: how many processes.
        devices_per_process: fake CPU devices per process (sets ``XLA_FLAGS`` and
            ``JAX_PLATFORMS=cpu``); None leaves the devices alone.
        restarts: how many times to restart all processes after one fails.
        timeout_s: bound on the whole launch (all attempts); past it all are killed, 124.
        grace_s: after a forwarded SIGTERM, how long the processes get to save and exit
            before they are killed.
        env: base environment (default: this process's).
        cwd: working directory of the processes.
        log_dir: write each process's output to ``attempt{a}.proc{i}.log`` there (default:
            inherit this process's stdout/stderr).
        poll_s: how often to look at the processes.
        verbose: report failures and restarts on stderr.
    """
    if num_processes < 1:
        raise ValueError(f"num_processes={num_processes} must be >= 1")
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    stop: list[int] = []  # the signal the launcher received, if any

    def on_signal(signum, frame):
        stop.append(signum)

    previous = {}
    if _main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        attempt = 0
        while True:
            group = _Group(cmd, num_processes, attempt, devices_per_process=devices_per_process,
                           env=env, cwd=cwd, log_dir=log_dir)
            status = _watch(group, stop, deadline, grace_s, poll_s, verbose)
            if status == 0 or stop or status == TIMED_OUT or attempt >= restarts:
                return status
            attempt += 1
            _say(verbose, f"restarting all {num_processes} processes "
                          f"(attempt {attempt} of {restarts})")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _watch(group: _Group, stop: list[int], deadline: float | None, grace_s: float,
           poll_s: float, verbose: bool) -> int:
    """Waits for one attempt to end; returns its status (0, a failure's, or 124)."""
    forwarded_at = None
    try:
        while True:
            codes = group.codes()
            failed = [(i, c) for i, c in enumerate(codes) if c is not None and c != 0]
            if failed:
                i, code = failed[0]
                if not stop:
                    _say(verbose, f"process {i} exited with status {_status(code)}; "
                                  "stopping the others")
                return _status(code)
            if all(c == 0 for c in codes):
                return 0
            if stop and forwarded_at is None:
                _say(verbose, f"received signal {stop[0]}; forwarding it to every process")
                group.signal(stop[0])
                forwarded_at = time.monotonic()
            now = time.monotonic()
            if forwarded_at is not None and now - forwarded_at > grace_s:
                _say(verbose, f"processes did not exit {grace_s:.0f} s after the signal")
                return _status(-stop[0])
            if deadline is not None and now > deadline:
                _say(verbose, "the launch ran past its timeout; killing every process")
                return TIMED_OUT
            time.sleep(poll_s)
    finally:
        group.kill()


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _say(verbose: bool, message: str) -> None:
    if verbose:
        print(f"[jinterp.launch] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jinterp.launch [options] -- command ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        raise SystemExit("usage: python -m jinterp.launch [options] -- command args...")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m jinterp.launch",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-processes", type=int, required=True)
    parser.add_argument("--devices-per-process", type=int, default=None,
                        help="fake CPU devices per process (XLA_FLAGS, JAX_PLATFORMS=cpu)")
    parser.add_argument("--restarts", type=int, default=0,
                        help="restart all processes this many times after a failure")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds for the whole launch; then kill all, status 124")
    parser.add_argument("--grace", type=float, default=60.0,
                        help="seconds to exit after a forwarded SIGTERM")
    parser.add_argument("--log-dir", default=None,
                        help="write attempt{a}.proc{i}.log files here instead of the terminal")
    args = parser.parse_args(argv[:split])
    cmd = argv[split + 1:]
    if not cmd:
        raise SystemExit("no command after --")
    return launch(cmd, args.num_processes, devices_per_process=args.devices_per_process,
                  restarts=args.restarts, timeout_s=args.timeout, grace_s=args.grace,
                  log_dir=args.log_dir)


if __name__ == "__main__":
    sys.exit(main())
