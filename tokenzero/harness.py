"""Matched-compute evaluation: every decoding method at every budget, on the same prompts.

A budget b is b forward token-evaluations per generated token, so best-of-b, beam-b and tree
search with b-1 simulations meet on equal terms (see `decoding`). `sweep` runs a list of
methods over a list of budgets and returns one `Row` per (method, budget); `save_json`, `plot`
and `markdown_table` turn rows into the JSON, the reward-vs-budget picture and a table.
Methods whose cost is fixed at one forward per token (greedy and the samplers) run once, at
budget 1, and are drawn as flat lines.

The harness takes (params, model config, prompts, reward) and nothing else, so a run directory,
a checkpoint or a pretrained model all feed it the same way.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tokenzero import decoding
from tokenzero import prompts as prompts_lib
from tokenzero import rewards as rewards_lib
from tokenzero.config import ModelConfig, SearchConfig
from tokenzero.progress import progress_bar
from tokenzero.tokenizer import answer_mask
from tokenzero.rewards import TokenReward
from tokenzero.tasks import Task, task_token_reward

SCHEMA = "tokenzero.eval/1"

# Fixed cost: one forward per generated token, whatever the budget.
FIXED_COST_METHODS = ("greedy", "sample", "top_k", "top_p")
BUDGETED_METHODS = ("best_of_n", "best_of_n_value", "majority", "beam", "beam_value", "mcts",
                    "mcts_puct")
METHODS = FIXED_COST_METHODS + BUDGETED_METHODS


@dataclasses.dataclass(frozen=True)
class MethodOptions:
  """Knobs shared by the methods of a sweep (budgets set the rest)."""
  temperature: float = 1.0  # sample, best_of_n*, majority
  top_k: int = 5  # top_k
  top_p: float = 0.9  # top_p
  length_penalty: float = 1.0  # beam
  search: SearchConfig = SearchConfig()  # mcts, mcts_puct: all but algorithm/num_simulations


def make_decoder(method: str, budget: int, options: MethodOptions = MethodOptions()):
  """The decoder that spends `budget` forward tokens per generated token with `method`."""
  if budget < 1:
    raise ValueError(f"budget must be >= 1, got {budget}")
  sampler = decoding.Sample(options.temperature)
  if method == "greedy":
    return decoding.Greedy()
  if method == "sample":
    return sampler
  if method == "top_k":
    return decoding.Sample(options.temperature, top_k=options.top_k)
  if method == "top_p":
    return decoding.Sample(options.temperature, top_p=options.top_p)
  if method == "best_of_n":
    return decoding.BestOfN(budget, sampler, score="reward")
  if method == "best_of_n_value":
    return decoding.BestOfN(budget, sampler, score="value")
  if method == "majority":
    return decoding.MajorityVote(budget, sampler)
  if method == "beam":
    return decoding.Beam(budget, length_penalty=options.length_penalty)
  if method == "beam_value":
    # W beams x E expansions = budget: as square as the budget allows.
    width = math.isqrt(budget)
    return decoding.ValueBeam(width, budget // width)
  if method in ("mcts", "mcts_puct"):
    algorithm = "gumbel" if method == "mcts" else "puct"
    search = dataclasses.replace(options.search, algorithm=algorithm,
                                 num_simulations=budget - 1)
    return decoding.TreeSearch(search)
  raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")


def parse_methods(text: str) -> list[str]:
  """`"greedy,beam,mcts"` -> names, each checked."""
  names = [m.strip() for m in text.split(",") if m.strip()]
  unknown = [m for m in names if m not in METHODS]
  if unknown or not names:
    raise ValueError(f"unknown method(s) {unknown or text!r}; known: {', '.join(METHODS)}")
  return names


def parse_budgets(text: str) -> list[int]:
  """`"1,4,16"` -> sorted distinct budgets, each >= 1."""
  try:
    budgets = sorted({int(b) for b in text.split(",") if b.strip()})
  except ValueError:
    raise ValueError(f"budgets must be integers separated by commas, got {text!r}") from None
  if not budgets or budgets[0] < 1:
    raise ValueError(f"budgets must be integers >= 1, got {text!r}")
  return budgets


@dataclasses.dataclass(frozen=True)
class Row:
  """One (method, budget) of a sweep, over all its prompts."""
  method: str
  budget: int  # nominal forward tokens per generated token
  mean_reward: float
  stderr: float  # standard error of mean_reward over prompts
  success_rate: float  # fraction of prompts with reward >= the success threshold
  success_stderr: float
  forward_tokens_per_token: float  # measured: forward tokens spent / answer tokens returned
  forward_tokens_per_sequence: float  # measured: forward tokens spent per prompt
  wall_s: float  # decoding all prompts, compilation excluded
  compile_s: float
  num_prompts: int
  decoder: str  # the decoder and its settings


ROW_FIELDS = tuple(f.name for f in dataclasses.fields(Row))


def _stderr(x: np.ndarray) -> float:
  return float(np.std(x, ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0


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
  """Runs every method at every budget on `prompts` ([N, P] tokens and [N] lengths)."""
  tokens, lengths = np.asarray(prompts.tokens), np.asarray(prompts.lengths)
  if len(tokens) == 0:
    raise ValueError("no prompts to evaluate")
  jobs = _jobs(methods, budgets)
  chunks = _chunks(tokens, lengths, min(batch_size, len(tokens)))
  score = jax.jit(reward_fn)
  rows = []
  with progress_bar("eval", enabled=progress, to_stderr=True) as bar:
    task_id = bar.add_task("", total=len(jobs) * len(chunks), status="")
    for method, budget in jobs:
      decoder = make_decoder(method, budget, options)
      bar.update(task_id, description=f"{method} b={budget}")
      statics = dict(decoder=decoder, config=config, max_new_tokens=max_new_tokens,
                     eos_id=eos_id, reward_fn=reward_fn)
      start = time.perf_counter()
      first_tokens, first_lengths, _ = chunks[0]
      compiled = decoding.decode.lower(params, first_tokens, first_lengths, jax.random.key(0),
                                       allowed, **statics).compile()
      compile_s = time.perf_counter() - start
      rewards, spent, answer_tokens, wall_s = [], [], [], 0.0
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
        answer_tokens.append(np.asarray(out.completion_len)[:real])
        bar.advance(task_id)
      reward = np.concatenate(rewards).astype(np.float64)
      success = (reward >= success_threshold).astype(np.float64)
      spent_total = float(np.concatenate(spent).sum())
      rows.append(Row(
          method=method, budget=budget, mean_reward=float(reward.mean()),
          stderr=_stderr(reward), success_rate=float(success.mean()),
          success_stderr=_stderr(success),
          forward_tokens_per_token=spent_total / max(float(np.concatenate(answer_tokens).sum()),
                                                     1.0),
          forward_tokens_per_sequence=spent_total / len(reward), wall_s=wall_s,
          compile_s=compile_s, num_prompts=len(reward), decoder=repr(decoder)))
  return rows


def sweep_task(params, config: ModelConfig, task: Task, *, num_prompts: int, prompt_seed: int = 0,
               max_new_tokens: int = 0, reward_fn: TokenReward | None = None,
               allowed: jax.Array | None = None, **kwargs) -> list[Row]:
  """`sweep` on a task's held-out prompts (a run's evaluation set for `prompt_seed`), scored by
  the task's reward unless `reward_fn` is given. Other keywords go to `sweep`."""
  batch = prompts_lib.encode_batch(task.tokenizer, prompts_lib.eval_texts(task, prompt_seed, num_prompts),
                                   task.prompt_len)
  return sweep(params, config, batch, reward_fn=reward_fn or task_token_reward(task),
               max_new_tokens=max_new_tokens or task.max_new_tokens,
               eos_id=task.tokenizer.eos_id,
               allowed=(jnp.asarray(answer_mask(task.tokenizer, config.vocab_size)) if allowed is None
               else allowed),
               **kwargs)


