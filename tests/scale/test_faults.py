"""Faults in multi-process runs: a killed worker, a preemption, a worker that never joins.

Two launches of ``procs_faults.py train`` (2 processes x 4 fake CPU devices, SAE training on a
2 x 4 ``data x model`` mesh, 12 steps, a checkpoint every 4) cover the fault path end to end:

1. ``jinterp.launch.main`` (the command line, run in this process) with ``--restarts 1``: in
   attempt 0 process 1 is SIGKILLed in the middle of saving step 8 (its shards are being
   written, nothing is committed); the launcher kills process 0 and restarts both, which
   resume from step 4 (the incomplete step 8 is ignored). In attempt 1 process 0 sends SIGTERM
   to the launcher after saving step 8; the launcher forwards it, both processes agree to
   stop, save step 9 and exit 0, and so does the launcher.
2. The launcher API, no faults: the run resumes from step 9 and finishes; the same processes
   then train the same SAE uninterrupted (the reference) and restore the final checkpoint
   onto a 4 x 2 mesh; a mesh over one process's devices is refused with a clear error.

The final parameters equal the reference bit for bit; one process with 4 devices then restores
the checkpoint onto its own 2 x 2 mesh and onto one device, identical again. The join errors
(a worker that never starts, an unreachable coordinator, mismatched process counts, a
duplicate id) run as concurrent single-purpose processes with a 5 s join timeout.
"""

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import procs_faults as pf  # noqa: E402

import jinterp.launch  # noqa: E402
from jinterp.checkpoint import complete_steps  # noqa: E402

JOIN_TIMEOUT = 5


def _env(cache_dir: str) -> dict[str, str]:
    """Workers' environment: a persistent compilation cache private to this test, so that
    restarted processes load the programs the first attempt compiled."""
    env = {k: v for k, v in os.environ.items() if k != "JINTERP_COMPILATION_CACHE"}
    env.update(JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=cache_dir,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return env


def _logs(log_dir: str) -> dict[str, str]:
    return {name: open(os.path.join(log_dir, name)).read()
            for name in sorted(os.listdir(log_dir)) if name.endswith(".log")}


def test_kill_preempt_resume_bitwise_and_restore_on_other_meshes(tmp_path, capfd):
    out, cache = str(tmp_path / "run"), str(tmp_path / "jax_cache")
    env = _env(cache)
    train = [sys.executable, pf.HERE, "train", "--out", out, "--steps", "12", "--every", "4"]
    began = time.monotonic()
    # 1. SIGKILL mid-save, restart, SIGTERM to the launcher (its command line, status 0)
    argv = ["--num-processes", "2", "--devices-per-process", "4", "--restarts", "1",
            "--timeout", "150", "--log-dir", str(tmp_path / "logs1"), "--", *train,
            "--kill-in-save", "8:1:0", "--term-launcher-after", "8:0:1"]
    if threading.current_thread() is threading.main_thread():
        # in this process (saves starting a launcher): the worker signals its parent, us
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)
        try:
            status = jinterp.launch.main(argv)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        said = capfd.readouterr().err
    else:  # signal handlers need the main thread: the launcher's own command line
        run = subprocess.run([sys.executable, "-m", "jinterp.launch", *argv], env=env,
                             capture_output=True, text=True, timeout=180)
        status, said = run.returncode, run.stderr
    logs = _logs(str(tmp_path / "logs1"))
    everything = "\n".join(f"== {k}\n{v[-3000:]}" for k, v in logs.items()) + said
    assert status == 0, everything
    assert pf.values(logs["attempt0.proc1.log"], "KILLING") == ["8"], everything
    assert "process 1 exited with status 137" in said, everything
    assert "restarting all 2 processes" in said, everything
    assert "received signal 15; forwarding" in said, everything
    # the restart resumed from the last complete step (4), not from the half-written 8
    assert pf.values(logs["attempt0.proc0.log"], "START") == ["0"], everything
    assert pf.values(logs["attempt1.proc0.log"], "START") == ["4"], everything
    assert pf.values(logs["attempt1.proc0.log"], "PREEMPTED") == ["True"], everything
    assert pf.values(logs["attempt1.proc0.log"], "STEP") == ["9"], everything
    assert 9 in complete_steps(os.path.join(out, "checkpoints")), everything
    assert not os.path.exists(os.path.join(out, "final.npz"))
    seconds1 = time.monotonic() - began
    logs1 = logs

    # 2. resume to the end; the reference run and a restore onto 4 x 2 in the same processes
    status, logs = pf.launch(train[2:] + ["--reference", "--restore-mesh", "4x2",
                                          "--check-bad-mesh"],
                             str(tmp_path / "logs2"), timeout_s=120, env=env)
    log0 = logs["attempt0.proc0.log"]
    seconds2 = time.monotonic() - began - seconds1
    assert status == 0, "\n".join(v[-3000:] for v in logs.values())
    assert pf.values(log0, "START") == ["9"] and pf.values(log0, "STEP") == ["12"], log0
    assert pf.values(log0, "RESTORED") == ["4x2 {'data': 4, 'model': 2} equal True"], log0
    bad = pf.values(log0, "BAD_MESH")
    assert bad and "4 devices" in bad[0] and "product is 8" in bad[0], log0
    final = np.load(os.path.join(out, "final.npz"))
    reference = np.load(os.path.join(out, "reference.npz"))
    assert sorted(final) == sorted(reference) == ["W_dec", "W_enc", "b_dec", "b_enc"]
    for name in final:
        np.testing.assert_array_equal(final[name], reference[name], err_msg=name)
    assert np.abs(final["W_enc"]).max() > 0  # it trained (not two empty arrays)

    # 3. one process, 4 devices: the 2-process checkpoint onto 2 x 2 and onto one device
    alone = subprocess.run(
        [sys.executable, pf.HERE, "restore-alone", "--out", out, "--steps", "12"],
        env={**jinterp.launch.worker_env(0, 1, "", devices_per_process=4, base=env),
             "JINTERP_NUM_PROCESSES": "1"},
        capture_output=True, text=True, timeout=60)
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert pf.values(alone.stdout, "ALONE") == ["mesh 4 4 12 equal True",
                                                "one 4 1 12 equal True"], alone.stdout
    worker = [pf.values(t, "SECONDS") for t in (logs1["attempt1.proc0.log"], log0)]
    print(f"faults: launch 1 {seconds1:.1f} s, launch 2 {seconds2:.1f} s, total "
          f"{time.monotonic() - began:.1f} s; process 0 of attempt 1 and launch 2: {worker}")


