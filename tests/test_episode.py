"""Episodes: `step` is one forward plus `append`, and finished rows never move."""

import jax
import jax.numpy as jnp
import numpy as np

from tokenzero import episode as episode_lib
from tokenzero import model as model_lib
from tokenzero import prompts


def _start(params, config, task, rows=3):
  texts = task.sample(np.random.default_rng(0), rows)
  batch = prompts.encode_batch(task.tokenizer, texts, task.prompt_len)
  return episode_lib.start(params, config, batch.tokens, batch.lengths, task.max_new_tokens)


def test_append_with_the_forwards_outputs_equals_step(tiny_params, tiny_config, sort_task):
  eos_id = sort_task.tokenizer.eos_id
  state = _start(tiny_params, tiny_config, sort_task)
  # One row already finished: neither path may touch it.
  state = state._replace(done=state.done.at[1].set(True))
  token = jnp.array([eos_id, 5, 6], jnp.int32)

  @jax.jit
  def both(params, state, token):
    stepped = episode_lib.step(params, tiny_config, state, token, eos_id)
    out, (k, v) = model_lib.extend(params, tiny_config, token, state.cache.length,
                                   [state.cache.as_source()])
    appended = episode_lib.append(state, token, out.logits, out.value, k, v, eos_id)
    return stepped, appended

  stepped, appended = both(tiny_params, state, token)
  jax.tree.map(np.testing.assert_array_equal, stepped, appended)
  np.testing.assert_array_equal(stepped.num_generated, [1, 0, 1])
  np.testing.assert_array_equal(stepped.done, [True, True, False])
  np.testing.assert_array_equal(stepped.cache.length, state.cache.length + np.array([1, 0, 1]))
  # The finished row is left exactly as it was, its cache included.
  finished = jax.tree.map(lambda x: x[1], stepped._replace(cache=None))
  jax.tree.map(np.testing.assert_array_equal, finished,
               jax.tree.map(lambda x: x[1], state._replace(cache=None)))
  np.testing.assert_array_equal(stepped.cache.k[:, 1], state.cache.k[:, 1])
