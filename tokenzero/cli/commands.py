"""The handlers of the `tokenzero` subcommands: each reads its arguments, calls the library and
prints what the user asked for. The library is imported inside each handler, when it runs, so
that `tokenzero --help` and argument errors never wait for JAX.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from tokenzero.errors import ConfigError, RewardError, UsageError


def _split_train_extras(extras: list[str]) -> tuple[str | None, list[str]]:
  """Positional extras of `train`: at most one CONFIG.toml, then KEY=VALUE overrides."""
  config_path, overrides = None, []
  for item in extras:
    if "=" in item and not item.startswith("-"):
      overrides.append(item)
    elif item.endswith(".toml") and config_path is None:
      config_path = item
    else:
      raise UsageError(f"unexpected argument {item!r}: give a CONFIG.toml, KEY=VALUE "
                       "overrides and the options of 'tokenzero train --help'")
  return config_path, overrides


def _train_flags(args) -> dict[str, Any]:
  """The typed config values that `train`'s own flags set (KEY=VALUE overrides come after)."""
  from tokenzero.tasks import prompt_task_values
  values: dict[str, Any] = {}
  if args.task is not None:
    if args.reward is not None:
      raise UsageError("--task and --reward exclude each other: --reward trains the 'prompts' "
                       "task on your prompts file")
    values["task.name"] = args.task
  values.update(prompt_task_values(reward=args.reward, prompts=args.prompts,
                                   eval_prompts=args.eval_prompts, alphabet=args.alphabet,
                                   tokenizer=args.tokenizer))
  if args.init_from is not None:
    values["init_from"] = str(Path(args.init_from).expanduser().resolve())
  for key in ("iterations", "minutes", "seed"):
    if getattr(args, key) is not None:
      values[key] = getattr(args, key)
  return values


def cmd_train(args) -> int:
  from tokenzero import config as config_lib
  from tokenzero import distributed, rundir
  from tokenzero import run as run_lib
  from tokenzero import loop as train_lib
  from tokenzero.tasks import check_task_reward
  config_path, overrides = _split_train_extras(args.extras)
  joined = distributed.initialize()  # before anything touches a device.
  if joined is not None and args.out is None:
    raise UsageError(f"a run on {distributed.process_count()} processes needs --out DIR, one "
                     "directory that every process sees (each would make its own otherwise)")
  saved = None
  if args.resume:
    if args.out is None:
      raise UsageError("--resume needs --out RUN_DIR (the run to continue)")
    if not (Path(args.out) / rundir.CONFIG_FILE).exists():
      raise ConfigError(f"cannot resume: {Path(args.out) / rundir.CONFIG_FILE} does not exist")
    saved = rundir.read_config(args.out)  # read once: the base of the config and the check.
  config = config_lib.resolve(config_path, overrides, base=saved, values=_train_flags(args))
  setup = run_lib.build(config)  # every config check before anything compiles.
  check = check_task_reward(setup.task, max_new_tokens=setup.max_new_tokens)
  if check is not None:  # a user reward: its contract check first.
    print(check.verdict, flush=True)
    if not check.ok:
      return 2
  out = Path(args.out) if args.out is not None else rundir.new_run_dir(config.task.name)
  print(f"run directory: {out}", flush=True)
  try:
    # Flushed: a log file must show where a run that is later killed resumed from.
    rows = train_lib.train(setup, out, resume=args.resume,
                           allow_config_change=args.allow_config_change,
                           progress=not args.no_progress, saved_config=saved,
                           log=lambda line: print(line, flush=True))
  except (train_lib.TrainingError, distributed.StoppedElsewhere) as err:
    print(f"tokenzero: training stopped: {err}", file=sys.stderr)
    return 1
  except train_lib.Interrupted as err:
    # Checkpointed and resumable, but not finished: 128 + signal number, as a shell reports a
    # process the signal killed, so that `tokenzero train ... && next-step` does not go on.
    print(f"tokenzero: {err}", file=sys.stderr)
    return 128 + err.signum
  except RewardError as err:
    print(f"tokenzero: training stopped: {err}\nThe last good checkpoint is kept: fix the reward, "
          f"then resume with: tokenzero train --out {out} --resume", file=sys.stderr)
    return 1
  last = rows[-1] if rows else {}
  summary = {k: last.get(k) for k in ("iteration", "elapsed_s", "eval_greedy_reward",
                                      "eval_greedy_success")}
  print(f"done: {json.dumps(summary)}")
  print(f"run directory: {out} (metrics.jsonl, learning_curve.png, checkpoints/)")
  return 0


def cmd_tasks(args) -> int:
  del args
  from tokenzero.tasks import describe_tasks
  print(describe_tasks())
  return 0


def cmd_check_reward(args) -> int:
  from tokenzero.rewards import check_reward
  from tokenzero.tasks import read_prompts
  texts = list(args.prompt or [])
  if args.prompts:
    texts += read_prompts(args.prompts)
  if not texts:
    raise UsageError("give prompts to check the reward on: --prompts FILE or --prompt TEXT")
  result = check_reward(args.reward, texts, tokenizer=args.tokenizer,
                        alphabet=args.alphabet or "", max_new_tokens=args.max_new_tokens,
                        num_completions=args.num_completions)
  print(result.verdict)
  return 0 if result.ok else 1


