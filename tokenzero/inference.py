"""One prompt in, one completion out, with any decoder: what `tokenzero decode` runs.

`load_policy` reads either an HF model directory (`hf.load` + its `tokenizer.json`) or a
training run directory (its newest checkpoint, task tokenizer, reward and answer budget) into a
`Policy`; `complete` decodes a prompt (`complete_batch` several together, and measures what that
cost: `DecodeStats`, with the search tree's memory for tree methods) with a decoding method at a
budget and scores every generated token under the model.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tokenzero import decoders
from tokenzero import episode as episode_lib
from tokenzero import model as model_lib
from tokenzero import run as run_lib
from tokenzero import search as search_lib
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
  return batch_logprobs(params, config, [prompt_ids], [completion_ids])[0]


def batch_logprobs(params, config: ModelConfig, prompts: Sequence[Sequence[int]],
                   completions: Sequence[Sequence[int]]) -> list[list[float]]:
  """`token_logprobs` of several (prompt, completion) pairs in one forward: each row is its
  prompt then its completion, right-padded (a causal model's positions before the padding do
  not see it), so one compilation serves the batch."""
  if not any(completions):
    return [[] for _ in completions]
  width = max(len(p) + len(c) for p, c in zip(prompts, completions))
  tokens = np.zeros((len(prompts), width), np.int32)
  for row, (prompt_ids, completion_ids) in enumerate(zip(prompts, completions)):
    seq = list(prompt_ids) + list(completion_ids)
    tokens[row, :len(seq)] = seq
  logprobs = jax.nn.log_softmax(model_lib.forward(params, config, jnp.asarray(tokens)).logits,
                                axis=-1)
  # Position i predicts token i + 1.
  picked = np.asarray(jnp.take_along_axis(logprobs[:, :-1], jnp.asarray(tokens)[:, 1:, None],
                                          axis=2)[:, :, 0])
  return [[float(x) for x in picked[row, len(p) - 1:len(p) - 1 + len(c)]]
          for row, (p, c) in enumerate(zip(prompts, completions))]


def _check_prompt(policy: Policy, prompt_ids: Sequence[int], max_new_tokens: int) -> list[int]:
  prompt_ids = [int(i) for i in prompt_ids]
  vocab = policy.config.vocab_size
  bad = [i for i in prompt_ids if not 0 <= i < vocab]
  if bad or not prompt_ids:
    raise ValueError(f"prompt token ids must be 1+ ids in [0, {vocab}); got {bad or 'none'}")
  if len(prompt_ids) + max_new_tokens > policy.config.context:
    raise ValueError(f"prompt ({len(prompt_ids)}) + max_new_tokens ({max_new_tokens}) exceed "
                     f"the model's context ({policy.config.context})")
  return prompt_ids


@dataclasses.dataclass(frozen=True)
class DecodeStats:
  """What one batched decode cost, measured (`complete_batch`)."""
  batch: int  # prompts decoded together
  max_new_tokens: int
  compile_s: float  # tracing and compiling the decoder (not in decode_s)
  decode_s: float  # wall-clock of the compiled decode, until its results are ready
  forward_tokens: int  # forward token-evaluations run, all rows (`Decoded.forward_tokens`)
  reward_calls: int  # completions handed to the reward, all rows
  num_simulations: int  # tree methods: simulations per token (0 otherwise)
  tree_nodes: int  # tree methods: nodes of the search's arena per row (0 otherwise)
  tree_bytes: int  # tree methods: bytes of the arena, all rows (0 otherwise)

  @property
  def forward_tokens_per_s(self) -> float:
    return self.forward_tokens / self.decode_s if self.decode_s > 0 else 0.0


def search_arena(policy: Policy, search_config: SearchConfig, *, batch: int, prompt_slots: int,
                 max_new_tokens: int) -> tuple[int, int]:
  """(nodes per row, bytes of all rows) of the tree a search decoder carries over an answer,
  from the shapes of its arrays (`jax.eval_shape`: nothing is allocated or run): an arena of
  `search.num_nodes` nodes, each with its statistics, candidates, path and one token's KV."""
  def arena(params, prompt, prompt_len):
    state = episode_lib.start(params, policy.config, prompt, prompt_len, max_new_tokens)
    return search_lib.no_kept_tree(policy.config, search_config, state)

  shapes = jax.eval_shape(arena, policy.params,
                          jax.ShapeDtypeStruct((batch, prompt_slots), jnp.int32),
                          jax.ShapeDtypeStruct((batch,), jnp.int32))
  total = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(shapes))
  return int(shapes.tree.node_visits.shape[1]), int(total)


