"""Sample rewards of every form and the text pairs the reward tests score them on.

A helper module, not a test file: the rewards are module-level functions because tests
parametrize over them, which fixtures in conftest.py cannot do.
"""

import jax
import jax.numpy as jnp
import numpy as np

import tokenzero
from tokenzero import rewards
from tokenzero.tokenizer import CharTokenizer

TOKENIZER = CharTokenizer("abc")
PROMPTS = ["ab", "abc", "ca"]
COMPLETIONS = ["ba", "c", "aac"]
T = 4
A_ID = TOKENIZER.encode("a")[0]


def run_token_reward(token_fn, prompts=PROMPTS, completions=COMPLETIONS):
  """The TokenReward under jit on the pairs, blocked on, pending errors raised."""
  args = rewards.encode_pairs(TOKENIZER, prompts, completions, T)
  out = jax.block_until_ready(jax.jit(token_fn)(*args))
  rewards.raise_pending()
  return np.asarray(out)


def reversed_prompt(prompt, completion):
  return float(completion == prompt[::-1])


@tokenzero.batched_reward
def batched_length(prompts, completions):
  return [len(c) / 4 for c in completions]


@tokenzero.jax_reward
def count_a(tokens, lengths):
  del lengths
  return jnp.sum(tokens == A_ID, axis=1).astype(jnp.float32)


@tokenzero.jax_reward(with_prompt=True)
def same_length(prompt, prompt_len, completion, completion_len):
  del prompt, completion
  return (prompt_len == completion_len).astype(jnp.float32)  # SEP and EOS both counted


@tokenzero.step_reward
def step_a(prompt, partial):
  del prompt
  return float(partial[-1] == "a")


@tokenzero.jax_step_reward
def jax_step_a(tokens, lengths):
  del lengths
  return (tokens == A_ID).astype(jnp.float32)


def string_on_c(prompt, completion):
  return "high" if completion == "c" else 1.0