def cmd_eval(args) -> int:
  from tokenzero import distributed, harness, plots, report
  from tokenzero.methods import parse_budgets, parse_methods
  try:
    methods, budgets = parse_methods(args.methods), parse_budgets(args.budgets)
  except ValueError as err:
    raise UsageError(str(err)) from None
  distributed.initialize()  # before anything touches a device.
  run_dir = Path(args.run_dir)
  rows, meta = harness.evaluate_run(run_dir, methods=methods, budgets=budgets,
                                    num_prompts=args.num_prompts, iteration=args.iteration,
                                    batch_size=args.batch_size, seed=args.seed,
                                    search_noise=args.search_noise,
                                    progress=not args.no_progress)
  if not distributed.is_writer():  # every process evaluated; process 0 reports.
    return 0
  json_path = Path(args.json or run_dir / "eval.json")
  plot_path = Path(args.plot or run_dir / "eval.png")
  report.save_json(json_path, rows, meta)
  plots.reward_vs_compute(rows, plot_path, title=f"{meta['task']}: reward vs compute")
  print(report.markdown_table(rows), end="")
  print(f"wrote {json_path} and {plot_path}")
  return 0


def _decode_prompt_ids(args, policy, inference) -> list[list[int]]:
  """The prompts of `decode` as token ids: --token-ids, --prompt or --prompts, --chat wrapped."""
  if args.token_ids is not None:
    if args.chat:
      raise UsageError("--chat applies the chat template to --prompt TEXT or --prompts FILE")
    return [[int(t) for t in args.token_ids.split(",") if t.strip()]]
  if args.prompts is not None:
    from tokenzero.tasks import read_prompts
    texts = read_prompts(args.prompts)
  else:
    texts = [args.prompt]
  if not args.chat:
    return [inference.encode_prompt(policy, text) for text in texts]
  if not hasattr(policy.tokenizer, "chat_prompt"):
    raise UsageError(f"--chat needs a model with a chat template ({args.model}'s tokenizer is "
                     f"{policy.tokenizer.describe()})")
  # The template writes every special token itself, as transformers' apply_chat_template.
  return [policy.tokenizer.encode_continuation(policy.tokenizer.chat_prompt(text))
          for text in texts]


def _search_line(method: str, stats) -> str:
  """A tree method's measured throughput and tree memory, for stderr."""
  simulations = stats.num_simulations * stats.batch * stats.max_new_tokens
  return (f"{method}: {stats.batch} prompts x {stats.max_new_tokens} tokens, "
          f"{stats.num_simulations} simulations per token (at most {simulations}): "
          f"{stats.forward_tokens} forward tokens in {stats.decode_s:.2f} s "
          f"(compile {stats.compile_s:.1f} s) = {stats.forward_tokens_per_s:.1f} simulations/s "
          f"(forwards run); tree arena {stats.tree_nodes} nodes x {stats.batch} rows = "
          f"{stats.tree_bytes / 2**20:.2f} MiB "
          f"({stats.tree_bytes / max(1, stats.tree_nodes * stats.batch) / 1024:.1f} KiB/node)")


def cmd_decode(args) -> int:
  from tokenzero import decoders, inference, rewards
  from tokenzero.methods import FIXED_COST_METHODS, parse_methods
  if sum(x is not None for x in (args.prompt, args.token_ids, args.prompts)) != 1:
    raise UsageError("give exactly one of --prompt TEXT, --token-ids 1,2,3 and --prompts FILE")
  [method] = parse_methods(args.method)
  policy = inference.load_policy(args.model, dtype=args.dtype)
  prompts = _decode_prompt_ids(args, policy, inference)
  reward_fn = None
  if args.reward:
    reward_fn = rewards.token_reward(rewards.load_reward(args.reward), policy.tokenizer)
  budget = args.budget or (1 if method in FIXED_COST_METHODS else 4)
  options = decoders.MethodOptions(search=policy.search, search_noise=args.search_noise)
  outs, stats = inference.complete_batch(policy, prompts, method=method, budget=budget,
                                         max_new_tokens=args.max_new_tokens or 0,
                                         seed=args.seed, reward_fn=reward_fn, options=options)
  if stats.tree_nodes:
    print(_search_line(method, stats), file=sys.stderr, flush=True)
  for out in outs:
    if args.json:
      print(json.dumps({"method": method, "budget": budget, **dataclasses.asdict(out),
                        "stats": dataclasses.asdict(stats)}))
    else:
      print(out.text if args.prompts is None else json.dumps(out.text))
  return 0


def cmd_sft(args) -> int:
  from tokenzero import rundir, sft
  out = Path(args.out) if args.out is not None else rundir.new_run_dir("sft")
  result = sft.sft(args.model, args.data, out=out, steps=args.steps, learning_rate=args.lr,
                   batch_size=args.batch_size, seed=args.seed, progress=not args.no_progress)
  print(f"{result.num_demos} demos, {result.steps} steps: NLL per completion token "
        f"{result.nll_before:.4f} -> {result.nll_after:.4f}")
  then = (f"tokenzero train --init-from {out} ..." if result.source == "hf"
          else f"tokenzero train --out {out} --resume")
  print(f"wrote {out} (tokenzero decode {out} --prompt TEXT; {then})")
  return 0
