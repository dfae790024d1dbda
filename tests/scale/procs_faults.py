"""Worker programs and a bounded launcher for the multi-process fault and checkpoint tests.

Run by :func:`jinterp.launch.launch` (which sets ``JINTERP_COORDINATOR``/``NUM_PROCESSES``/
``PROCESS_ID`` and fake CPU devices) as ``python procs_faults.py MODE ...``:

``train``
    SAE :func:`~jinterp.sae.trainer.train` on synthetic activations over a 2 x 4 mesh, with
    faults injected at checkpoint saves (deterministic points, so a test can say which step a
    resumed run must start from): ``--kill-in-save STEP:PROC:ATTEMPT`` SIGKILLs that process
    after its part of that save has started but before the step is committed;
    ``--term-launcher-after STEP:PROC:ATTEMPT`` sends SIGTERM to the launcher after that save
    (the launcher forwards it to every process: a preemption).
``join``
    only :func:`jinterp.distributed.initialize` (the join-error tests).
``ckpt-save`` / ``ckpt-restore``
    a planted sharded pytree saved from one mesh and restored onto another.

Process 0 prints ``KEY value`` lines that the tests parse.
"""

from __future__ import annotations

import argparse
import glob
import os
import signal
import sys
import time

HERE = os.path.abspath(__file__)
BEGAN = time.monotonic()
D_IN, D_SAE, BATCH, N_ROWS = 16, 64, 64, 1024


# ----------------------------------------------------------------------------- test side
def launch(args: list[str], log_dir: str, *, num_processes: int = 2, devices: int = 4,
           restarts: int = 0, timeout_s: float = 90.0,
           env: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    """Launches this file in ``num_processes`` processes; returns (status, {log name: text})."""
    from jinterp.launch import launch as run

    if env is None:
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "JINTERP_COMPILATION_CACHE": "0"}
    status = run([sys.executable, HERE, *args], num_processes, devices_per_process=devices,
                 restarts=restarts, timeout_s=timeout_s, grace_s=30, env=env,
                 log_dir=log_dir, verbose=False)
    logs = {os.path.basename(p): open(p).read()
            for p in sorted(glob.glob(os.path.join(log_dir, "*.log")))}
    return status, logs


def values(text: str, key: str) -> list[str]:
    """Every ``KEY value`` printed in ``text``."""
    return [line.split(None, 1)[1] if " " in line else "" for line in text.splitlines()
            if line.split(None, 1)[:1] == [key]]


def incomplete_steps(directory: str) -> list[int]:
    """Steps with an uncommitted (temporary) orbax folder in ``directory``."""
    names = glob.glob(os.path.join(directory, "*.orbax-checkpoint-tmp*"))
    return sorted(int(os.path.basename(n).split(".")[0]) for n in names)


# ----------------------------------------------------------------------------- worker side
def _fault(spec: str | None) -> tuple[int, int, int] | None:
    return None if not spec else tuple(int(v) for v in spec.split(":"))


def _sae_setup(steps: int):
    import numpy as np

    from jinterp.sae import SAEConfig, TrainConfig

    cfg = SAEConfig("topk", d_in=D_IN, d_sae=D_SAE, k=4, aux_k=8, dead_after_tokens=BATCH * 4)
    tcfg = TrainConfig(total_steps=steps, lr_decay_steps=4, penalty_warmup_steps=2)
    data = (np.random.default_rng(0).normal(size=(N_ROWS, D_IN)) * 3 + 1).astype(np.float32)
    return cfg, tcfg, data


