"""The run configuration: one frozen dataclass per section, nested in `RunConfig`.

The fields and their defaults are the documentation of every `KEY=VALUE` a run accepts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Decoder-only transformer with a policy head (logits) and a value head.

  `arch="gpt2"`: pre-LN LayerNorm, learned positions, GELU MLP, tied embeddings.
  `arch="llama"`: RMSNorm, RoPE, SwiGLU, grouped-query attention (Qwen2 adds q/k/v biases).
  """
  arch: str = "gpt2"
  vocab_size: int = 0  # 0: taken from the tokenizer.
  num_layers: int = 2
  num_heads: int = 4
  num_kv_heads: int = 0  # 0: same as num_heads (no grouping).
  head_dim: int = 0  # 0: d_model // num_heads.
  d_model: int = 64
  d_ff: int = 0  # 0: 4 * d_model.
  context: int = 0  # 0: prompt length + answer length of the task.
  norm_eps: float = 1e-5
  rope_theta: float = 10000.0
  tie_embeddings: bool = True
  attn_bias: bool = True  # biases on q/k/v projections (GPT-2, Qwen2).
  proj_bias: bool = True  # biases on the attention output and MLP (GPT-2 only).
  dtype: str = "float32"  # compute dtype: float32 or bfloat16; params stay float32.

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads

  @property
  def dim_per_head(self) -> int:
    return self.head_dim or self.d_model // self.num_heads

  @property
  def ff_dim(self) -> int:
    return self.d_ff or 4 * self.d_model


@dataclasses.dataclass(frozen=True)
class TaskConfig:
  name: str = "sort"
  params: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # task-specific knobs.
  max_new_tokens: int = 0  # 0: the task's own answer length.
  success_threshold: float = 1.0  # a completion with reward >= this counts as a success.
  # Train on the task at a smaller size first (its size parameter: sort's length, addition's
  # digits, ...), one size up each time the greedy success on the current size's prompts
  # reaches curriculum_threshold (0: one size up at every evaluation); evaluation stays on the
  # full task (tokenzero/curriculum.py).
  curriculum: bool = False
  curriculum_threshold: float = 0.8
  curriculum_start: int = 0  # the first size; 0: the task's smallest.


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  algorithm: str = "gumbel"  # "gumbel" (mctx.gumbel_muzero_policy) or "puct" (muzero_policy).
  num_simulations: int = 32
  # Actions of a node = its top-K candidate tokens. 0: 16, or the whole vocabulary when
  # smaller; a K larger than the vocabulary is an error.
  top_k: int = 0
  max_depth: int = 0  # 0: the task's answer length.
  incremental: bool = True  # False: full-recompute reference (slow, for tests and benchmarks).
  # Keep the committed child's subtree, with its statistics, as the next step's tree (one tree
  # per answer). False: a fresh tree at every step (the ablation).
  reuse_tree: bool = True
  # Nodes of the search's arena; 0: room for a step's simulations (S, or 2 S with adaptive
  # allocation) + 1, plus S more to keep with reuse_tree. A full arena ends a row's search; reuse
  # keeps at most max_nodes minus a step's simulations (the oldest nodes).
  max_nodes: int = 0
  # The answer a decoder returns: "visits" (the tokens the search committed, step by step) or
  # "best_terminal" (the best complete answer the tree verified with the reward, as best-of-n
  # returns its best sample; the committed answer when the tree verified none). Value-only
  # search has no reward and plays by visits. Measured in experiments/search_defaults.py.
  select: str = "best_terminal"
  # "uniform": num_simulations at every step. "adaptive": a budget of num_simulations per token
  # over the answer; a step stops once the root's choice is settled (one action holds
  # settled_weight of the search policy after every considered action was tried) and banks the
  # rest for later steps, up to 2 * num_simulations in one step (decoders; self-play is uniform).
  allocation: str = "uniform"
  settled_weight: float = 0.9
  # Times a row selects again after a simulation ends at a known node (terminal, or at the depth
  # limit), so that each batched forward expands a new node. 0: mctx's statistics exactly.
  terminal_reselect: int = 0
  max_num_considered_actions: int = 16
  gumbel_scale: float = 1.0
  # Gumbel's completed-Q transform: sigma(q) = (maxvisit_init + max visits) * value_scale * q.
  # Rewards here already live in [0, 1], so per-node min-max rescaling is off by default: it
  # blows noise between nearly equal children up to the full [0, 1] range. On sort-5 this
  # setting (with 8 optimizer steps per iteration) learned far faster than mctx's defaults;
  # the runs are in experiments/README.md.
  value_scale: float = 1.0
  maxvisit_init: float = 50.0
  rescale_values: bool = False
  pb_c_init: float = 1.25
  pb_c_base: float = 19652.0
  dirichlet_alpha: float = 0.3
  dirichlet_fraction: float = 0.25


