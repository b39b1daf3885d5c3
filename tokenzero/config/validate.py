"""Checks of a config before anything compiles: impossible values, and the model fitted to the
task (vocabulary from the tokenizer, context from the prompt and answer lengths, bounded)."""

from __future__ import annotations

import dataclasses

from tokenzero.config.schema import RunConfig
from tokenzero.errors import ConfigError

# `model.context=0` sizes the context to the longest prompt plus the answer, up to this. Past it a
# prompt is far longer than a from-scratch run expects (attention memory grows with its square),
# so the user must say so by setting model.context.
MAX_AUTO_CONTEXT = 512
_SHOW = 60  # characters of a prompt quoted in an error.


def validate(config: RunConfig) -> None:
  """Impossible values, each a `ConfigError` naming the key."""
  checks = [
      (config.iterations >= 0, "iterations must be >= 0"),
      (config.minutes >= 0, "minutes must be >= 0"),
      (config.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
      (config.keep_checkpoints >= 1, "keep_checkpoints must be >= 1"),
      (config.model.num_layers >= 1, "model.num_layers must be >= 1"),
      (config.model.d_model % config.model.num_heads == 0 or config.model.head_dim > 0,
       "model.d_model must be divisible by model.num_heads"),
      (config.model.num_heads % config.model.kv_heads == 0,
       "model.num_heads must be a multiple of model.num_kv_heads"),
      (config.search.num_simulations >= 1, "search.num_simulations must be >= 1"),
      (config.search.top_k >= 0, "search.top_k must be >= 0 (0: 16, or the vocabulary when "
       "smaller)"),
      (config.search.max_depth >= 0, "search.max_depth must be >= 0"),
      (config.search.max_nodes == 0 or config.search.max_nodes >= 2,
       "search.max_nodes must be 0 (num_simulations + 1) or >= 2"),
      (config.search.select in ("visits", "best_terminal"),
       f"search.select must be 'visits' or 'best_terminal', got {config.search.select!r}"),
      (config.search.terminal_reselect >= 0, "search.terminal_reselect must be >= 0"),
      (config.search.allocation in ("uniform", "adaptive"),
       f"search.allocation must be 'uniform' or 'adaptive', got {config.search.allocation!r}"),
      (0 < config.search.settled_weight <= 1, "search.settled_weight must be in (0, 1]"),
      (config.search.algorithm in ("gumbel", "puct"),
       f"search.algorithm must be 'gumbel' or 'puct', got {config.search.algorithm!r}"),
      (config.selfplay.batch_size >= 1, "selfplay.batch_size must be >= 1"),
      (config.selfplay.temperature >= 0,
       f"selfplay.temperature must be >= 0, got {config.selfplay.temperature}"),
      (config.selfplay.final_temperature >= 0,
       f"selfplay.final_temperature must be >= 0, got {config.selfplay.final_temperature}"),
      (0.0 <= config.selfplay.random_action_prob <= 1.0,
       "selfplay.random_action_prob must be in [0, 1]"),
      (config.selfplay.action_selection in ("sample", "search"),
       "selfplay.action_selection must be 'sample' or 'search'"),
      (config.selfplay.policy_target in ("improved", "visits"),
       f"selfplay.policy_target must be 'improved' or 'visits', got "
       f"{config.selfplay.policy_target!r}"),
      (config.selfplay.value_target in ("return", "lambda"),
       f"selfplay.value_target must be 'return' or 'lambda', got "
       f"{config.selfplay.value_target!r}"),
      (0.0 <= config.selfplay.td_lambda <= 1.0,
       f"selfplay.td_lambda must be in [0, 1], got {config.selfplay.td_lambda}"),
      (config.optim.learning_rate > 0, "optim.learning_rate must be > 0"),
      (config.optim.steps_per_iteration >= 1, "optim.steps_per_iteration must be >= 1"),
      (config.optim.max_nonfinite_updates >= 1, "optim.max_nonfinite_updates must be >= 1"),
      (config.optim.anchor_weight >= 0, "optim.anchor_weight must be >= 0"),
      (config.optim.anchor_weight == 0 or bool(config.optim.anchor_data),
       "optim.anchor_weight > 0 needs optim.anchor_data (a JSONL file of "
       "{\"prompt\", \"completion\"} demonstrations)"),
      (config.optim.anchor_batch_size >= 0, "optim.anchor_batch_size must be >= 0"),
      (config.optim.kl_weight >= 0, "optim.kl_weight must be >= 0"),
      (config.optim.found_weight >= 0, "optim.found_weight must be >= 0"),
      (0 <= config.task.curriculum_threshold <= 1,
       "task.curriculum_threshold must be in [0, 1]"),
      (not config.task.curriculum or config.eval.split == "hash",
       "task.curriculum=true needs eval.split='hash' (the legacy split holds out exact texts, "
       "which can be every prompt of a small size)"),
      (config.task.curriculum_start >= 0,
       "task.curriculum_start must be >= 0 (0: the task's smallest size)"),
      (config.replay.capacity == 0 or config.replay.capacity >= config.selfplay.batch_size,
       f"replay.capacity={config.replay.capacity} must be 0 (off) or at least "
       f"selfplay.batch_size={config.selfplay.batch_size} (one iteration's trajectories)"),
      (config.replay.sample_old >= 0, "replay.sample_old must be >= 0 (0: selfplay.batch_size)"),
      (config.eval.num_prompts >= 1, "eval.num_prompts must be >= 1"),
      (config.eval.every >= 1, "eval.every must be >= 1"),
      (config.eval.split in ("hash", "legacy"),
       f"eval.split must be 'hash' or 'legacy', got {config.eval.split!r}"),
      (config.model.dtype in ("float32", "bfloat16"), "model.dtype must be float32 or bfloat16"),
  ]
  for ok, message in checks:
    if not ok:
      raise ConfigError(message)


def _quote(text: str) -> str:
  return repr(text if len(text) <= _SHOW else text[:_SHOW] + "...")


def fit_model_to_task(config: RunConfig, *, vocab_size: int, prompt_len: int,
                      max_new_tokens: int, longest_prompt: str | None = None,
                      padded_vocab_ok: bool = False) -> RunConfig:
  """`config` with model.vocab_size and model.context filled in from the task, checked.

  `vocab_size`: the tokenizer's; `prompt_len`: the task's most prompt tokens (SEP included);
  `longest_prompt`: its text, when the task knows it, for the errors; `padded_vocab_ok`: a
  pretrained checkpoint's embedding may be padded past its tokenizer (Qwen2).
  """
  model = config.model
  if model.vocab_size and model.vocab_size != vocab_size and not (
      padded_vocab_ok and model.vocab_size > vocab_size):
    raise ConfigError(f"model.vocab_size={model.vocab_size} but the task's tokenizer has "
                      f"{vocab_size} tokens; leave it 0 to take the tokenizer's")
  needed = prompt_len + max_new_tokens
  which = (f"the longest prompt, {_quote(longest_prompt)} ({prompt_len} tokens with SEP)"
           if longest_prompt is not None else f"the longest prompt ({prompt_len} tokens)")
  if model.context and model.context < needed:
    raise ConfigError(f"model.context={model.context} is shorter than {which} plus the "
                      f"{max_new_tokens}-token answer: set model.context={needed} or more")
  if not model.context and needed > MAX_AUTO_CONTEXT:
    raise ConfigError(f"{which} needs model.context={needed} with the {max_new_tokens}-token "
                      f"answer, over the {MAX_AUTO_CONTEXT} tokens sized automatically: set "
                      f"model.context={needed} to train on it anyway (memory grows with it), "
                      "or shorten the prompt")
  if config.search.top_k > vocab_size:
    raise ConfigError(f"search.top_k={config.search.top_k} is larger than the vocabulary "
                      f"({vocab_size} tokens): give at most {vocab_size}, "
                      "or 0 for 16 candidates (the whole vocabulary when smaller)")
  model = dataclasses.replace(model, vocab_size=model.vocab_size or vocab_size,
                              context=model.context or needed)
  config = dataclasses.replace(config, model=model)
  validate(config)
  return config