def evaluate_run(run_dir: str | Path, *, methods: Sequence[str], budgets: Sequence[int],
                 num_prompts: int | None = None, iteration: int | None = None,
                 **kwargs) -> tuple[list[Row], dict[str, Any]]:
  """Sweeps a training run's newest (or given) checkpoint on the run's own evaluation prompts,
  task, reward, answer budget and search settings -> (rows, meta for `save_json`)."""
  from tokenzero import config as config_lib
  from tokenzero import train as train_lib

  setup, params = train_lib.load_run(run_dir, iteration)
  run = setup.config
  num_prompts = num_prompts or run.eval.num_prompts
  options = kwargs.pop("options", None) or MethodOptions(search=run.search)
  rows = sweep_task(params, run.model, setup.task, num_prompts=num_prompts,
                    prompt_seed=run.seed, max_new_tokens=setup.max_new_tokens,
                    reward_fn=setup.reward_fn, allowed=setup.allowed, methods=methods,
                    budgets=budgets, options=options,
                    success_threshold=run.task.success_threshold, **kwargs)
  meta = {"run_dir": str(run_dir), "iteration": iteration, "task": run.task.name,
          "task_params": dict(run.task.params), "max_new_tokens": setup.max_new_tokens,
          "num_prompts": num_prompts, "methods": list(methods), "budgets": list(budgets),
          "options": config_lib.to_dict(options), "model": config_lib.to_dict(run.model),
          "device": jax.devices()[0].device_kind}
  return rows, meta