@dataclasses.dataclass(frozen=True)
class SelfPlayConfig:
  batch_size: int = 256
  action_selection: str = "sample"  # "sample" from action_weights, or "search" (its chosen action).
  temperature: float = 1.0  # sampling temperature at iteration 0 ...
  final_temperature: float = 0.25  # ... decayed linearly to this at the last iteration.
  random_action_prob: float = 0.1  # exploration: a uniform random candidate instead.
  # The targets self-play records for the learner (tokenzero/targets.py). Policy: "improved",
  # the search's policy (Gumbel's improved policy, PUCT's visits), or "visits", the root's visit
  # counts under either algorithm. Value: "return", the episode's reward at every step, or
  # "lambda", the TD(lambda) return over the search's backed-up root values (td_lambda=1: the
  # return). cut_explored: a step whose action was a random one (random_action_prob) takes the
  # search's value of its state as its target, so no earlier step learns from the random move.
  policy_target: str = "improved"
  value_target: str = "return"
  td_lambda: float = 0.8
  cut_explored: bool = False


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  learning_rate: float = 3e-3
  final_learning_rate_fraction: float = 0.1
  warmup_steps: int = 20
  decay_steps: int = 0  # cosine horizon in optimizer steps; 0: the whole run.
  weight_decay: float = 1e-4
  grad_clip: float = 1.0
  steps_per_iteration: int = 8
  value_loss_weight: float = 1.0
  max_nonfinite_updates: int = 10  # consecutive skipped (NaN/inf) updates before the run stops.
  # Fresh-data anchor: + anchor_weight * next-token loss on {prompt, completion} JSONL demos
  # (`anchor_data`), `anchor_batch_size` of them per iteration (0: selfplay.batch_size).
  anchor_weight: float = 0.0
  # + kl_weight * KL(policy || initial network) per decision step: keeps the policy near its
  # starting point (the random init, or the `init_from` checkpoint).
  kl_weight: float = 0.0
  # + found_weight * next-token loss on the best complete answer each self-play row's searches
  # verified (or played), on rows where it scored at least found_min_reward (expert iteration
  # beside the search-policy target; tokenzero/learner.py). 0: off, no second forward. On by
  # default, with replay: measured in experiments/README.md (sort seeds, addition).
  found_weight: float = 1.0
  found_min_reward: float = 1.0
  anchor_data: str = ""
  anchor_batch_size: int = 0


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  num_prompts: int = 512
  every: int = 1
  # Which prompts are held out (`tokenzero.prompts`): "hash", an instance is held out when its
  # key hashes into the evaluation bucket, the same for every count; "legacy", the first
  # num_prompts draws of the evaluation stream, what a run saved before this key evaluated on.
  split: str = "hash"


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """The devices a run computes on (tokenzero/mesh.py): a grid of mesh.data x mesh.model of
  them, the first of `jax.devices()`. Batch sizes stay global: selfplay.batch_size (and the
  anchor batch) must divide over mesh.data; evaluation batches are padded."""
  data: int = 0  # devices the batch is split over; 0: all of them (over mesh.model).
  model: int = 1  # devices each parameter is split over (FSDP style); 1: replicated.


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
  # A buffer of past self-play trajectories on the device (tokenzero/replay.py); 0: off, the
  # learner trains on each iteration's fresh trajectories only. On by default: 8 iterations of
  # the default batch (measured with optim.found_weight, experiments/README.md).
  capacity: int = 2048  # rows kept (>= selfplay.batch_size when on)
  sample_old: int = 0  # stored rows added to each iteration's learner batch; 0: batch_size
  reanalyze: bool = False  # refresh those rows' targets with the current network's search


@dataclasses.dataclass(frozen=True)
class RunConfig:
  seed: int = 0
  iterations: int = 300
  minutes: float = 0.0  # wall-clock budget; 0 means none.
  checkpoint_every: int = 10
  keep_checkpoints: int = 3
  # An HF model directory to start from: its weights, shape (the model section) and tokenizer
  # (the prompts task's). Model keys other than model.dtype must then be left unset.
  init_from: str = ""
  task: TaskConfig = TaskConfig()
  model: ModelConfig = ModelConfig()
  search: SearchConfig = SearchConfig()
  selfplay: SelfPlayConfig = SelfPlayConfig()
  optim: OptimConfig = OptimConfig()
  eval: EvalConfig = EvalConfig()
  mesh: MeshConfig = MeshConfig()
  replay: ReplayConfig = ReplayConfig()
