"""Python rewards through the host callback: one call over the ended rows only, no call after a
failure, and a planted reward that only the search finds through the callback
(tokenzero/rewards/host.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tokenzero
from tokenzero import episode as episode_lib, prompts as prompts_lib, rewards
from tokenzero.tokenizer import answer_mask
from tokenzero import search as search_lib
from tokenzero.config import SearchConfig
from tokenzero.rewards import RewardError

from reward_samples import COMPLETIONS, PROMPTS, T, TOKENIZER


def test_python_reward_sees_only_ended_rows_in_one_call():
  calls = []

  @tokenzero.batched_reward
  def spy(prompts, completions):
    calls.append(list(completions))
    return [1.0] * len(completions)

  args = list(rewards.encode_pairs(TOKENIZER, PROMPTS, COMPLETIONS, T))
  args[3] = args[3] - np.array([0, 1, 0], np.int32)  # row 1 has not ended (no EOS yet)
  out = jax.jit(rewards.token_reward(spy, TOKENIZER))(*args)
  np.testing.assert_allclose(out, [1.0, 0.0, 1.0])
  assert calls == [["ba", "aac"]]


def test_failed_reward_is_not_called_again_until_raised():
  calls = []

  def flaky(prompt, completion):
    calls.append(completion)
    return float("nan")

  token_fn = jax.jit(rewards.token_reward(flaky, TOKENIZER))
  args = rewards.encode_pairs(TOKENIZER, PROMPTS, COMPLETIONS, T)
  with pytest.raises(RewardError, match="'flaky' returned nan for prompt 'ab'"):
    with rewards.reward_errors():
      for _ in range(3):
        out = jax.block_until_ready(token_fn(*args))
  assert calls == ["ba"]
  np.testing.assert_array_equal(out, 0.0)


def test_search_finds_a_planted_python_reward(tiny_params, tiny_config, sort_task):
  tokenizer = sort_task.tokenizer
  texts = sort_task.sample(np.random.default_rng(0), 4)
  batch = prompts_lib.encode_batch(tokenizer, texts, sort_task.prompt_len)
  allowed = jnp.asarray(answer_mask(tokenizer, tokenizer.vocab_size))
  max_new_tokens = 1  # every child is terminal: its reward is what the search must find.
  state = episode_lib.start(tiny_params, tiny_config, batch.tokens, batch.lengths,
                            max_new_tokens)
  prior = jax.nn.softmax(episode_lib.mask_logits(state.logits, allowed))
  # The prior's least likely digit, the same for every row, is the only first token that pays.
  planted = int(jnp.argmin(jnp.where(allowed[None, 3:], prior[:, 3:], 1.0).max(0))) + 3
  planted_char = tokenizer.decode([planted])
  calls = []

  def starts_with_planted(prompt, completion):
    calls.append(completion)
    return float(completion.startswith(planted_char))

  reward_fn = rewards.token_reward(starts_with_planted, tokenizer)
  search_config = SearchConfig(num_simulations=24, top_k=tokenizer.vocab_size,
                               max_num_considered_actions=16)

  @jax.jit
  def search(params, key):
    start = episode_lib.start(params, tiny_config, batch.tokens, batch.lengths, max_new_tokens)
    return search_lib.run_search(params, tiny_config, search_config, start, key,
                                 reward_fn=reward_fn, allowed=allowed,
                                 eos_id=tokenizer.eos_id)

  out = jax.block_until_ready(search(tiny_params, jax.random.key(0)))
  rewards.raise_pending()
  assert calls, "the Python reward never ran inside the search"
  slot = np.argmax(np.asarray(out.candidates) == planted, axis=1)
  planted_weight = np.asarray(out.action_weights)[np.arange(4), slot]
  planted_prior = np.asarray(prior)[:, planted]
  assert np.all(planted_prior < 1 / 10), planted_prior
  assert np.all(planted_weight > 0.5), planted_weight
  np.testing.assert_array_equal(out.token, planted)


def _counting_callbacks(monkeypatch):
  """Counts the host crossings of every `jax.pure_callback` traced from here on."""
  crossings = []
  real = jax.pure_callback

  def counting(callback, *args, **kwargs):
    def counted(*values):
      crossings.append(1)
      return callback(*values)
    return real(counted, *args, **kwargs)

  monkeypatch.setattr(jax, "pure_callback", counting)
  return crossings


def test_no_host_call_when_no_row_ended(monkeypatch):
  crossings = _counting_callbacks(monkeypatch)
  calls = []

  @tokenzero.batched_reward
  def spy(prompts, completions):
    calls.append(list(completions))
    return [1.0] * len(completions)

  token_fn = jax.jit(rewards.token_reward(spy, TOKENIZER))
  prompt, prompt_len, completion, completion_len = rewards.encode_pairs(
      TOKENIZER, PROMPTS, COMPLETIONS, T)
  unfinished = completion_len - 1  # every row one token short of its EOS
  np.testing.assert_array_equal(token_fn(prompt, prompt_len, completion, unfinished), 0.0)
  assert crossings == [] and calls == []
  np.testing.assert_array_equal(token_fn(prompt, prompt_len, completion, completion_len), 1.0)
  assert len(crossings) == 1 and calls == [COMPLETIONS]


def test_skipping_idle_host_calls_changes_no_value(monkeypatch):
  """Batches as a search's simulations make them (answers cut at every length, a few ended):
  with the skip, the same values and the same reward calls, and a host crossing only for the
  batches where some answer ended."""
  crossings = _counting_callbacks(monkeypatch)
  rng = np.random.default_rng(0)
  prompt, prompt_len, completion, completion_len = rewards.encode_pairs(
      TOKENIZER, PROMPTS * 4, COMPLETIONS * 4, T)
  # [B] lengths; in every other batch no answer has ended (each is short of its EOS).
  batches = [rng.integers(0, completion_len + i % 2) for i in range(40)]
  runs = {}
  for skip_idle in (True, False):
    calls = []

    def score_batch(prompts, completions, calls=calls):
      calls.append(list(zip(prompts, completions)))
      return [len(c) + 0.5 * len(p) for p, c in zip(prompts, completions)]

    token_fn = jax.jit(rewards.host_token_reward("spy", score_batch, TOKENIZER,
                                                 skip_idle=skip_idle))
    del crossings[:]
    values = [np.asarray(token_fn(prompt, prompt_len, completion, lengths))
              for lengths in batches]
    runs[skip_idle] = values, calls, len(crossings)
  (skipped, skipped_calls, skipped_crossings), (full, full_calls, full_crossings) = (
      runs[True], runs[False])
  np.testing.assert_array_equal(skipped, full)
  assert skipped_calls == full_calls and full_crossings == len(batches)
  some_ended = sum(bool(np.asarray(rewards.ended_rows(completion, lengths, TOKENIZER.eos_id))
                        .any()) for lengths in batches)
  assert skipped_crossings == some_ended == len(skipped_calls) <= len(batches) // 2
