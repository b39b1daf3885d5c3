"""The `tokenzero` command's arguments: one `add_<command>` per subcommand.

Each registers its options and its handler from `tokenzero.cli.commands`. Only light modules are
imported here, so that `tokenzero --help` never loads JAX.
"""

from __future__ import annotations

import argparse

from tokenzero.cli import commands
from tokenzero.methods import METHODS, SWEEP_METHODS


_SEARCH_NOISE_HELP = ("mcts*: keep self-play's root noise (Gumbel, or PUCT's Dirichlet); off, "
                      "the search answers with its best guess")


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
  p.add_argument("--init-from", metavar="MODEL_DIR", help="start from an HF model directory "
                 "or a Llama GGUF file: "
                 "its weights, shape and tokenizer (with --prompts and --reward)")
  p.set_defaults(func=commands.cmd_train, accepts_extras=True)


def add_tasks(sub) -> None:
  p = sub.add_parser("tasks", help="list the built-in tasks and their parameters")
  p.set_defaults(func=commands.cmd_tasks)


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
  p.set_defaults(func=commands.cmd_check_reward)


def add_eval(sub) -> None:
  p = sub.add_parser("eval", help="matched-compute sweep of decoding methods over budgets",
                     description="Runs each method at each budget b (best-of-b, beam width b, "
                     "search with b simulations per token) on a run's held-out prompts and "
                     "measures what each spends: forward tokens, reward (verifier) calls and "
                     "wall-clock per answer; writes JSON and a plot of reward vs forward tokens "
                     f"and vs wall-clock. Methods: {', '.join(METHODS)}.")
  p.add_argument("run_dir", metavar="RUN_DIR")
  p.add_argument("--methods", default=",".join(SWEEP_METHODS))
  p.add_argument("--budgets", default="1,4,16,64")
  p.add_argument("--num-prompts", type=int, help="default: the run's eval.num_prompts")
  p.add_argument("--iteration", type=int, help="checkpoint to load (default: the newest)")
  p.add_argument("--batch-size", type=int, default=64, help="prompts decoded together")
  p.add_argument("--seed", type=int, default=0, help="sampling seed (shared by all methods)")
  p.add_argument("--search-noise", action="store_true", help=_SEARCH_NOISE_HELP)
  p.add_argument("--json", metavar="OUT.json", help="default: RUN_DIR/eval.json")
  p.add_argument("--plot", metavar="OUT.png", help="default: RUN_DIR/eval.png")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.set_defaults(func=commands.cmd_eval)


def add_decode(sub) -> None:
  p = sub.add_parser("decode", help="complete prompts with a decoding method",
                     description="Decodes one prompt (or a file of them, together) with an HF "
                     "model directory (config.json + "
                     "safetensors + tokenizer.json), a Llama GGUF file, or a training run's "
                     "newest checkpoint. "
                     f"Methods: {', '.join(METHODS)}. best_of_n, mcts and mcts_puct call a "
                     "reward: a run's own, or --reward (an HF model has none). Tree methods "
                     "print (to stderr) the measured simulations/s and the tree's memory.")
  p.add_argument("model", metavar="MODEL_DIR|FILE.gguf|RUN_DIR")
  p.add_argument("--method", default="greedy")
  p.add_argument("--budget", type=int, help="forward tokens per generated token (beam width, "
                 "samples, simulations); default 1 for greedy/samplers, else 4")
  p.add_argument("--prompt", metavar="TEXT", help="prompt text, encoded by the model's tokenizer")
  p.add_argument("--token-ids", metavar="1,2,3", help="prompt as token ids")
  p.add_argument("--prompts", metavar="FILE", help="prompts, one per line (.txt) or .jsonl with "
                 "a 'prompt' field, decoded together as one batch; one answer per line")
  p.add_argument("--chat", action="store_true", help="wrap --prompt (or each of --prompts) as a "
                 "user message in the "
                 "model's chat template (tokenizer_config.json's or the GGUF's)")
  p.add_argument("--max-new-tokens", type=int, help="answer budget (default: the run's, or "
                 "32 for an HF model)")
  p.add_argument("--reward", metavar="FILE.py:FUNCTION", help="reward for best_of_n, mcts "
                 "and mcts_puct (default: the run's; an HF model needs one)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--search-noise", action="store_true", help=_SEARCH_NOISE_HELP)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                 help="compute dtype")
  p.add_argument("--json", action="store_true", help="print JSON: token_ids, text, logprobs, ...")
  p.set_defaults(func=commands.cmd_decode, value_errors_are_usage=True)


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
  p.set_defaults(func=commands.cmd_sft, value_errors_are_usage=True)


SUBCOMMANDS = [add_train, add_tasks, add_check_reward, add_eval, add_decode, add_sft]




def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="tokenzero", description="AlphaZero-style search over token sequences, on JAX.")
  parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
  sub = parser.add_subparsers(dest="command", required=True)
  for add in SUBCOMMANDS:
    add(sub)
  for p in sub.choices.values():
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks of errors")
  return parser
