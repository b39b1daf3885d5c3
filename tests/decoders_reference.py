"""What the decoder tests share: a tiny sharp model, two prompts, and references that recompute
with the full forward (no KV cache) in plain Python loops. Every decoder runs under the jitted
`decoders.decode`. The model is the `decoder_model` fixture of conftest.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from tokenzero import decoders, model
from tokenzero.config import ModelConfig

VOCAB, PAD, SEP, EOS = 8, 0, 1, 2
PROMPT = np.array([[3, 4, SEP, PAD], [5, 6, 7, SEP]], np.int32)  # [B, P]
PROMPT_LEN = np.array([3, 4], np.int32)
T = 3  # answer budget of most tests
ALLOWED = np.array([t not in (PAD, SEP) for t in range(VOCAB)])  # EOS may end an answer
NO_EOS = np.array([t not in (PAD, SEP, EOS) for t in range(VOCAB)])  # every answer is T long
# Token 6 forbidden: row 1's likeliest first token is then EOS, and its greedy answer ends at once.
EARLY = np.array([t not in (PAD, SEP, 6) for t in range(VOCAB)])


def make_model():
  """(params, config) of a one-layer model over VOCAB tokens."""
  config = ModelConfig(vocab_size=VOCAB, num_layers=1, num_heads=2, d_model=16, context=8)
  params = jax.jit(model.init_params, static_argnums=0)(config, jax.random.key(0))
  # Sharper than the init (so near-ties are rare) and a value head that is not all zeros.
  params = jax.tree.map(lambda x: x * 8 if x.ndim == 2 else x, params)
  head = params["value_head"]
  params["value_head"] = dict(head, kernel=jax.random.normal(jax.random.key(1),
                                                             head["kernel"].shape))
  return params, config


def run(tiny, decoder, *, allowed=ALLOWED, max_new_tokens=T, reward_fn=None, seed=0):
  params, config = tiny
  out = decoders.decode(params, jnp.asarray(PROMPT), jnp.asarray(PROMPT_LEN),
                        jax.random.key(seed), jnp.asarray(allowed), decoder=decoder,
                        config=config, max_new_tokens=max_new_tokens, eos_id=EOS,
                        reward_fn=reward_fn)
  return jax.tree.map(np.asarray, out)


@functools.partial(jax.jit, static_argnames="config")
def _full_forward(params, tokens, *, config):
  return model.forward(params, config, tokens)


def next_outputs(tiny, seq):
  """Full-forward (no cache) logits [V] and value after the token list `seq`."""
  params, config = tiny
  # Padded to the context so that one compiled forward serves every length; causal attention
  # keeps the padding out of position len(seq) - 1.
  tokens = np.zeros((1, config.context), np.int32)
  tokens[0, :len(seq)] = seq
  out = _full_forward(params, jnp.asarray(tokens), config=config)
  return (np.asarray(out.logits[0, len(seq) - 1], np.float64),
          float(out.value[0, len(seq) - 1]))


def log_softmax(logits, allowed):
  """The model's log-probabilities, forbidden tokens then ruled out (transformers' order)."""
  logprobs = logits - np.log(np.sum(np.exp(logits - logits.max()))) - logits.max()
  return np.where(allowed, logprobs, -np.inf)


def prompt_of(row):
  return [int(t) for t in PROMPT[row, :PROMPT_LEN[row]]]


def answer_of(out, row):
  return [int(t) for t in out.completion[row, :out.completion_len[row]]]


def first_token_reward(target):
  """Reward 1 when the answer starts with target[b]."""
  target = jnp.asarray(target)

  def reward(prompt, prompt_len, completion, completion_len):
    del prompt, prompt_len, completion_len
    return (completion[:, 0] == target).astype(jnp.float32)

  return reward


def digit_sum_reward(prompt, prompt_len, completion, completion_len):
  """A reward that depends on the whole answer (and differs between samples)."""
  del prompt, prompt_len
  steps = jnp.arange(completion.shape[1])[None, :]
  return jnp.sum(jnp.where(steps < completion_len[:, None], completion, 0), 1) / 20.0


def plant_values(tiny, planted):
  """(params, config) whose value head gives each token list of `planted` {tuple: value} that
  value. The head is linear in the last hidden state, which it does not change: probe that state
  with unit kernels, then solve for the kernel and bias (needs len(planted) <= model width + 1)."""
  params, config = tiny
  head = params["value_head"]
  width = head["kernel"].shape[0]
  seqs = list(planted)
  hidden = np.zeros((len(seqs), width))
  for i in range(width):
    kernel = np.zeros((width, 1), np.float32)
    kernel[i] = 1.0
    probe = dict(params, value_head=dict(kernel=jnp.asarray(kernel),
                                         bias=jnp.zeros_like(head["bias"])))
    hidden[:, i] = [next_outputs((probe, config), list(seq))[1] for seq in seqs]
  features = np.concatenate([hidden, np.ones((len(seqs), 1))], axis=1)
  solution = np.linalg.lstsq(features, np.array([planted[s] for s in seqs]), rcond=None)[0]
  value_head = dict(kernel=jnp.asarray(solution[:-1, None], jnp.float32),
                    bias=jnp.asarray(solution[-1:], jnp.float32))
  return dict(params, value_head=value_head), config
