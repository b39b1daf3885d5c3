"""`tokenzero` command line: a thin layer over library functions.

Each subcommand is an `add_<name>` function that registers its parser and handler in
`SUBCOMMANDS`. User mistakes (bad keys, values, files) are one line on stderr and exit code 2;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from tokenzero.config import ConfigError
from tokenzero.demos import DemoError
from tokenzero.rewards import RewardError
from tokenzero.tasks import TaskError
from tokenzero.tokenizer import TokenizerError


class UsageError(ValueError):
  """A bad command line."""


# Errors that are the user's input, not a bug: printed as one line, exit code 2.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, TaskError, TokenizerError, UsageError,
                                                RewardError, DemoError)


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


def _train_config(args, overrides: list[str], config_path: str | None):
  from tokenzero import config as config_lib
  base = None
  if args.resume:
    if args.out is None:
      raise UsageError("--resume needs --out RUN_DIR (the run to continue)")
    saved = Path(args.out) / "config.json"
    if not saved.exists():
      raise ConfigError(f"cannot resume: {saved} does not exist")
    base = json.loads(saved.read_text())
  flags = []
  if args.task is not None:
    if args.reward is not None:
      raise UsageError("--task and --reward exclude each other: --reward trains the 'prompts' "
                       "task on your prompts file")
    flags.append(f"task.name={args.task}")
  from tokenzero.tasks.prompt_file import prompt_task_overrides
  flags += prompt_task_overrides(reward=args.reward, prompts=args.prompts,
                                 eval_prompts=args.eval_prompts, alphabet=args.alphabet,
                                 tokenizer=args.tokenizer)
  if args.init_from is not None:
    flags.append(f"init_from={Path(args.init_from).expanduser().resolve()}")
  if args.iterations is not None:
    flags.append(f"iterations={args.iterations}")
  if args.minutes is not None:
    flags.append(f"minutes={args.minutes}")
  if args.seed is not None:
    flags.append(f"seed={args.seed}")
  return config_lib.resolve(config_path, flags + overrides, base=base)


def cmd_train(args) -> int:
  from tokenzero import train as train_lib
  config_path, overrides = _split_train_extras(args.extras)
  config = _train_config(args, overrides, config_path)
  out = args.out
  if out is None:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path("runs") / f"{config.task.name}-{stamp}"
  setup = train_lib.build(config)  # every config check before anything compiles.
  from tokenzero import rewards
  # A user reward: its contract check first.
  check = rewards.check_task_reward(setup.task, max_new_tokens=setup.max_new_tokens)
  if check is not None:
    print(check.verdict, flush=True)
    if not check.ok:
      return 2
  print(f"run directory: {out}", flush=True)
  try:
    # Flushed: a log file must show where a run that is later killed resumed from.
    rows = train_lib.train(config, out, resume=args.resume,
                           allow_config_change=args.allow_config_change,
                           progress=not args.no_progress,
                           log=lambda line: print(line, flush=True))
  except train_lib.TrainingError as err:
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


def add_train(sub) -> None:
  p = sub.add_parser("train", help="run the closed loop (self-play, learner, evaluation)",
                     description="tokenzero train [CONFIG.toml] [options] [KEY=VALUE ...]; "
                     "KEY is a dotted config key such as search.num_simulations")
  p.add_argument("--task", help="built-in task name (default: sort)")
  p.add_argument("--out", help="run directory (default: runs/<task>-<time>)")
  p.add_argument("--iterations", type=int, help="total iterations of the run")
  p.add_argument("--minutes", type=float, help="wall-clock budget; stops cleanly")
  p.add_argument("--seed", type=int)
  p.add_argument("--resume", action="store_true", help="continue the run in --out")
  p.add_argument("--allow-config-change", action="store_true",
                 help="with --resume: accept config keys that differ from the saved run")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.add_argument("--reward", metavar="FILE.py:FUNCTION",
                 help="your reward function; trains the 'prompts' task (needs --prompts)")
  p.add_argument("--prompts", metavar="FILE", help="prompts, one per line (.txt) or .jsonl with "
                 "a 'prompt' field")
  p.add_argument("--eval-prompts", metavar="FILE",
                 help="held-out prompts (default: 10%% of --prompts)")
  p.add_argument("--alphabet", help="characters answers may use besides the prompts' own")
  p.add_argument("--tokenizer", metavar="SPEC", help="char:<alphabet> or byte (default: char "
                 "over the prompts' characters plus --alphabet)")
  p.add_argument("--init-from", metavar="MODEL_DIR", help="start from an HF model directory: "
                 "its weights, shape and tokenizer (with --prompts and --reward)")
  p.set_defaults(func=cmd_train, accepts_extras=True)


def cmd_tasks(args) -> int:
  del args
  from tokenzero.tasks import describe_tasks
  print(describe_tasks())
  return 0


def add_tasks(sub) -> None:
  p = sub.add_parser("tasks", help="list the built-in tasks and their parameters")
  p.set_defaults(func=cmd_tasks)


def cmd_check_reward(args) -> int:
  from tokenzero import rewards
  from tokenzero.tasks import read_prompts
  texts = list(args.prompt or [])
  if args.prompts:
    texts += read_prompts(args.prompts)
  if not texts:
    raise UsageError("give prompts to check the reward on: --prompts FILE or --prompt TEXT")
  result = rewards.check_reward(args.reward, texts, tokenizer=args.tokenizer,
                                alphabet=args.alphabet or "",
                                max_new_tokens=args.max_new_tokens,
                                num_completions=args.num_completions)
  print(result.verdict)
  return 0 if result.ok else 1


def add_check_reward(sub) -> None:
  p = sub.add_parser("check-reward", help="contract check of your reward function",
                     description="Calls FILE.py:FUNCTION on sample completions; checks the "
                     "types, finiteness and batch consistency of its values and times it.")
  p.add_argument("reward", metavar="FILE.py:FUNCTION")
  p.add_argument("--prompts", metavar="FILE", help="prompts file (.txt or .jsonl)")
  p.add_argument("--prompt", action="append", metavar="TEXT", help="a prompt (repeatable)")
  p.add_argument("--alphabet", help="characters completions may use besides the prompts' own")
  p.add_argument("--tokenizer", metavar="SPEC", help="char:<alphabet> or byte")
  p.add_argument("--max-new-tokens", type=int, default=16)
  p.add_argument("--num-completions", type=int, default=32)
  p.set_defaults(func=cmd_check_reward)


def cmd_eval(args) -> int:
  from tokenzero import decoders, harness, plots, report
  try:
    methods, budgets = decoders.parse_methods(args.methods), decoders.parse_budgets(args.budgets)
  except ValueError as err:
    raise UsageError(str(err)) from None
  run_dir = Path(args.run_dir)
  rows, meta = harness.evaluate_run(run_dir, methods=methods, budgets=budgets,
                                    num_prompts=args.num_prompts, iteration=args.iteration,
                                    batch_size=args.batch_size, seed=args.seed,
                                    progress=not args.no_progress)
  json_path = Path(args.json or run_dir / "eval.json")
  plot_path = Path(args.plot or run_dir / "eval.png")
  report.save_json(json_path, rows, meta)
  plots.reward_vs_budget(rows, plot_path, title=f"{meta['task']}: reward vs budget")
  print(report.markdown_table(rows), end="")
  print(f"wrote {json_path} and {plot_path}")
  return 0


def add_eval(sub) -> None:
  from tokenzero.decoders import METHODS
  p = sub.add_parser("eval", help="matched-compute sweep of decoding methods over budgets",
                     description="Runs each method at each budget (forward tokens per generated "
                     "token) on a run's held-out prompts; writes JSON and a reward-vs-budget "
                     f"plot. Methods: {', '.join(METHODS)}.")
  p.add_argument("run_dir", metavar="RUN_DIR")
  p.add_argument("--methods", default="greedy,sample,top_p,best_of_n,beam,majority,mcts,mcts_puct")
  p.add_argument("--budgets", default="1,4,16,64")
  p.add_argument("--num-prompts", type=int, help="default: the run's eval.num_prompts")
  p.add_argument("--iteration", type=int, help="checkpoint to load (default: the newest)")
  p.add_argument("--batch-size", type=int, default=64, help="prompts decoded together")
  p.add_argument("--seed", type=int, default=0, help="sampling seed (shared by all methods)")
  p.add_argument("--json", metavar="OUT.json", help="default: RUN_DIR/eval.json")
  p.add_argument("--plot", metavar="OUT.png", help="default: RUN_DIR/eval.png")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.set_defaults(func=cmd_eval)


def cmd_decode(args) -> int:
  import dataclasses as dc
  from tokenzero import decoders, hf, hf_tokenizer, inference, rewards
  if (args.prompt is None) == (args.token_ids is None):
    raise UsageError("give exactly one of --prompt TEXT and --token-ids 1,2,3")
  try:
    [method] = decoders.parse_methods(args.method)
    policy = inference.load_policy(args.model, dtype=args.dtype)
    if args.token_ids is not None:
      prompt_ids = [int(t) for t in args.token_ids.split(",") if t.strip()]
    else:
      prompt_ids = inference.encode_prompt(policy, args.prompt)
    reward_fn = None
    if args.reward:
      reward_fn = rewards.token_reward(rewards.load_reward(args.reward), policy.tokenizer)
    budget = args.budget or (1 if method in decoders.FIXED_COST_METHODS else 4)
    out = inference.complete(policy, prompt_ids, method=method, budget=budget,
                             max_new_tokens=args.max_new_tokens or 0, seed=args.seed,
                             reward_fn=reward_fn)
  except (hf.HFError, hf_tokenizer.HFTokenizerError) as err:
    raise UsageError(str(err)) from None
  except ValueError as err:
    if isinstance(err, USER_ERRORS):
      raise
    raise UsageError(str(err)) from None
  if args.json:
    print(json.dumps({"method": method, "budget": budget, **dc.asdict(out)}))
  else:
    print(out.text)
  return 0


def add_decode(sub) -> None:
  from tokenzero.decoders import METHODS
  p = sub.add_parser("decode", help="complete one prompt with a decoding method",
                     description="Decodes one prompt with an HF model directory (config.json + "
                     "safetensors + tokenizer.json) or a training run's newest checkpoint. "
                     f"Methods: {', '.join(METHODS)}. Without --reward, an HF model's search "
                     "and reward-ranked methods see a zero reward (prior and value head only).")
  p.add_argument("model", metavar="MODEL_DIR|RUN_DIR")
  p.add_argument("--method", default="greedy")
  p.add_argument("--budget", type=int, help="forward tokens per generated token (beam width, "
                 "samples, simulations + 1); default 1 for greedy/samplers, else 4")
  p.add_argument("--prompt", metavar="TEXT", help="prompt text, encoded by the model's tokenizer")
  p.add_argument("--token-ids", metavar="1,2,3", help="prompt as token ids")
  p.add_argument("--max-new-tokens", type=int, help="answer budget (default: the run's, or "
                 "32 for an HF model)")
  p.add_argument("--reward", metavar="FILE.py:FUNCTION", help="reward for search and "
                 "reward-ranked methods (default: the run's; zero for an HF model)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                 help="compute dtype")
  p.add_argument("--json", action="store_true", help="print JSON: token_ids, text, logprobs, ...")
  p.set_defaults(func=cmd_decode)


def cmd_sft(args) -> int:
  from tokenzero import hf, hf_tokenizer, sft
  out = args.out
  if out is None:
    out = Path("runs") / f"sft-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
  try:
    result = sft.sft(args.model, args.data, out=out, steps=args.steps, learning_rate=args.lr,
                     batch_size=args.batch_size, seed=args.seed,
                     progress=not args.no_progress)
  except (hf.HFError, hf_tokenizer.HFTokenizerError) as err:
    raise UsageError(str(err)) from None
  except ValueError as err:
    if isinstance(err, USER_ERRORS):
      raise
    raise UsageError(str(err)) from None
  print(f"{result.num_demos} demos, {result.steps} steps: NLL per completion token "
        f"{result.nll_before:.4f} -> {result.nll_after:.4f}")
  then = (f"tokenzero train --init-from {out} ..." if result.source == "hf"
          else f"tokenzero train --out {out} --resume")
  print(f"wrote {out} (tokenzero decode {out} --prompt TEXT; {then})")
  return 0


def add_sft(sub) -> None:
  p = sub.add_parser("sft", help="supervised warm start on {prompt, completion} demonstrations",
                     description="Fits an HF model directory or a training run's newest "
                     "checkpoint to a JSONL of {\"prompt\", \"completion\"} lines by "
                     "next-token cross-entropy on the completion tokens (then EOS). Writes an HF "
                     "model directory (from an HF model) or a run directory (from a run).")
  p.add_argument("model", metavar="MODEL_DIR|RUN_DIR")
  p.add_argument("--data", required=True, metavar="DEMOS.jsonl")
  p.add_argument("--out", help="output directory (default: runs/sft-<time>)")
  p.add_argument("--steps", type=int, default=200, help="optimizer steps (default 200)")
  p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (AdamW, warmup "
                 "then cosine decay; default 1e-4)")
  p.add_argument("--batch-size", type=int, default=16, help="demos per step (default 16)")
  p.add_argument("--seed", type=int, default=0, help="minibatch order")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.set_defaults(func=cmd_sft)


SUBCOMMANDS = [add_train, add_tasks, add_check_reward, add_eval, add_decode, add_sft]


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="tokenzero", description=__doc__.splitlines()[0])
  parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
  sub = parser.add_subparsers(dest="command", required=True)
  for add in SUBCOMMANDS:
    add(sub)
  for p in sub.choices.values():
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks of errors")
  return parser


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args, extras = parser.parse_known_args(argv)
  if extras and not getattr(args, "accepts_extras", False):
    parser.error(f"unrecognized arguments: {' '.join(extras)}")
  args.extras = extras
  debug = getattr(args, "debug", False)
  from tokenzero import compilation_cache
  compilation_cache.enable()  # every process compiles the same programs: load them from disk.
  try:
    return int(args.func(args) or 0)
  except USER_ERRORS as err:
    if debug:
      raise
    print(f"tokenzero: error: {err}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:  # a second Ctrl-C, or one before training started.
    if debug:
      raise
    print("tokenzero: interrupted; a run keeps its newest checkpoint (resume it with "
          "tokenzero train --out RUN_DIR --resume)", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
