"""Evaluation of the raw policy: greedy decoding (no search) on held-out prompts."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from tokenzero import decoders
from tokenzero import mesh as mesh_lib
from tokenzero.config import ModelConfig
from tokenzero.rewards import TokenReward


class EvalResult(NamedTuple):
  reward: jax.Array  # [B]
  success: jax.Array  # [B] bool
  completion: jax.Array  # [B, T]
  completion_len: jax.Array  # [B]


@functools.partial(jax.jit, static_argnames=("reward_fn",))
def _score(prompt, prompt_len, gen: decoders.Generation, success_threshold, *, reward_fn):
  reward = reward_fn(prompt, prompt_len, gen.completion, gen.completion_len)
  return reward, reward >= success_threshold


def evaluate_greedy(params, prompt, prompt_len, allowed, *, config: ModelConfig,
                    reward_fn: TokenReward, max_new_tokens: int, eos_id: int,
                    success_threshold: float = 1.0,
                    mesh: mesh_lib.DeviceMesh | None = None) -> EvalResult:
  """Greedy completions of prompts [B, P], scored by `reward_fn`.

  `mesh`: the prompts are split over its data devices, padded with copies of the last one to a
  multiple of them (any B goes), and the results, padding dropped, come back as numpy arrays.
  """
  rows = prompt.shape[0]
  if mesh is not None:
    prompt, prompt_len = mesh.place_batch(mesh_lib.pad_rows((prompt, prompt_len),
                                                            mesh.padded(rows)))
  gen = decoders.generate(params, prompt, prompt_len, jax.random.key(0), allowed, config=config,
                          sampler=decoders.Greedy(), max_new_tokens=max_new_tokens,
                          eos_id=eos_id)
  reward, success = _score(prompt, prompt_len, gen, jnp.float32(success_threshold),
                           reward_fn=reward_fn)
  result = EvalResult(reward, success, gen.completion, gen.completion_len)
  if mesh is None:
    return result
  return EvalResult(*(x[:rows] for x in mesh_lib.to_host(tuple(result))))
