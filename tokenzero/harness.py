"""Matched-compute evaluation: every decoding method at every budget, on the same prompts.

A budget b is nominally b forward token-evaluations per generated token, so best-of-b, beam-b and
tree search with b simulations (b-1 without tree reuse) are set up on equal terms (see
`decoders`); what each one then ran is measured: the decoders count the forwards they run and the completions they hand to the
reward, and the sweep times them (compilation excluded). `sweep` runs a list of methods over a
list of budgets and returns one `report.Row` per (method, budget); `report.save_json`,
`plots.reward_vs_compute` and `report.markdown_table` turn rows into the JSON, the reward vs
measured compute and wall-clock pictures and a table. Methods whose cost is fixed at one
forward per token (greedy and the samplers) run once, at budget 1.

The harness takes (params, model config, prompts, reward) and nothing else, so a run directory,
a checkpoint or a pretrained model all feed it the same way.
Dimension letters: B batch (prompts decoded together), P prompt slots.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tokenzero import compiles as compiles_lib
from tokenzero import config as config_lib
from tokenzero import decoders
from tokenzero import prompts as prompts_lib
from tokenzero import rewards as rewards_lib
from tokenzero.config import ModelConfig
from tokenzero.decoders import MethodOptions
from tokenzero.methods import FIXED_COST_METHODS, METHODS, VERIFIER_METHODS
from tokenzero.progress import progress_bar
from tokenzero.report import Row
from tokenzero.rewards import TokenReward
from tokenzero.run import load_run
from tokenzero.tasks import Task, task_token_reward
from tokenzero.tokenizer import answer_mask


def clustered_stderr(x: np.ndarray, clusters: np.ndarray) -> float:
  """Standard error of `x.mean()` (x [B]) with the rows of one cluster (clusters [B], e.g. one
  prompt drawn again) not independent: the cluster-robust (CR1) estimate, which is the usual
  `std(ddof=1) / sqrt(B)` when every cluster has one row. 0 with fewer than two clusters."""
  labels, cluster = np.unique(clusters, return_inverse=True)
  num_clusters = len(labels)
  if num_clusters < 2:
    return 0.0
  sums = np.bincount(cluster.reshape(-1), weights=x - x.mean(), minlength=num_clusters)
  variance = num_clusters / (num_clusters - 1) * np.sum(sums**2) / len(x)**2
  return float(np.sqrt(variance))


def prompt_ids(prompts: prompts_lib.PromptBatch) -> np.ndarray:
  """One id per distinct prompt (tokens [B, P], lengths [B]) -> [B]: a prompt drawn twice has
  one id, so repeated draws are one cluster of the standard errors."""
  rows = np.concatenate([np.asarray(prompts.lengths)[:, None], np.asarray(prompts.tokens)], 1)
  return np.unique(rows, axis=0, return_inverse=True)[1].reshape(-1)


def _jobs(methods: Sequence[str], budgets: Sequence[int]) -> list[tuple[str, int]]:
  jobs = []
  for method in methods:
    if method not in METHODS:
      raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    for budget in ([1] if method in FIXED_COST_METHODS else budgets):
      jobs.append((method, budget))
  return jobs


def _chunks(tokens: np.ndarray, lengths: np.ndarray, batch_size: int):
  """Equal-size batches (the last padded with copies of the first prompt, so that one compiled
  program serves them all) -> list of (tokens, lengths, real rows)."""
  total = len(tokens)
  out = []
  for start in range(0, total, batch_size):
    rows = np.arange(start, start + batch_size)
    real = int(np.sum(rows < total))
    rows = np.where(rows < total, rows, 0)
    out.append((jnp.asarray(tokens[rows]), jnp.asarray(lengths[rows]), real))
  return out


def sweep(params, config: ModelConfig, prompts: prompts_lib.PromptBatch, *,
          reward_fn: TokenReward, max_new_tokens: int, eos_id: int, allowed: jax.Array,
          methods: Sequence[str], budgets: Sequence[int],
          options: MethodOptions = MethodOptions(), success_threshold: float = 1.0,
          batch_size: int = 64, seed: int = 0, progress: bool = True) -> list[Row]:
  """Runs every method at every budget on `prompts` (tokens [B, P], lengths [B]), `batch_size`
  prompts at a time."""
  tokens, lengths = np.asarray(prompts.tokens), np.asarray(prompts.lengths)
  if len(tokens) == 0:
    raise ValueError("no prompts to evaluate")
  jobs = _jobs(methods, budgets)
  ids = prompt_ids(prompts)
  chunks = _chunks(tokens, lengths, min(batch_size, len(tokens)))
  score = jax.jit(reward_fn)
  rows = []
  with progress_bar("eval", enabled=progress, to_stderr=True) as bar:
    task_id = bar.add_task("", total=len(jobs) * len(chunks), status="")
    for method, budget in jobs:
      decoder = decoders.make_decoder(method, budget, options)
      bar.update(task_id, description=f"{method} b={budget}")
      statics = dict(decoder=decoder, config=config, max_new_tokens=max_new_tokens,
                     eos_id=eos_id, reward_fn=reward_fn)
      counter = compiles_lib.Counter()
      start = time.perf_counter()
      first_tokens, first_lengths, _ = chunks[0]
      compiled = decoders.decode.lower(params, first_tokens, first_lengths, jax.random.key(0),
                                       allowed, **statics).compile()
      compile_s = time.perf_counter() - start
      rewards, spent, scored, answer_tokens, wall_s, first_compiles = [], [], [], [], 0.0, 0
      for index, (chunk_tokens, chunk_lengths, real) in enumerate(chunks):
        # Same keys for every method: common random numbers make the comparison sharper.
        rng = jax.random.fold_in(jax.random.key(seed), index)
        # A Python reward that fails inside a callback is raised here, not returned as zeros.
        with rewards_lib.reward_errors():
          start = time.perf_counter()
          out = jax.block_until_ready(compiled(params, chunk_tokens, chunk_lengths, rng,
                                               allowed))
          wall_s += time.perf_counter() - start
          reward = jax.block_until_ready(
              score(chunk_tokens, chunk_lengths, out.completion, out.completion_len))
        rewards.append(np.asarray(reward)[:real])
        spent.append(np.asarray(out.forward_tokens)[:real])
        scored.append(np.asarray(out.reward_calls)[:real])
        answer_tokens.append(np.asarray(out.completion_len)[:real])
        if index == 0:
          first_compiles = counter.lap()
        bar.advance(task_id)
      # Every batch has the first one's shapes (`_chunks`): any compilation after it is a bug.
      recompiles = counter.lap()
      reward = np.concatenate(rewards).astype(np.float64)
      success = (reward >= success_threshold).astype(np.float64)
      spent_total = float(np.concatenate(spent).sum())
      num_prompts = len(reward)
      rows.append(Row(
          method=method, budget=budget, mean_reward=float(reward.mean()),
          stderr=clustered_stderr(reward, ids), success_rate=float(success.mean()),
          success_stderr=clustered_stderr(success, ids),
          forward_tokens_per_token=spent_total / max(float(np.concatenate(answer_tokens).sum()),
                                                     1.0),
          forward_tokens_per_answer=spent_total / num_prompts,
          reward_calls_per_answer=float(np.concatenate(scored).sum()) / num_prompts,
          uses_verifier=method in VERIFIER_METHODS, wall_s=wall_s,
          wall_s_per_answer=wall_s / num_prompts, compile_s=compile_s, num_prompts=num_prompts,
          decoder=repr(decoder), distinct_prompts=len(np.unique(ids)),
          compiles=first_compiles + recompiles, recompiles=recompiles))
  return rows


def sweep_task(params, config: ModelConfig, task: Task, *, num_prompts: int, prompt_seed: int = 0,
               split: str = prompts_lib.HASH_SPLIT, max_new_tokens: int = 0,
               reward_fn: TokenReward | None = None, allowed: jax.Array | None = None,
               **kwargs) -> list[Row]:
  """`sweep` on a task's held-out prompts (a run's evaluation set for `prompt_seed` and its
  `eval.split`), scored by the task's reward unless `reward_fn` is given. Other keywords go to
  `sweep`."""
  texts = prompts_lib.eval_texts(task, prompt_seed, num_prompts, split=split)
  batch = prompts_lib.encode_batch(task.tokenizer, texts, task.prompt_len)
  if allowed is None:
    allowed = jnp.asarray(answer_mask(task.tokenizer, config.vocab_size))
  return sweep(params, config, batch, reward_fn=reward_fn or task_token_reward(task),
               max_new_tokens=max_new_tokens or task.max_new_tokens,
               eos_id=task.tokenizer.eos_id, allowed=allowed, **kwargs)


def evaluate_run(run_dir: str | Path, *, methods: Sequence[str], budgets: Sequence[int],
                 num_prompts: int | None = None, iteration: int | None = None,
                 search_noise: bool = False, **kwargs) -> tuple[list[Row], dict[str, Any]]:
  """Sweeps a training run's newest (or given) checkpoint on the run's own evaluation prompts,
  task, reward, answer budget and search settings (without their root noise unless
  `search_noise`) -> (rows, meta for `report.save_json`)."""

  setup, params = load_run(run_dir, iteration)
  run = setup.config
  num_prompts = num_prompts or run.eval.num_prompts
  options = kwargs.pop("options", None) or MethodOptions(search=run.search,
                                                        search_noise=search_noise)
  rows = sweep_task(params, run.model, setup.task, num_prompts=num_prompts,
                    prompt_seed=run.seed, split=run.eval.split,
                    max_new_tokens=setup.max_new_tokens,
                    reward_fn=setup.reward_fn, allowed=setup.allowed, methods=methods,
                    budgets=budgets, options=options,
                    success_threshold=run.task.success_threshold, **kwargs)
  meta = {"run_dir": str(run_dir), "iteration": iteration, "task": run.task.name,
          "task_params": dict(run.task.params), "max_new_tokens": setup.max_new_tokens,
          "num_prompts": num_prompts, "eval_split": run.eval.split, "methods": list(methods),
          "budgets": list(budgets),
          "options": config_lib.to_dict(options), "model": config_lib.to_dict(run.model),
          "device": jax.devices()[0].device_kind}
  return rows, meta