def _join(port: int, n: int, pid: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JINTERP_COMPILATION_CACHE": "0",
           "JINTERP_COORDINATOR": f"127.0.0.1:{port}", "JINTERP_NUM_PROCESSES": str(n),
           "JINTERP_PROCESS_ID": str(pid)}
    return subprocess.Popen([sys.executable, pf.HERE, "join", "--timeout", str(JOIN_TIMEOUT),
                             *extra], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _collect(procs: dict, began: float, bound: float = 60) -> dict:
    outs = {}
    try:
        for key, proc in procs.items():
            out, _ = proc.communicate(timeout=max(1, bound - (time.monotonic() - began)))
            outs[key] = (proc.returncode, out)
    finally:
        for proc in procs.values():
            proc.kill()
    return outs


def test_join_errors_are_clear_and_bounded():
    """Each bad start fails within the join timeout plus start-up, with a message that names
    the problem and the fix, instead of hanging or aborting with a C++ stack trace."""
    a, b, c = (jinterp.launch.free_port() for _ in range(3))
    began = time.monotonic()
    procs = {
        "never_joins": _join(a, 2, 0),  # its process 1 never starts
        "duplicate_0": _join(a, 2, 0, "--wait-port", str(a)),  # a second process 0
        "unreachable": _join(b, 2, 1),  # nobody serves b
        "mismatched_0": _join(c, 2, 0),
        "mismatched_1": _join(c, 3, 1),
    }
    outs = _collect(procs, began)
    seconds = time.monotonic() - began
    report = "\n".join(f"== {k} (exit {c})\n{o[-1500:]}" for k, (c, o) in outs.items())
    assert all(code != 0 for code, _ in outs.values()), report
    assert all("Check failure stack trace" not in out for _, out in outs.values()), report
    code, out = outs["never_joins"]
    assert code == 1 and f"not all 2 processes joined within {JOIN_TIMEOUT} s" in out, report
    code, out = outs["duplicate_0"]
    assert "already serves" in out and "--process-id 0" in out, report
    code, out = outs["unreachable"]
    assert "did not answer within" in out and "start process 0" in out, report
    for i, (mine, theirs) in enumerate([(2, 3), (3, 2)]):
        _, out = outs[f"mismatched_{i}"]
        assert f"started with --num-processes {mine} but process {1 - i} with {theirs}" \
            in out, report
    assert seconds < 40, f"join errors took {seconds:.1f} s\n{report}"
    print(f"join errors: {seconds:.1f} s")


@pytest.mark.full
def test_duplicate_nonzero_id_fails_every_process():
    """Ids 0, 1, 1 of 3: JAX rejects the second registration of id 1 (ALREADY_EXISTS); the
    other two report that not all 3 processes joined. All within the bound."""
    port = jinterp.launch.free_port()
    began = time.monotonic()
    outs = _collect({i: _join(port, 3, pid) for i, pid in enumerate((0, 1, 1))}, began)
    assert all(code != 0 for code, _ in outs.values()), outs
    assert sum("not all 3 processes joined" in o for _, o in outs.values()) >= 2, outs
    assert time.monotonic() - began < 45
