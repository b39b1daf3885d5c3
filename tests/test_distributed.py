"""Many hosts: the environment's plan, the agreements (free on one process), each process's own
prompt stream, the topology a checkpoint records and the check on resume; then the agreements
and a checkpoint on two real `jax.distributed` CPU processes (tests/distributed_worker.py).

A two-process training run (two iterations, a resume, a SIGTERM to one process) is
benchmarks/two_process.py: it takes minutes on the 2-core machine, past this suite's budget."""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokenzero import checkpoint as ckpt_lib
from tokenzero import config as config_lib
from tokenzero import distributed, prompts, rundir
from tokenzero.config import ConfigError, MeshConfig, RunConfig
from tokenzero.stopping import NonfiniteStreak, StopFlag, agree_at_boundary
from tokenzero.tasks import make_task

from conftest import slow

ALL_THREE = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4",
             "JAX_PROCESS_ID": "3"}
SLURM = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_NTASKS": "2",
         "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}


@pytest.mark.parametrize("environ, expected", [
    ({}, None),
    (ALL_THREE, distributed.Plan("10.0.0.1:1234", 4, 3, "environment")),
    ({**ALL_THREE, "JAX_NUM_PROCESSES": "1", "JAX_PROCESS_ID": "0"}, None),
    (SLURM, distributed.Plan(None, None, None, "SLURM")),
    ({**SLURM, "SLURM_NTASKS": "1"}, None),  # one task: nothing to join
    ({**SLURM, "JAX_COORDINATOR_ADDRESS": "node1:5000"},
     distributed.Plan("node1:5000", None, None, "SLURM")),
    ({**ALL_THREE, "TOKENZERO_DISTRIBUTED": "off"}, None),
    ({"TOKENZERO_DISTRIBUTED": "auto"}, distributed.Plan(None, None, None, "auto")),
])
def test_plan_from_the_environment(environ, expected):
  assert distributed.plan(environ) == expected


@pytest.mark.parametrize("environ, match", [
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, "set but JAX_COORDINATOR_ADDRESS not"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1"}, "JAX_NUM_PROCESSES, JAX_PROCESS_ID not"),
    ({**ALL_THREE, "JAX_PROCESS_ID": "4"}, "ids are 0 to"),
    ({**ALL_THREE, "JAX_NUM_PROCESSES": "two"}, "'two' is not a whole number"),
    ({"TOKENZERO_DISTRIBUTED": "yes"}, "'auto'.*'off'"),
])
def test_half_a_plan_is_an_error_not_a_run_alone(environ, match):
  with pytest.raises(ConfigError, match=match):
    distributed.plan(environ)


def test_one_process_writes_agrees_and_fails_alone():
  assert distributed.initialize({}) is None
  assert distributed.is_writer() and distributed.process_count() == 1
  assert distributed.agree_stop(True) and not distributed.agree_stop(False)
  np.testing.assert_array_equal(distributed.gather([0, 15, 1]), [[0, 15, 1]])
  assert distributed.local_share(6, "selfplay.batch_size") == 6
  with pytest.raises(KeyError, match="its own"):  # the error itself, not StoppedElsewhere
    with distributed.fail_together("doing it"):
      raise KeyError("its own")


def test_a_global_batch_that_does_not_divide_names_the_numbers(monkeypatch):
  monkeypatch.setattr(jax, "process_count", lambda: 4)
  assert distributed.local_share(8, "selfplay.batch_size") == 2
  with pytest.raises(ConfigError, match=r"selfplay.batch_size=6 does not divide over 4 "
                                        r"processes.*multiple of 4, such as 4 or 8"):
    distributed.local_share(6, "selfplay.batch_size")


def test_each_process_draws_its_own_share_none_held_out():
  task = make_task("sort", {"length": 3})
  stream = prompts.training_stream(task, 7, split="hash", eval_texts=())
  # One process keeps the stream single-process runs always had.
  assert stream.draw(5, 64, process=(0, 1)) == stream.draw(5, 64)
  shares = [stream.draw(5, 64, process=(i, 2)) for i in (0, 1)]
  assert [len(s) for s in shares] == [32, 32]
  assert shares[0] != shares[1] and shares[0] != stream.draw(5, 64)[:32]
  assert shares[1] == stream.draw(5, 64, process=(1, 2))  # resumable: keyed, not stateful
  assert not any(task.is_held_out(p) for share in shares for p in share)
  with pytest.raises(ValueError, match="64 prompts does not divide over 3"):
    stream.draw(5, 64, process=(0, 3))


