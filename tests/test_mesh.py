"""The device mesh: the config's checks in process (one device), and in one subprocess with 4
forced CPU devices (tests/mesh_checks.py) a run on 4 devices against the same run on 1, params
identical on every device, a 4-device checkpoint resumed on 4, FSDP-split params, and the error
of a batch that does not divide."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import AbstractMesh, PartitionSpec as P

from tokenzero import config as config_lib
from tokenzero import mesh as mesh_lib
from tokenzero.config import ConfigError
from tokenzero.run import build

TESTS = Path(__file__).resolve().parent
PER_PROCESS = ("elapsed_s", "selfplay_s", "train_s", "replay_s", "compiles")


def _config(*overrides):
  return config_lib.resolve(overrides=["selfplay.batch_size=8", *overrides])


@pytest.mark.parametrize("overrides, devices, shape", [
    ((), 4, (4, 1)), (("mesh.model=2",), 4, (2, 2)), (("mesh.data=2",), 4, (2, 1)),
    (("mesh.data=1",), 1, (1, 1)), (("selfplay.batch_size=6", "mesh.data=3"), 4, (3, 1)),
])
def test_the_mesh_shape_from_the_config(overrides, devices, shape):
  assert mesh_lib.mesh_shape(_config(*overrides), devices) == shape


@pytest.mark.parametrize("overrides, devices, words", [
    (("selfplay.batch_size=10",), 4,
     ["selfplay.batch_size=10", "4 data devices", "multiple of 4 (8 or 12)",
      "mesh.data to a divisor of 10 (1, 2, 5, 10)"]),
    (("selfplay.batch_size=2",), 4, ["multiple of 4 (4)"]),
    (("optim.anchor_weight=0.5", "optim.anchor_data=x.jsonl", "optim.anchor_batch_size=6"), 4,
     ["optim.anchor_batch_size=6", "multiple of 4 (4 or 8)"]),
    (("mesh.model=3",), 4, ["mesh.model=3 does not divide the 4 devices", "[1, 2, 4]"]),
    (("mesh.data=4", "mesh.model=2"), 4, ["needs 8 devices; there are 4"]),
    (("mesh.model=0",), 4, ["mesh.model must be >= 1"]),
    (("mesh.data=-1",), 4, ["mesh.data must be >= 0"]),
])
def test_a_mesh_that_does_not_fit_is_an_error_naming_the_numbers(overrides, devices, words):
  with pytest.raises(ConfigError) as err:
    mesh_lib.mesh_shape(_config(*overrides), devices)
  for word in words:
    assert word in str(err.value)


def test_build_checks_the_mesh_against_this_machine():
  with pytest.raises(ConfigError, match=f"needs 2 devices; there are {jax.device_count()}"):
    build(_config("task.params.length=3", f"mesh.data={2 * jax.device_count()}"))


def test_fsdp_splits_each_param_on_its_largest_axis_the_model_axis_divides():
  mesh = mesh_lib.DeviceMesh(AbstractMesh((1, 2), mesh_lib.AXES))
  assert mesh.param_spec((16, 64)) == P(None, "model")
  assert mesh.param_spec((64, 3)) == P("model", None)
  assert mesh.param_spec((3, 5)) == P() and mesh.param_spec(()) == P()
  assert mesh_lib.DeviceMesh(AbstractMesh((2, 1), mesh_lib.AXES)).param_spec((16, 64)) == P()


def test_pad_rows_repeats_the_last_row():
  tokens, lengths = mesh_lib.pad_rows((np.arange(6).reshape(3, 2), np.array([1, 2, 3])), 4)
  assert tokens.tolist() == [[0, 1], [2, 3], [4, 5], [4, 5]] and lengths.tolist() == [1, 2, 3, 3]


@pytest.fixture(scope="module")
def four_devices():
  env = dict(os.environ)
  # Four CPU devices; LLVM at -O0 since this process is all compilation (it runs for ms).
  env["XLA_FLAGS"] = " ".join([env.get("XLA_FLAGS", ""),
                               "--xla_force_host_platform_device_count=4",
                               "--xla_backend_optimization_level=0",
                               "--xla_llvm_disable_expensive_passes=true"])
  env["PYTHONPATH"] = os.pathsep.join([str(TESTS.parent), env.get("PYTHONPATH", "")])
  env["TOKENZERO_COMPILATION_CACHE"] = "off"
  done = subprocess.run([sys.executable, str(TESTS / "mesh_checks.py")], env=env, cwd=TESTS,
                        capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


def _same_row(a, b):
  assert a.keys() == b.keys()
  for key in a.keys() - set(PER_PROCESS):
    if isinstance(a[key], float):
      assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    else:
      assert a[key] == b[key], key


def test_a_run_on_four_devices_matches_one_device(four_devices):
  four, one = four_devices["rows_four"], four_devices["rows_one"]
  assert four_devices["devices"] == 4
  assert [r["iteration"] for r in four] == [r["iteration"] for r in one] == [0, 1, 2]
  for row_four, row_one in zip(four, one):
    _same_row(row_four, row_one)
  assert four[1]["loss_policy"] > 0 and 0 <= four[1]["eval_greedy_reward"] <= 1
  assert four[2]["compiles"] == 0  # nothing recompiles after the first iteration


def test_params_stay_identical_on_every_device(four_devices):
  assert four_devices["steps"] == 8 and four_devices["replicas"] is True


def test_a_checkpoint_written_on_four_devices_resumes_on_four(four_devices):
  assert set(four_devices["restored_devices"]) == {4}
  assert four_devices["resumed_row"]["compiles"] == 0
  _same_row(four_devices["resumed_row"], four_devices["rows_four"][2])


def test_fsdp_split_params_train_as_replicated_ones(four_devices):
  fsdp = four_devices["fsdp"]
  assert fsdp["split_leaves"] >= fsdp["leaves"] - 2 and fsdp["kept_layout"]
  assert fsdp["loss_split"] == pytest.approx(fsdp["loss_four"], rel=1e-5)
  assert fsdp["max_param_diff"] < 1e-4
  assert fsdp["restored_equal"] and fsdp["restored_layout"]


def test_a_batch_that_does_not_divide_is_the_promised_error(four_devices):
  assert four_devices["error"] == (
      "selfplay.batch_size=6 does not divide over the mesh's 4 data devices (batch sizes are "
      "global, split evenly): set selfplay.batch_size to a multiple of 4 (4 or 8), or mesh.data "
      "to a divisor of 6 (1, 2, 3, 6)")
