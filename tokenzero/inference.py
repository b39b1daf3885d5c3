"""One prompt in, one completion out, with any decoder: what `tokenzero decode` runs.

`load_policy` reads either an HF model directory (`hf.load` + its `tokenizer.json`) or a
training run directory (its newest checkpoint, task tokenizer, reward and answer budget) into a
`Policy`; `complete` decodes a prompt with a decoding method at a budget and scores every
generated token under the model.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tokenzero import decoders
from tokenzero import model as model_lib
from tokenzero import run as run_lib
from tokenzero.config import ModelConfig, SearchConfig
from tokenzero.methods import VERIFIER_METHODS
from tokenzero.rewards import TokenReward
from tokenzero.tokenizer import Tokenizer, answer_mask, encode_prompts

DEFAULT_MAX_NEW_TOKENS = 32  # an HF model has no task to say how long an answer is.


@dataclasses.dataclass(frozen=True)
class Policy:
  """A model with what decoding it needs."""
  config: ModelConfig
  params: optax.Params
  tokenizer: Tokenizer
  allowed: jax.Array  # [V] bool: tokens an answer may use
  reward_fn: TokenReward | None  # the run's reward; None for an HF model
  max_new_tokens: int  # default answer budget
  search: SearchConfig  # the run's search settings (defaults for an HF model)
  source: str  # "hf" or "run"


def load_policy(path, *, dtype: str = "float32") -> Policy:
  """An HF model directory or a training run directory -> `Policy`."""
  model = run_lib.load_model(path, dtype=dtype)
  if model.setup is None:
    return Policy(model.config, model.params, model.tokenizer,
                  jnp.asarray(answer_mask(model.tokenizer, model.config.vocab_size)), None,
                  DEFAULT_MAX_NEW_TOKENS, SearchConfig(), model.source)
  setup = model.setup
  return Policy(model.config, model.params, model.tokenizer, setup.allowed, setup.reward_fn,
                setup.max_new_tokens, setup.config.search, model.source)


def encode_prompt(policy: Policy, text: str) -> list[int]:
  """A prompt as training encodes it (SEP appended where the tokenizer has one; an HF tokenizer
  adds BOS where `transformers` would)."""
  ids = encode_prompts(policy.tokenizer, [text])[0]
  if not ids:
    raise ValueError("the prompt is empty")
  return ids


@dataclasses.dataclass(frozen=True)
class Completion:
  prompt_token_ids: list[int]
  token_ids: list[int]  # the completion, EOS included when it ended with one
  text: str  # decoded completion (EOS and special tokens dropped)
  logprobs: list[float]  # log-probability of each completion token under the model
  score: float  # what the decoder ranked its pick by
  forward_tokens: int  # forward token-evaluations the decoder spent


def token_logprobs(params, config: ModelConfig, prompt_ids: Sequence[int],
                   completion_ids: Sequence[int]) -> list[float]:
  """log p(completion token t | prompt, tokens < t) under the model (full vocabulary)."""
  if not completion_ids:
    return []
  tokens = jnp.asarray([list(prompt_ids) + list(completion_ids)], jnp.int32)
  logits = model_lib.forward(params, config, tokens).logits[0]
  start = len(prompt_ids) - 1
  logprobs = jax.nn.log_softmax(logits[start:start + len(completion_ids)], axis=-1)
  picked = jnp.take_along_axis(logprobs, jnp.asarray(completion_ids)[:, None], axis=1)[:, 0]
  return [float(x) for x in np.asarray(picked)]


def complete(policy: Policy, prompt_ids: Sequence[int], *, method: str = "greedy",
             budget: int = 1, max_new_tokens: int = 0, seed: int = 0,
             reward_fn: TokenReward | None = None,
             options: decoders.MethodOptions | None = None) -> Completion:
  """Decodes one prompt with `decoders.make_decoder(method, budget)`.

  The reward is `reward_fn`, else the run's. A method that calls it (`methods.VERIFIER_METHODS`)
  is refused without one, as an HF model has none: a stand-in reward would rank nothing.
  """
  prompt_ids = [int(i) for i in prompt_ids]
  vocab = policy.config.vocab_size
  bad = [i for i in prompt_ids if not 0 <= i < vocab]
  if bad or not prompt_ids:
    raise ValueError(f"prompt token ids must be 1+ ids in [0, {vocab}); got {bad or 'none'}")
  max_new_tokens = max_new_tokens or policy.max_new_tokens
  if len(prompt_ids) + max_new_tokens > policy.config.context:
    raise ValueError(f"prompt ({len(prompt_ids)}) + max_new_tokens ({max_new_tokens}) exceed "
                     f"the model's context ({policy.config.context})")
  options = options or decoders.MethodOptions(search=policy.search)
  decoder = decoders.make_decoder(method, budget, options)
  reward_fn = reward_fn or policy.reward_fn
  if reward_fn is None and method in VERIFIER_METHODS:
    raise ValueError(f"method {method!r} ranks answers by a reward: give --reward "
                     "FILE.py:FUNCTION, or use mcts_value / best_of_n_value, which use the value "
                     "head only")
  out = decoders.decode(policy.params, jnp.asarray([prompt_ids], jnp.int32),
                        jnp.asarray([len(prompt_ids)], jnp.int32), jax.random.key(seed),
                        policy.allowed, decoder=decoder, config=policy.config,
                        max_new_tokens=max_new_tokens, eos_id=policy.tokenizer.eos_id,
                        reward_fn=reward_fn)
  length = int(out.completion_len[0])
  token_ids = [int(t) for t in np.asarray(out.completion[0, :length])]
  return Completion(
      prompt_token_ids=prompt_ids,
      token_ids=token_ids,
      text=policy.tokenizer.decode(token_ids),
      logprobs=token_logprobs(policy.params, policy.config, prompt_ids, token_ids),
      score=float(out.score[0]),
      forward_tokens=int(out.forward_tokens[0]))
