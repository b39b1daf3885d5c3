"""Run directories: collision-free names, one writer at a time, metrics that survive a crash."""

import json

import pytest

from tokenzero import config as config_lib
from tokenzero import rundir
from tokenzero.config import ConfigError


def test_new_run_dirs_never_collide(tmp_path):
  paths = [rundir.new_run_dir("sort", root=tmp_path) for _ in range(3)]
  assert len(set(paths)) == 3 and all(p.is_dir() for p in paths)
  assert all(p.name.startswith("sort-") for p in paths)


def test_one_writer_per_run_directory(tmp_path):
  with rundir.RunLock(tmp_path):
    with pytest.raises(ConfigError, match="is in use by another tokenzero process"):
      with rundir.RunLock(tmp_path):
        pass
  with rundir.RunLock(tmp_path):  # released on exit
    pass


def test_metrics_up_to_a_cut_line(tmp_path):
  path = tmp_path / rundir.METRICS_FILE
  rows = [{"iteration": i, "x": i * 0.5} for i in range(4)]
  rundir.write_metrics(path, rows)
  with path.open("a") as f:
    f.write('{"iteration": 4, "x"')  # a kill in the middle of a line
  assert rundir.read_metrics(path, upto=2) == rows[:3]
  assert rundir.read_metrics(path, upto=10) == rows


def test_resume_diff_names_the_keys():
  config = config_lib.resolve(overrides=["seed=1", "model.vocab_size=13", "model.context=8"])
  saved = json.loads(json.dumps(config_lib.to_dict(config)))
  rundir.check_resume(saved, config, allow_change=False)
  saved["search"]["num_simulations"] = 3
  saved["iterations"] = 7  # how long to go on may change
  with pytest.raises(ConfigError, match=r"differing keys: search\.num_simulations \(pass"):
    rundir.check_resume(saved, config, allow_change=False)
  rundir.check_resume(saved, config, allow_change=True)


def test_a_config_saved_before_the_split_key_keeps_the_legacy_split(tmp_path):
  config = config_lib.resolve(overrides=["model.vocab_size=13", "model.context=8"])
  old = json.loads(json.dumps(config_lib.to_dict(config)))
  del old["eval"]["split"]  # what runs saved before `eval.split` existed hold
  rundir.write_config(tmp_path, old)
  saved = rundir.read_config(tmp_path)
  assert saved["eval"]["split"] == "legacy" and "split" not in old["eval"]
  resumed = config_lib.resolve(base=saved)  # what `train --resume` builds on
  assert resumed.eval.split == "legacy"
  rundir.check_resume(old, resumed, allow_change=False)
  with pytest.raises(ConfigError, match=r"differing keys: eval\.split"):
    rundir.check_resume(old, config, allow_change=False)  # today's default would change it
  new = config_lib.to_dict(config)
  assert new["eval"]["split"] == "hash" and rundir.as_saved(new) == new
