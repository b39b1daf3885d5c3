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
