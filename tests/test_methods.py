"""Method names and the parsing of `--methods` / `--budgets`, without JAX."""

import itertools

import pytest

from tokenzero import methods


def test_parse_methods_and_budgets():
  assert methods.parse_methods("greedy, mcts") == ["greedy", "mcts"]
  assert methods.parse_budgets("16,1,4,4") == [1, 4, 16]
  for bad in ("greedy,nope", ""):
    with pytest.raises(ValueError, match="unknown method"):
      methods.parse_methods(bad)
  with pytest.raises(ValueError):
    methods.parse_budgets("0,4")
  assert list(itertools.chain(methods.FIXED_COST_METHODS,
                              methods.BUDGETED_METHODS)) == list(methods.METHODS)


def test_the_default_sweep_pairs_every_verifier_method_with_a_verifier_free_one():
  """Search with the reward in the tree is compared with value-only search, best-of-n by reward
  with best-of-n by value; the verifier-free methods come first (tables keep that order)."""
  sweep = methods.SWEEP_METHODS
  assert set(sweep) <= set(methods.METHODS)
  assert methods.parse_methods(",".join(sweep)) == list(sweep)
  assert {"mcts_value", "best_of_n_value", "beam", "greedy"} <= set(sweep)
  uses = [m in methods.VERIFIER_METHODS for m in sweep]
  assert uses == sorted(uses) and any(uses)