@pytest.mark.parametrize("saved, current, allowed", [
    ({"processes": 2, "devices": 2}, distributed.Topology(2, 2), True),
    (None, distributed.Topology(1, 4), True),  # an older checkpoint: one process
    ({"processes": 2, "devices": 2}, distributed.Topology(1, 1), False),
    ({"processes": 1, "devices": 4}, distributed.Topology(1, 1), False),
    (None, distributed.Topology(2, 2), False),
])
def test_resume_only_on_the_topology_that_wrote_the_checkpoint(saved, current, allowed):
  if allowed:
    distributed.check_topology(saved, current, where="checkpoint c/3")
    return
  want = distributed.Topology(**saved) if saved else distributed.Topology(1, current.devices)
  with pytest.raises(ConfigError, match=f"checkpoint c/3 was written by {want.describe()}; "
                                        f"this run is {current.describe()}"):
    distributed.check_topology(saved, current, where="checkpoint c/3")
  distributed.check_topology(saved, current, where="c/3", allow_change=True)


def test_the_same_topology_resumes_with_another_mesh_split_another_one_does_not():
  config = RunConfig()
  saved = config_lib.to_dict(dataclasses.replace(config, mesh=MeshConfig(data=2, model=2)))
  rundir.check_resume(saved, config, allow_change=False)  # mesh.* is how the devices are split: resumable
  with pytest.raises(ConfigError, match="differing keys: seed"):
    rundir.check_resume({**saved, "seed": 1}, config, allow_change=False)
  four = {"processes": 1, "devices": 4}
  distributed.check_topology(four, distributed.Topology(1, 4), where="c/3")
  with pytest.raises(ConfigError, match="written by 1 process with 4 devices; this run is 1 "
                                        "process with 2 devices"):
    distributed.check_topology(four, distributed.Topology(1, 2), where="c/3")


def test_a_checkpoint_records_its_topology(tmp_path):
  state = ckpt_lib.TrainState(params={"w": jnp.ones((2, 3))}, opt_state={}, step=jnp.int32(0),
                              iteration=jnp.int32(4), rng=jnp.array([0, 7], jnp.uint32))
  checkpointer = ckpt_lib.Checkpointer(tmp_path, writer=True)
  checkpointer.save(state, {"seed": 0})
  assert checkpointer.topology(4) == {"processes": 1, "devices": jax.device_count()}
  checkpointer.close()


@pytest.mark.parametrize("signal_name, out_of_time, reason, signum", [
    (None, False, None, 0),
    (None, True, "reached the 2-minute budget", 0),
    ("SIGTERM", True, "received SIGTERM", signal.SIGTERM),
])
def test_the_boundary_on_one_process_is_its_own_decision(signal_name, out_of_time, reason,
                                                         signum):
  stop = StopFlag()
  stop.signal_name = signal_name
  boundary = agree_at_boundary(stop, NonfiniteStreak(), out_of_time=out_of_time,
                               max_nonfinite=3, minutes=2)
  assert boundary == (None, reason, signum, False)
  streak = NonfiniteStreak()
  streak.length, streak.start = 3, "optimizer step 7"
  failed = agree_at_boundary(stop, streak, out_of_time=False, max_nonfinite=3, minutes=2)
  assert failed.skipping and failed.failure.startswith("3 consecutive optimizer updates")


@slow  # ~10 s of two processes importing jax; benchmarks/two_process.py runs the whole loop
def test_two_processes_agree_gather_and_save_process_0s_checkpoint(tmp_path):
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
  worker = Path(__file__).with_name("distributed_worker.py")
  repo = str(worker.parents[1])
  procs = []
  for index in (0, 1):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env["XLA_FLAGS"] = " ".join([env.get("XLA_FLAGS", ""),
                                 "--xla_force_host_platform_device_count=2"])
    env.update(JAX_PLATFORMS="cpu", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
               JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(index),
               PYTHONPATH=os.pathsep.join([repo, env.get("PYTHONPATH", "")]))
    procs.append(subprocess.Popen([sys.executable, str(worker), str(tmp_path / "ckpt")],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True))
  outputs = [proc.communicate(timeout=300) for proc in procs]
  assert [proc.returncode for proc in procs] == [0, 0], outputs
  seen = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
  for index, got in enumerate(seen):
    assert (got["process"], got["count"], got["writer"]) == (index, 2, index == 0)
    assert got["gather"] == [[0, 10], [1, 11]] and got["stop"] is True
    assert got["batch"] == [0, 0, 1, 1]
    assert got["restored_w"] == [0.0, 0.0, 0.0]  # process 0's, and its digest matched
    assert got["topology"] == {"processes": 2, "devices": 4}
    # The mesh over both: process p's own rows are rows 2p, 2p + 1 of one global batch.
    assert got["mesh"] == [2, 2] and got["rows_global"] and got["rows"] == [0, 0, 1, 1]
    # Params split by mesh.model (within each process, whole on each): the digest is one
    # process's, the checkpoint restores onto the same split.
    assert got["w_split"] and got["digest_as_one_process"] and got["split_restored"]
    assert got["model_4"] == ("mesh.model=4 splits parameters across processes: each of the 2 "
                              "processes plays its own rows of the batch on its own 2 devices, "
                              "so mesh.model must divide 2 (1, 2)")
  assert [got["failed"] for got in seen] == ["StoppedElsewhere", "KeyError"]
