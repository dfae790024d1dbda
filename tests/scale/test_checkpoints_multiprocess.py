"""Checkpoints that are complete or ignored, belong to one run, and restore onto any mesh.

In this process (one device, fast): a folder written by a different run (metadata, tree,
shapes) is refused with an error that names the difference and writes nothing; unfinished
step folders (orbax's ``<step>.orbax-checkpoint-tmp-*``, or a step folder without its commit
file) are never reported or restored; ``shardings=`` places the restored leaves; the SAE
trainer refuses to resume another configuration's checkpoints.

The multi-process path (2 processes x 4 devices save on 2 x 4, restore onto 4 x 2 and onto 4
devices of one process, a process killed mid-save) runs in the default suite inside
``test_faults.py`` on the SAE run's own checkpoints; ``full`` repeats it here on a planted
pytree of mixed shardings and dtypes.
"""

import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import procs_faults as pf  # noqa: E402

from jinterp.checkpoint import Checkpointer, CheckpointMismatch, complete_steps  # noqa: E402


def _state(d: int = 4):
    return {"w": jnp.arange(3 * d, dtype=jnp.float32).reshape(3, d) / 3,
            "step": jnp.int32(7), "opt": {"mu": jnp.linspace(-1, 1, d)}}


def _snapshot(directory) -> dict[str, tuple[int, float]]:
    """Every file under ``directory`` with its size and modification time."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            out[os.path.relpath(path, directory)] = (os.path.getsize(path),
                                                     os.path.getmtime(path))
    return out


def test_a_different_run_is_refused_and_nothing_is_written(tmp_path):
    with Checkpointer(tmp_path, metadata={"model": {"d_sae": 64, "k": 4}, "lr": 0.01}) as ckpt:
        ckpt.save(2, _state())
    before = _snapshot(tmp_path)
    other = Checkpointer(tmp_path, metadata={"model": {"d_sae": 128, "k": 4}, "lr": 0.01})
    for attempt in (lambda: other.save(4, _state()), lambda: other.restore(_state()),
                    lambda: other.restore_or(_state())):
        with pytest.raises(CheckpointMismatch) as err:
            attempt()
        assert "model.d_sae: 64 vs 128" in str(err.value), err.value
        assert "new directory" in str(err.value) and "Nothing was" in str(err.value)
    other.close()
    assert _snapshot(tmp_path) == before
    # the same metadata resumes (JSON-equal: tuples and lists alike)
    with Checkpointer(tmp_path, metadata={"lr": 0.01, "model": {"k": 4, "d_sae": 64}}) as same:
        np.testing.assert_array_equal(same.restore(_state())["w"], _state()["w"])
    # a different tree or shape: the leaf and the fix are named
    with Checkpointer(tmp_path) as plain:
        with pytest.raises(CheckpointMismatch) as err:
            plain.restore({**_state(5), "extra": jnp.zeros(2)})
    message = str(err.value)
    assert "w: checkpoint (3, 4) float32, target (3, 5) float32" in message, message
    assert "extra: missing in the checkpoint" in message, message
    assert "different model or config" in message, message


def test_unfinished_step_folders_are_never_restored(tmp_path):
    with Checkpointer(tmp_path, max_to_keep=5) as ckpt:
        ckpt.save(3, _state())
        ckpt.save(5, jax.tree.map(lambda x: x + 1, _state()))
    # a save interrupted before its rename, and a step folder whose commit file is missing
    shutil.copytree(tmp_path / "5", tmp_path / "9.orbax-checkpoint-tmp-1700000000")
    shutil.copytree(tmp_path / "5", tmp_path / "8")
    os.remove(tmp_path / "8" / "_CHECKPOINT_METADATA")
    assert complete_steps(tmp_path) == [3, 5]
    with Checkpointer(tmp_path, max_to_keep=5) as ckpt:
        assert ckpt.latest_step() == 5 and ckpt.all_steps() == [3, 5]
        got = ckpt.restore(_state())
        np.testing.assert_array_equal(got["w"], _state()["w"] + 1)
        for step in (8, 9):
            with pytest.raises(FileNotFoundError, match="complete: \\[3, 5\\]"):
                ckpt.restore(_state(), step=step)
        # abstract targets and an explicit placement
        like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _state())
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        got = ckpt.restore(like, step=3, shardings=device)
        assert got["opt"]["mu"].sharding == device
        np.testing.assert_array_equal(got["opt"]["mu"], _state()["opt"]["mu"])


def test_sae_trainer_refuses_another_configs_checkpoints(tmp_path):
    from jinterp.sae import SAEConfig
    from jinterp.sae.trainer import train

    data = np.random.default_rng(0).normal(size=(256, 8)).astype(np.float32)
    cfg = SAEConfig("relu", d_in=8, d_sae=16)
    kw = dict(lr=1e-2, batch_size=32, out_dir=tmp_path, checkpoint_every=2, progress=False,
              b_dec_init="mean")
    first = train(cfg, data, 2, **kw)
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointMismatch, match="sae.d_sae: 16 vs 32"):
        train(SAEConfig("relu", d_in=8, d_sae=32), data, 4, **kw)
    with pytest.raises(CheckpointMismatch, match="seed: 0 vs 1"):
        train(cfg, data, 2, seed=1, **kw)
    assert _snapshot(tmp_path) == before
    again = train(cfg, data, 2, **kw)  # same run: resumes at its end, nothing to do
    np.testing.assert_array_equal(again.params["W_enc"], first.params["W_enc"])


@pytest.mark.full
def test_planted_tree_two_processes_to_other_meshes(tmp_path):
    """2 x 4 save of mixed shardings, process 1 killed mid-save of step 2; restore step 1
    onto 4 x 2 (2 processes) and 2 x 2 (one process): identical values, step 2 ignored."""
    ckpt = str(tmp_path / "ckpt")
    status, logs = pf.launch(["ckpt-save", "--out", ckpt], str(tmp_path / "save"))
    assert status == 137, logs
    assert pf.values(logs["attempt0.proc1.log"], "KILLING") == ["2"], logs
    assert complete_steps(ckpt) == [1] and pf.incomplete_steps(ckpt) == [2]
    status, logs = pf.launch(["ckpt-restore", "--out", ckpt, "--mesh", "4x2"],
                             str(tmp_path / "restore"))
    log0 = logs["attempt0.proc0.log"]
    assert status == 0, logs
    assert pf.values(log0, "LATEST") == ["1"] and pf.values(log0, "MAXDIFF") == ["0.0"], log0
    assert pf.values(log0, "SHARDED") == ["('data', 'model') (4, 2)"], log0
    assert "different run" in pf.values(log0, "MISMATCH")[0], log0
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    alone = subprocess.run([sys.executable, pf.HERE, "ckpt-restore", "--out", ckpt, "--mesh",
                            "2x2"], env={**os.environ, "XLA_FLAGS": flags,
                                         "JAX_PLATFORMS": "cpu"},
                           capture_output=True, text=True, timeout=60)
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert pf.values(alone.stdout, "MAXDIFF") == ["0.0"], alone.stdout
    assert pf.values(alone.stdout, "DEVICES") == ["4 PROCESSES 1"], alone.stdout
