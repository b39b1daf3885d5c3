import pytest

from tokenzero import config as config_lib
from tokenzero.config import ConfigError, RunConfig


def test_defaults_are_the_sort_experiment():
  config = config_lib.resolve()
  assert config.task.name == "sort"
  assert config.search.algorithm == "gumbel"
  assert config.search.top_k == 0  # 16, or the vocabulary when smaller


@pytest.mark.parametrize("override,path,value", [
    ("search.num_simulations=8", ("search", "num_simulations"), 8),
    ("optim.learning_rate=1e-3", ("optim", "learning_rate"), 1e-3),
    ("search.incremental=false", ("search", "incremental"), False),
    ("task.params.length=4", ("task", "params"), {"length": 4}),
    ("seed=3", ("seed",), 3),
])
def test_dotted_overrides_are_typed(override, path, value):
  config = config_lib.resolve(overrides=[override])
  for part in path:
    config = getattr(config, part)
  assert (dict(config) if isinstance(value, dict) else config) == value


@pytest.mark.parametrize("override,message", [
    ("search.num_simulation=8", "did you mean 'search.num_simulations'"),
    ("serch.top_k=3", "did you mean 'search.top_k'"),
    ("search.top_k=many", "wants int"),
    ("search.incremental=maybe", "true or false"),
    ("search.top_k", "not KEY=VALUE"),
])
def test_bad_overrides_are_named(override, message):
  with pytest.raises(ConfigError, match=message):
    config_lib.resolve(overrides=[override])


def test_toml_file_and_override_order(tmp_path):
  path = tmp_path / "run.toml"
  path.write_text("iterations = 7\n[search]\nnum_simulations = 4\ntop_k = 5\n")
  config = config_lib.resolve(path, ["search.top_k=6"])
  assert (config.iterations, config.search.num_simulations, config.search.top_k) == (7, 4, 6)
  path.write_text("[search]\nnum_simulatons = 4\n")
  with pytest.raises(ConfigError, match="search.num_simulatons"):
    config_lib.resolve(path)


def test_round_trip_through_dict():
  config = config_lib.resolve(overrides=["task.params.length=3", "model.d_model=32"])
  again = config_lib.from_dict(RunConfig, config_lib.to_dict(config))
  assert again == config


def test_typed_values_then_string_overrides():
  config = config_lib.resolve(
      overrides=["seed=3", "task.params.alphabet=123"],
      values={"seed": 1, "iterations": 7, "task.name": "prompts", "task.params.prompts": "p.txt"})
  assert config.seed == 3 and config.iterations == 7  # strings come after the typed values
  assert dict(config.task.params) == {"prompts": "p.txt", "alphabet": 123}
  with pytest.raises(ConfigError, match="unknown config key 'iteratons'"):
    config_lib.resolve(values={"iteratons": 3})
