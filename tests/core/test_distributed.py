"""jinterp.distributed in one process: a no-op start, bad flags caught before any join, the
rows each process loads, and the studies that refuse to run as several processes.

Real multi-process runs are in tests/scale and tests/core/test_multihost_tokens.py.
"""

import argparse

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec

from jinterp import distributed


def test_one_process_is_a_no_op_and_flags_parse(monkeypatch):
    for names in distributed.ENV_VARS.values():
        for name in names:
            monkeypatch.delenv(name, raising=False)
    for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.initialize() == distributed.Processes(0, 1, None)
    parser = argparse.ArgumentParser()
    distributed.add_arguments(parser)
    args = parser.parse_args(["--num-processes", "1"])
    assert distributed.initialize_from_args(args).is_main
    assert distributed.is_main()


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_processes=2, process_id=0), "needs a coordinator"),
    (dict(coordinator_address="127.0.0.1", num_processes=2, process_id=0), "host:port"),
    (dict(coordinator_address="127.0.0.1:99999", num_processes=2, process_id=0), "host:port"),
    (dict(coordinator_address="127.0.0.1:8476", num_processes=2, process_id=2),
     r"process_id=2 must lie in \[0, 2\)"),
    (dict(coordinator_address="127.0.0.1:8476", num_processes=2), "process_id=None"),
    (dict(coordinator_address="127.0.0.1:8476", num_processes=0), "num_processes=0"),
])
def test_bad_flags_name_the_fix_before_joining(kwargs, message):
    with pytest.raises(ValueError, match=message):
        distributed.initialize(**kwargs)


def test_environment_variables_are_read(monkeypatch):
    monkeypatch.setenv("JINTERP_COORDINATOR", "127.0.0.1:8476")
    monkeypatch.setenv("JINTERP_NUM_PROCESSES", "3")
    monkeypatch.setenv("JINTERP_PROCESS_ID", "7")
    with pytest.raises(ValueError, match=r"process_id=7 must lie in \[0, 3\)"):
        distributed.initialize()
    monkeypatch.setenv("JINTERP_PROCESS_ID", "one")
    with pytest.raises(ValueError, match="process_id must be an integer"):
        distributed.initialize()


def test_local_rows_global_batch_and_mesh_check():
    mesh = Mesh(np.array(jax.devices()), ("data",))
    assert distributed.local_rows(6, mesh) == slice(0, 6)  # one process owns every row
    rows = np.arange(12.0).reshape(6, 2)
    batch = distributed.global_batch(rows, mesh)
    np.testing.assert_array_equal(distributed.to_host(batch), rows)
    assert distributed.local_rows(6, mesh, PartitionSpec()) == slice(0, 6)
    fake = Mesh(np.array(jax.devices() * 2).reshape(2, 1), ("data", "model"))
    with pytest.raises(ValueError, match="choose mesh axes whose product is 1"):
        distributed.check_mesh(fake)


def test_single_process_studies_refuse_several_processes():
    distributed.single_process(distributed.Processes(0, 1, None), "python -m x")
    with pytest.raises(SystemExit, match="started as process 1 of 2: start it once"):
        distributed.single_process(distributed.Processes(1, 2, "h:1"), "python -m x")
