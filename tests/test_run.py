"""`run.build`: the model fitted to the task, and the checks made before anything compiles."""

import pytest

from tokenzero import config as config_lib
from tokenzero import run as run_lib
from tokenzero.config import ConfigError
from tokenzero.config.validate import MAX_AUTO_CONTEXT

TINY = ["task.params.length=3", "model.d_model=16", "model.num_heads=2", "model.num_layers=1"]


def test_default_top_k_fits_any_vocabulary():
  config = config_lib.resolve(overrides=TINY)
  assert config.search.top_k == 0
  run_lib.build(config)  # vocab 13 < 16: no error.
  run_lib.build(config_lib.resolve(overrides=TINY + ["search.top_k=13"]))


def test_build_fills_the_model_from_the_task():
  setup = run_lib.build(config_lib.resolve(overrides=TINY))
  tokenizer = setup.tokenizer
  assert setup.config.model.vocab_size == tokenizer.vocab_size == 13
  assert setup.config.model.context == setup.task.prompt_len + setup.max_new_tokens
  allowed = [bool(a) for a in setup.allowed]
  assert not allowed[tokenizer.pad_id] and not allowed[tokenizer.sep_id]
  assert allowed[tokenizer.eos_id] and sum(allowed) == tokenizer.vocab_size - 2


@pytest.mark.parametrize("prompt_len,context,fits", [
    (MAX_AUTO_CONTEXT - 4, 0, True),  # exactly the bound with a 4-token answer
    (MAX_AUTO_CONTEXT - 3, 0, False),
    (MAX_AUTO_CONTEXT + 100, MAX_AUTO_CONTEXT + 104, True),  # a context the user set
    (MAX_AUTO_CONTEXT + 100, MAX_AUTO_CONTEXT + 103, False),
])
def test_the_automatic_context_is_bounded(prompt_len, context, fits):
  config = config_lib.resolve(overrides=TINY + [f"model.context={context}"])
  fit = lambda: config_lib.fit_model_to_task(config, vocab_size=13, prompt_len=prompt_len,
                                             max_new_tokens=4, longest_prompt="abc")
  if fits:
    assert fit().model.context == (context or prompt_len + 4)
  else:
    with pytest.raises(ConfigError, match=r"the longest prompt, 'abc' .*model\.context="):
      fit()