def _mode_train(args) -> int:
    import jax
    import numpy as np

    from jinterp import distributed
    from jinterp.checkpoint import Checkpointer, complete_steps
    from jinterp.sae import sharding as sae_sharding
    from jinterp.sae.trainer import train

    me, attempt = jax.process_index(), int(os.environ.get("JINTERP_RESTART", "0"))
    kill, term = _fault(args.kill_in_save), _fault(args.term_launcher_after)
    original = Checkpointer.save

    def save(self, step, state, *, wait=True):
        if kill == (step, me, attempt):
            original(self, step, state, wait=False)  # shards on their way, nothing committed
            print("KILLING", step, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        original(self, step, state, wait=wait)
        if term == (step, me, attempt):
            print("TERM_LAUNCHER", step, flush=True)
            os.kill(os.getppid(), signal.SIGTERM)
            time.sleep(0.5)  # the forwarded signal reaches every process before the next step

    Checkpointer.save = save
    cfg, tcfg, data = _sae_setup(args.steps)
    kw = dict(lr=1e-2, tcfg=tcfg, batch_size=BATCH, seed=1, progress=False, b_dec_init="mean")
    if args.check_bad_mesh:  # a mesh of this process's devices only: refused before any work
        try:
            train(cfg, data, args.steps, mesh=jax.sharding.Mesh(
                np.array(jax.local_devices()), ("data",)), **kw)
        except ValueError as err:
            if me == 0:
                print("BAD_MESH", err, flush=True)
    mesh = sae_sharding.make_mesh(data=2, model=4)
    ckpt_dir = os.path.join(args.out, "checkpoints")
    if me == 0:  # read before train(): where this attempt resumes from
        print("START", max(complete_steps(ckpt_dir), default=0), flush=True)
    t0 = time.monotonic()
    result = train(cfg, data, args.steps, out_dir=args.out, checkpoint_every=args.every,
                   mesh=mesh, **kw)
    params = distributed.to_host(result.state.params)
    if me == 0:
        print("SECONDS", f"{time.monotonic() - BEGAN:.1f}", "in train",
              f"{time.monotonic() - t0:.1f}", flush=True)
        print("PREEMPTED", result.preempted, flush=True)
        print("STEP", int(distributed.to_host(result.state.step)), flush=True)
        if not result.preempted:
            np.savez(os.path.join(args.out, "final.npz"), **params)
    if args.reference:  # the same run uninterrupted, in these processes, without checkpoints
        t0 = time.monotonic()
        ref = train(cfg, data, args.steps, mesh=mesh, **kw)
        ref_params = distributed.to_host(ref.state.params)
        if me == 0:
            np.savez(os.path.join(args.out, "reference.npz"), **ref_params)
            print("SECONDS", f"{time.monotonic() - BEGAN:.1f}", "in reference",
                  f"{time.monotonic() - t0:.1f}", flush=True)
    if args.restore_mesh:  # the final checkpoint (written on 2 x 4) restored onto another mesh
        data_n, model_n = (int(v) for v in args.restore_mesh.split("x"))
        other = sae_sharding.make_mesh(data=data_n, model=model_n)
        with Checkpointer(ckpt_dir) as ckpt:
            got = ckpt.restore(result.state,
                               shardings=sae_sharding.state_shardings(result.state, other))
        same = all(np.array_equal(a, b) for a, b in zip(
            jax.tree.leaves(distributed.to_host(got)),
            jax.tree.leaves(distributed.to_host(result.state))))
        if me == 0:
            print("RESTORED", args.restore_mesh, dict(got.params["W_enc"].sharding.mesh.shape),
                  "equal", same, flush=True)
    return 0


def _mode_restore_alone(args) -> int:
    """One process: the multi-process checkpoint onto this process's devices, then one."""
    import jax
    import numpy as np

    from jinterp.checkpoint import Checkpointer
    from jinterp.sae import sharding as sae_sharding
    from jinterp.sae.train_step import train_state

    cfg, tcfg, _ = _sae_setup(args.steps)
    like = train_state(cfg, jax.random.PRNGKey(0), lr=1e-2, tcfg=tcfg)
    want = dict(np.load(os.path.join(args.out, "final.npz")))
    mesh = sae_sharding.make_mesh(data=2, model=jax.device_count() // 2)
    with Checkpointer(os.path.join(args.out, "checkpoints")) as ckpt:
        on_mesh = ckpt.restore(like, shardings=sae_sharding.state_shardings(like, mesh))
        on_one = ckpt.restore(like, shardings=jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    for name, got in (("mesh", on_mesh), ("one", on_one)):
        same = all(np.array_equal(np.asarray(got.params[k]), want[k]) for k in want)
        print("ALONE", name, jax.device_count(), len(got.params["W_enc"].sharding.device_set),
              int(got.step), "equal", same, flush=True)
    return 0


def planted(n: int = 8) -> dict:
    """The planted pytree of numpy arrays (values that show any misplaced slice)."""
    import numpy as np

    return {"w": np.arange(n * 16 * 4, dtype=np.float32).reshape(n * 4, 16) / 7,
            "v": np.arange(n * 8, dtype=np.int32) * 3 - 5,
            "nested": {"m": np.linspace(-1, 1, n * 6, dtype=np.float32).reshape(n, 6),
                       "s": np.float32(2.5)}}


def _specs():
    from jax.sharding import PartitionSpec as P

    return {"w": P("data", "model"), "v": P("model"), "nested": {"m": P(None, None), "s": P()}}


def _place(tree, mesh):
    import jax
    from jax.sharding import NamedSharding

    def one(x, spec):
        sharding = NamedSharding(mesh, spec)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(one, tree, _specs())


def _mode_ckpt_save(args) -> int:
    import jax

    from jinterp.checkpoint import Checkpointer
    from jinterp.sharding import make_mesh

    mesh = make_mesh(2, 4)
    state = _place(planted(), mesh)
    ckpt = Checkpointer(args.out, metadata={"run": "planted"})
    ckpt.save(1, state)
    if jax.process_index() == 1:
        ckpt.save(2, state, wait=False)  # process 1 dies while step 2 is being written
        print("KILLING 2", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    ckpt.save(2, state)  # process 0 never gets past this: the launcher kills it
    return 0


def _mode_ckpt_restore(args) -> int:
    import jax
    import numpy as np
    from jax.sharding import NamedSharding

    from jinterp import distributed
    from jinterp.checkpoint import Checkpointer, CheckpointMismatch
    from jinterp.sharding import make_mesh

    data, model = (int(v) for v in args.mesh.split("x"))
    mesh = make_mesh(data, model)
    want = planted()
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), want)
    ckpt = Checkpointer(args.out, metadata={"run": "planted"})
    shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), _specs())
    got = ckpt.restore(like, shardings=shardings)
    placed = jax.tree.map(lambda x: tuple(x.sharding.spec), got)
    host = distributed.to_host(got)
    diff = max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
               for a, b in zip(jax.tree.leaves(host), jax.tree.leaves(want)))
    try:
        Checkpointer(args.out, metadata={"run": "another"}).restore(like, shardings=shardings)
        mismatch = "none"
    except CheckpointMismatch as err:
        mismatch = str(err)
    if jax.process_index() == 0:
        print("LATEST", ckpt.latest_step(), flush=True)
        print("DEVICES", jax.device_count(), "PROCESSES", jax.process_count(), flush=True)
        print("SHARDED", placed["w"], mesh.devices.shape, flush=True)
        print("MAXDIFF", diff, flush=True)
        print("MISMATCH", mismatch, flush=True)
    return 0