def complete_batch(policy: Policy, prompts: Sequence[Sequence[int]], *, method: str = "greedy",
                   budget: int = 1, max_new_tokens: int = 0, seed: int = 0,
                   reward_fn: TokenReward | None = None,
                   options: decoders.MethodOptions | None = None,
                   ) -> tuple[list[Completion], DecodeStats]:
  """Decodes prompts together (right-padded to the longest) with
  `decoders.make_decoder(method, budget)`; also returns what it cost (`DecodeStats`).

  The reward is `reward_fn`, else the run's. A method that calls it (`methods.VERIFIER_METHODS`)
  is refused without one, as an HF model has none: a stand-in reward would rank nothing.
  The decoder is compiled ahead of time, so that `decode_s` times the decode alone.
  """
  max_new_tokens = max_new_tokens or policy.max_new_tokens
  if not prompts:
    raise ValueError("no prompts to decode")
  prompts = [_check_prompt(policy, ids, max_new_tokens) for ids in prompts]
  options = options or decoders.MethodOptions(search=policy.search)
  decoder = decoders.make_decoder(method, budget, options)
  reward_fn = reward_fn or policy.reward_fn
  if reward_fn is None and method in VERIFIER_METHODS:
    raise ValueError(f"method {method!r} ranks answers by a reward: give --reward "
                     "FILE.py:FUNCTION, or use mcts_value / best_of_n_value, which use the value "
                     "head only")
  slots = max(len(ids) for ids in prompts)
  prompt = np.full((len(prompts), slots), policy.tokenizer.pad_id, np.int32)
  for row, ids in enumerate(prompts):
    prompt[row, :len(ids)] = ids
  prompt_len = np.asarray([len(ids) for ids in prompts], np.int32)
  args = (policy.params, jnp.asarray(prompt), jnp.asarray(prompt_len), jax.random.key(seed),
          policy.allowed)
  static = dict(decoder=decoder, config=policy.config, max_new_tokens=max_new_tokens,
                eos_id=policy.tokenizer.eos_id, reward_fn=reward_fn)
  start = time.perf_counter()
  compiled = decoders.decode.lower(*args, **static).compile()
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  out = jax.block_until_ready(compiled(*args))
  decode_s = time.perf_counter() - start
  nodes = tree_bytes = simulations = 0
  if isinstance(decoder, decoders.TreeSearch):
    simulations = decoder.search.num_simulations
    nodes, tree_bytes = search_arena(policy, decoder.search, batch=len(prompts),
                                     prompt_slots=slots, max_new_tokens=max_new_tokens)
  stats = DecodeStats(batch=len(prompts), max_new_tokens=max_new_tokens, compile_s=compile_s,
                      decode_s=decode_s, forward_tokens=int(np.sum(out.forward_tokens)),
                      reward_calls=int(np.sum(out.reward_calls)), num_simulations=simulations,
                      tree_nodes=nodes, tree_bytes=tree_bytes)
  lengths = [int(n) for n in np.asarray(out.completion_len)]
  answers = [[int(t) for t in np.asarray(out.completion[row, :length])]
             for row, length in enumerate(lengths)]
  logprobs = batch_logprobs(policy.params, policy.config, prompts, answers)
  completions = [
      Completion(prompt_token_ids=prompt_ids, token_ids=token_ids,
                 text=policy.tokenizer.decode(token_ids), logprobs=row_logprobs,
                 score=float(out.score[row]), forward_tokens=int(out.forward_tokens[row]))
      for row, (prompt_ids, token_ids, row_logprobs) in enumerate(zip(prompts, answers,
                                                                       logprobs))]
  return completions, stats


def complete(policy: Policy, prompt_ids: Sequence[int], *, method: str = "greedy",
             budget: int = 1, max_new_tokens: int = 0, seed: int = 0,
             reward_fn: TokenReward | None = None,
             options: decoders.MethodOptions | None = None) -> Completion:
  """Decodes one prompt: `complete_batch` of one."""
  [completion], _ = complete_batch(policy, [prompt_ids], method=method, budget=budget,
                                   max_new_tokens=max_new_tokens, seed=seed,
                                   reward_fn=reward_fn, options=options)
  return completion