def to_json(rows: Sequence[Row], meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
  return {"schema": SCHEMA, "meta": dict(meta or {}),
          "rows": [dataclasses.asdict(row) for row in rows]}


def save_json(path: str | Path, rows: Sequence[Row],
              meta: Mapping[str, Any] | None = None) -> None:
  """Writes `{"schema", "meta", "rows": [Row fields...]}`, atomically."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(to_json(rows, meta), indent=2, default=str) + "\n")
  tmp.replace(path)


def load_json(path: str | Path) -> tuple[list[Row], dict[str, Any]]:
  """Reads what `save_json` wrote -> (rows, meta); a wrong schema is an error."""
  data = json.loads(Path(path).read_text())
  if data.get("schema") != SCHEMA:
    raise ValueError(f"{path}: not a tokenzero eval file (schema {data.get('schema')!r})")
  return [Row(**{k: row[k] for k in ROW_FIELDS}) for row in data["rows"]], data.get("meta", {})


def plot(rows: Sequence[Row], path: str | Path, *, title: str = "",
         metric: str = "mean_reward") -> None:
  """Reward (or `metric`) vs budget, log x, one line per method with standard-error bars;
  fixed-cost methods are flat dashed lines across the budgets."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  error = {"mean_reward": "stderr", "success_rate": "success_stderr"}.get(metric)
  budgets = sorted({row.budget for row in rows})
  span = [min(budgets), max(max(budgets), 2)]
  fig, ax = plt.subplots(figsize=(7.6, 4.4))
  palette = plt.get_cmap("tab20").colors
  for method in dict.fromkeys(row.method for row in rows):
    # A method keeps its colour across plots: the reader compares pictures side by side.
    index = 2 * METHODS.index(method) if method in METHODS else None
    color = palette[index % 20 + index // 20] if index is not None else None
    mine = sorted((r for r in rows if r.method == method), key=lambda r: r.budget)
    y = [getattr(r, metric) for r in mine]
    err = [getattr(r, error) for r in mine] if error else None
    if method in FIXED_COST_METHODS:
      ax.plot(span, [y[0]] * 2, linestyle="--", color=color, label=method)
      ax.errorbar([mine[0].budget], y[:1], yerr=err[:1] if err else None, fmt="o",
                  color=color, capsize=3)
    else:
      ax.errorbar([r.budget for r in mine], y, yerr=err, marker="o", capsize=3, color=color,
                  label=method)
  ax.set_xscale("log", base=2)
  ax.set_xticks(budgets, [str(b) for b in budgets])
  ax.set_xlabel("budget (forward tokens per generated token)")
  ax.set_ylabel(metric.replace("_", " "))
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
  if title:
    ax.set_title(title)
  fig.tight_layout()
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def markdown_table(rows: Sequence[Row]) -> str:
  """Methods down, budgets across: `mean reward ± stderr` in each cell."""
  budgets = sorted({row.budget for row in rows})
  lines = ["| method | " + " | ".join(f"b={b}" for b in budgets) + " |",
           "|---|" + "---|" * len(budgets)]
  for method in dict.fromkeys(row.method for row in rows):
    cells = {r.budget: f"{r.mean_reward:.3f} ± {r.stderr:.3f}" for r in rows if r.method == method}
    lines.append(f"| {method} | " + " | ".join(cells.get(b, "") for b in budgets) + " |")
  return "\n".join(lines) + "\n"