def _distributed_alone():
    """``jinterp/distributed.py`` loaded by itself (it needs only jax and numpy): the join
    tests start several processes, and the package's import would double their start-up."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(HERE))), "jinterp",
                        "distributed.py")
    spec = importlib.util.spec_from_file_location("jinterp_distributed_alone", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _answers(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["train", "join", "ckpt-save", "ckpt-restore",
                                         "restore-alone"])
    parser.add_argument("--out", default=None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--kill-in-save", default=None)
    parser.add_argument("--term-launcher-after", default=None)
    parser.add_argument("--check-bad-mesh", action="store_true")
    parser.add_argument("--reference", action="store_true")
    parser.add_argument("--restore-mesh", default=None)
    parser.add_argument("--mesh", default="4x2")
    parser.add_argument("--timeout", type=int, default=30, help="join timeout (s)")
    parser.add_argument("--wait-port", type=int, default=None,
                        help="join only once this port on 127.0.0.1 answers")
    args = parser.parse_args(argv)
    if args.mode == "join":
        distributed = _distributed_alone()
        while args.wait_port and not _answers(args.wait_port):
            time.sleep(0.05)
    else:
        from jinterp import distributed

    began = time.monotonic()
    try:
        distributed.initialize(timeout_s=args.timeout, heartbeat_s=max(args.timeout, 5))
    except (TimeoutError, ValueError, RuntimeError) as err:
        print("JOIN_ERROR", type(err).__name__, f"{time.monotonic() - began:.1f}s", err,
              flush=True)
        return 3
    if args.mode == "join":
        print("JOINED", f"{time.monotonic() - began:.1f}s", flush=True)
        distributed.shutdown()
        return 0
    status = {"train": _mode_train, "ckpt-save": _mode_ckpt_save,
              "ckpt-restore": _mode_ckpt_restore,
              "restore-alone": _mode_restore_alone}[args.mode](args)
    distributed.shutdown()
    return status


if __name__ == "__main__":
    sys.exit(main())
